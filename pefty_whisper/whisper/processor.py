"""Whisper's files: tokenizer, feature extractor, processor, generation config, WhisperConfig.

What every saved model carries (the processor files, preprocessor_config.json, a generation
config with the language and task), loaded and built once for the runtime (inference, training,
merging) and for the exports and the reverse conversion alike. The builders also read a bare
CTranslate2 directory (tokenizer.json + vocabulary), which is how a model made elsewhere, or
the offline whisper-base, is loaded. The token table itself is tokens.py's.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pefty_whisper.errors import ModelError
from pefty_whisper.whisper.model_dir import (
    CT2_MODEL,
    GENERATION_CONFIG,
    MODEL_CONFIG,
    PREPROCESSOR_CONFIG,
    read_json,
)
from pefty_whisper.whisper.tokens import (
    EOT,
    MAX_INITIAL_TIMESTAMP_INDEX,
    MAX_TARGET_POSITIONS,
    NO_TIMESTAMPS,
    SOT,
    add_timestamp_tokens,
    language_code,
    timestamp_token,
    tokenizer_language_ids,
    whisper_suppress_tokens,
)

if TYPE_CHECKING:
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperProcessor,
        WhisperTokenizer,
    )

__all__ = [
    "WhisperDims",
    "build_feature_extractor",
    "build_generation_config",
    "build_processor",
    "build_tokenizer",
    "check_generation_config",
    "load_feature_extractor",
    "load_processor",
    "load_tokenizer",
    "read_tokenizer_json",
    "whisper_config",
    "with_mel_bins",
    "write_preprocessor_config",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WhisperDims:
    """The architecture read off the tensor shapes (and the stored head counts)."""

    n_mels: int
    d_model: int
    vocab_size: int
    encoder_layers: int
    decoder_layers: int
    encoder_attention_heads: int
    decoder_attention_heads: int
    encoder_ffn_dim: int
    decoder_ffn_dim: int
    max_source_positions: int
    max_target_positions: int


# --------------------------------------------------------------------------------------------
# Tokenizer, feature extractor, processor
# --------------------------------------------------------------------------------------------


def build_tokenizer(
    ct2_dir: Path,
    vocab_size: int | None = None,
    language: str | None = None,
    task: str | None = None,
) -> WhisperTokenizer:
    """A Whisper tokenizer whose ids match the model's vocabulary, timestamps included.

    CT2's tokenizer.json stops at <|notimestamps|>; the timestamp tokens exist only in
    vocabulary.txt/.json (or, without one, are implied by the embedding size, as CTranslate2's
    converter assumes). They are appended as added, non-special tokens, as in openai/whisper.
    """
    from tokenizers import AddedToken
    from transformers import WhisperTokenizer

    ct2_dir = Path(ct2_dir)
    spec = read_tokenizer_json(ct2_dir)
    model_spec = spec.get("model", {})
    if model_spec.get("type") != "BPE" or EOT not in model_spec.get("vocab", {}):
        raise ModelError(f"{ct2_dir}/tokenizer.json is not a Whisper (byte-level BPE) tokenizer")
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model_spec["merges"]]
    added = sorted(spec.get("added_tokens", []), key=lambda t: t["id"])
    specials = [t["content"] for t in added if t.get("special") and t["content"] != EOT]
    tokenizer = WhisperTokenizer(
        vocab=model_spec["vocab"],
        merges=merges,
        unk_token=EOT,  # openai/whisper uses <|endoftext|> for unk, bos, eos and pad
        bos_token=EOT,
        eos_token=EOT,
        pad_token=EOT,
        extra_special_tokens=specials,
    )
    # Non-special added tokens of the CT2 tokenizer.json (normally none) keep their place.
    known = tokenizer.get_vocab()  # built on every call: hoist it out of the loop
    extra = [t for t in added if not t.get("special") and t["content"] not in known]
    tokenizer.add_tokens([AddedToken(t["content"], special=False, normalized=False) for t in extra])

    vocabulary = _read_ct2_vocabulary(ct2_dir)
    if vocab_size is None:
        vocab_size = len(vocabulary) if vocabulary is not None else len(tokenizer)
    missing = (
        vocabulary[len(tokenizer) :]
        if vocabulary is not None
        else [timestamp_token(i) for i in range(vocab_size - len(tokenizer))]
    )
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in missing])
    _check_ids(ct2_dir, tokenizer, vocabulary, vocab_size)
    if language is not None:
        code = language_code(language)
        if f"<|{code}|>" not in tokenizer.get_vocab():
            raise ModelError(f"{ct2_dir}: this Whisper tokenizer has no <|{code}|> language token")
        language = code
    if language is not None or task is not None:
        tokenizer.set_prefix_tokens(language=language, task=task)
    return tokenizer


def read_tokenizer_json(ct2_dir: Path) -> dict[str, Any]:
    path = ct2_dir / "tokenizer.json"
    if not path.is_file():
        raise ModelError(
            f"{ct2_dir} has no tokenizer.json: convert the model with "
            "`--copy_files tokenizer.json preprocessor_config.json` (ct2-transformers-converter)"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def _read_ct2_vocabulary(ct2_dir: Path) -> list[str] | None:
    # Older converters write vocabulary.txt (one token a line), newer ones vocabulary.json.
    if (ct2_dir / "vocabulary.json").is_file():
        return json.loads((ct2_dir / "vocabulary.json").read_text(encoding="utf-8"))
    if (ct2_dir / "vocabulary.txt").is_file():
        lines = (ct2_dir / "vocabulary.txt").read_text(encoding="utf-8").split("\n")
        return lines[:-1] if lines and lines[-1] == "" else lines
    return None


def _check_ids(
    ct2_dir: Path, tokenizer: WhisperTokenizer, vocabulary: list[str] | None, vocab_size: int
) -> None:
    if len(tokenizer) != vocab_size:
        raise ModelError(
            f"{ct2_dir}: tokenizer has {len(tokenizer)} tokens but the model's vocabulary has "
            f"{vocab_size}: tokenizer.json does not belong to this model"
        )
    if vocabulary is None:
        return
    ids = tokenizer.convert_tokens_to_ids(vocabulary)
    wrong = [(i, tok) for i, (tok, got) in enumerate(zip(vocabulary, ids, strict=True)) if got != i]
    if wrong:
        index, token = wrong[0]
        raise ModelError(
            f"{ct2_dir}: tokenizer.json and the vocabulary file disagree ({len(wrong)} ids, "
            f"first: {token!r} is id {index} in the vocabulary)"
        )


def build_feature_extractor(ct2_dir: Path, n_mels: int | None = None) -> WhisperFeatureExtractor:
    """The model dir's preprocessor_config.json if present, else Whisper's defaults at n_mels."""
    from transformers import WhisperFeatureExtractor

    ct2_dir = Path(ct2_dir)
    path = ct2_dir / PREPROCESSOR_CONFIG
    if n_mels is None and (ct2_dir / CT2_MODEL).is_file():
        n_mels = _model_bin_shape(ct2_dir, "encoder/conv1/weight")[1]
    if path.is_file():
        extractor = WhisperFeatureExtractor.from_json_file(str(path))
        if n_mels is not None and extractor.feature_size != n_mels:
            raise ModelError(
                f"{path} has feature_size {extractor.feature_size} but the model takes "
                f"{n_mels} mel bins: the file belongs to another model"
            )
        return extractor
    if n_mels is None:
        raise ModelError(f"{ct2_dir}: no {PREPROCESSOR_CONFIG} and no {CT2_MODEL} to read n_mels")
    return WhisperFeatureExtractor(feature_size=n_mels)


def build_processor(
    ct2_dir: Path,
    n_mels: int | None = None,
    language: str | None = None,
    task: str | None = None,
) -> WhisperProcessor:
    """Tokenizer + feature extractor for a CTranslate2 Whisper dir, usable with transformers.

    n_mels defaults to preprocessor_config.json, else to the conv1 shape in model.bin; pass it
    for a directory without model.bin (e.g. the tokenizer files of the offline package).
    """
    from transformers import WhisperProcessor

    ct2_dir = Path(ct2_dir)
    vocab_size = None
    if (ct2_dir / CT2_MODEL).is_file():
        vocab_size = _model_bin_shape(ct2_dir, "decoder/embeddings/weight")[0]
    tokenizer = build_tokenizer(ct2_dir, vocab_size=vocab_size, language=language, task=task)
    extractor = build_feature_extractor(ct2_dir, n_mels=n_mels)
    return WhisperProcessor(feature_extractor=extractor, tokenizer=tokenizer)


def _model_bin_shape(ct2_dir: Path, name: str) -> tuple[int, ...]:
    # The index alone (no weights) says the mel bins (conv1) and the vocabulary (embeddings).
    from pefty_whisper.whisper.ct2_file import Ct2ModelFile

    return Ct2ModelFile(ct2_dir / CT2_MODEL).shape(name)


def write_preprocessor_config(out_dir: Path, feature_extractor: WhisperFeatureExtractor) -> Path:
    """Write preprocessor_config.json beside a saved processor.

    transformers 5 folds the feature extractor into processor_config.json; CTranslate2's converter
    and faster-whisper still read preprocessor_config.json, so every saved model gets both.
    """
    path = Path(out_dir) / PREPROCESSOR_CONFIG
    feature_extractor.to_json_file(str(path))
    return path


# --------------------------------------------------------------------------------------------
# Generation config
# --------------------------------------------------------------------------------------------


def build_generation_config(
    tokenizer: WhisperTokenizer,
    *,
    max_length: int = MAX_TARGET_POSITIONS,
    num_decoder_layers: int | None = None,
    num_decoder_heads: int | None = None,
    lang_ids: Sequence[int] | None = None,
    suppress_tokens: Sequence[int] | None = None,
    begin_suppress_tokens: Sequence[int] | None = None,
    alignment_heads: Iterable[Sequence[int]] | None = None,
    language: str | None = "korean",
    task: str | None = "transcribe",
) -> GenerationConfig:
    """Everything transformers' Whisper `generate` reads, built from the tokenizer's ids.

    The default language and task go into `language`/`task` (not `forced_decoder_ids`, which
    transformers deprecates), so `generate` transcribes Korean without being told.
    """
    from transformers import GenerationConfig

    vocab = tokenizer.get_vocab()
    eot = vocab[EOT]
    lang_ids = (
        list(lang_ids) if lang_ids is not None else tokenizer_language_ids(tokenizer).values()
    )
    lang_to_id = {tokenizer.convert_ids_to_tokens(i): i for i in lang_ids}
    if suppress_tokens is None:
        suppress_tokens = whisper_suppress_tokens(tokenizer)
    if begin_suppress_tokens is None:
        # A transcript never starts with a bare space or with end-of-text.
        begin_suppress_tokens = [tokenizer.encode(" ", add_special_tokens=False)[0], eot]
    if alignment_heads is None and num_decoder_layers and num_decoder_heads:
        # CTranslate2's default: every head of the second half of the decoder layers.
        alignment_heads = [
            [layer, head]
            for layer in range(num_decoder_layers // 2, num_decoder_layers)
            for head in range(num_decoder_heads)
        ]
    is_multilingual = bool(lang_to_id)
    config = GenerationConfig(
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        decoder_start_token_id=vocab[SOT],
        max_length=max_length,
        suppress_tokens=list(suppress_tokens),
        begin_suppress_tokens=list(begin_suppress_tokens),
        forced_decoder_ids=None,
        is_multilingual=is_multilingual,
        no_timestamps_token_id=vocab[NO_TIMESTAMPS],
        prev_sot_token_id=vocab.get("<|startofprev|>"),
        max_initial_timestamp_index=MAX_INITIAL_TIMESTAMP_INDEX,
        return_timestamps=False,
    )
    if alignment_heads is not None:
        config.alignment_heads = [list(map(int, pair)) for pair in alignment_heads]
    if is_multilingual:
        config.lang_to_id = lang_to_id
        config.task_to_id = {t: vocab[f"<|{t}|>"] for t in ("translate", "transcribe")}
        if language is not None:
            code = language_code(language)
            if f"<|{code}|>" not in lang_to_id:
                raise ModelError(f"this Whisper model has no <|{code}|> language token")
            config.language = code
        config.task = task
    return config


def whisper_config(dims: WhisperDims, tokenizer: WhisperTokenizer, tied: bool) -> WhisperConfig:
    """A WhisperConfig for the dimensions; special ids come from the tokenizer, not constants."""
    from transformers import WhisperConfig

    vocab = tokenizer.get_vocab()
    return WhisperConfig(
        vocab_size=dims.vocab_size,
        num_mel_bins=dims.n_mels,
        d_model=dims.d_model,
        encoder_layers=dims.encoder_layers,
        decoder_layers=dims.decoder_layers,
        encoder_attention_heads=dims.encoder_attention_heads,
        decoder_attention_heads=dims.decoder_attention_heads,
        encoder_ffn_dim=dims.encoder_ffn_dim,
        decoder_ffn_dim=dims.decoder_ffn_dim,
        max_source_positions=dims.max_source_positions,
        max_target_positions=dims.max_target_positions,
        pad_token_id=vocab[EOT],
        bos_token_id=vocab[EOT],
        eos_token_id=vocab[EOT],
        decoder_start_token_id=vocab[SOT],
        tie_word_embeddings=tied,
        activation_function="gelu",
        scale_embedding=False,
    )


def load_processor(model_dir: Path, language: str, task: str) -> WhisperProcessor:
    """Processor whose tokenizer writes the `<|ko|><|transcribe|><|notimestamps|>` prefix.

    A tokenizer without a pad token, or a generation config that cannot be told the language,
    would fail only at the first validation, after training steps: refused here instead.
    """
    from transformers import WhisperConfig, WhisperProcessor

    check_generation_config(model_dir, language)
    processor = WhisperProcessor.from_pretrained(model_dir)
    if processor.tokenizer.pad_token_id is None:
        raise ModelError(
            f"{model_dir}: the tokenizer has no pad token (Whisper pads with <|endoftext|>): "
            'set "pad_token": "<|endoftext|>" in its tokenizer_config.json, or copy the '
            "tokenizer files from the checkpoint it came from"
        )
    model_config = WhisperConfig.from_pretrained(model_dir)
    # Packed windows need the timestamp tokens: a tokenizer saved without them gets them back.
    add_timestamp_tokens(processor.tokenizer, model_config.vocab_size, model_dir)
    n_mels = model_config.num_mel_bins
    processor.feature_extractor = with_mel_bins(processor.feature_extractor, n_mels, model_dir)
    processor.tokenizer.set_prefix_tokens(language=language, task=task, predict_timestamps=False)
    return processor


def check_generation_config(model_dir: Path, language: str) -> None:
    """generate() forces the language through generation_config.json's lang_to_id table."""
    path = Path(model_dir) / GENERATION_CONFIG
    generation = read_json(path)
    token = f"<|{language_code(language)}|>"
    if token not in (generation.get("lang_to_id") or {}):
        what = "no generation_config.json" if not path.is_file() else f"{path.name} has no {token}"
        raise ModelError(
            f"{model_dir}: {what} in its language table (lang_to_id), so Whisper cannot be "
            "told to decode that language: copy generation_config.json from the Whisper "
            "checkpoint this model came from"
        )


def with_mel_bins(
    extractor: WhisperFeatureExtractor, n_mels: int | None, model_dir: Path
) -> WhisperFeatureExtractor:
    """The feature extractor at the model's mel bins (80, or 128 for large-v3 and turbo).

    A processor saved from another size would feed 80 bins to a 128-bin model (a shape error
    deep in the encoder) or the reverse; the filters depend only on the bin count, so rebuild.
    """
    from transformers import WhisperFeatureExtractor

    if n_mels is None or extractor.feature_size == n_mels:
        return extractor
    logger.warning(
        "%s: the feature extractor has %d mel bins but the model takes %d; using %d",
        model_dir,
        extractor.feature_size,
        n_mels,
        n_mels,
    )
    return WhisperFeatureExtractor(
        feature_size=n_mels,
        sampling_rate=extractor.sampling_rate,
        hop_length=extractor.hop_length,
        chunk_length=extractor.chunk_length,
        n_fft=extractor.n_fft,
    )


def load_tokenizer(model_dir: Path) -> WhisperTokenizer:
    """The directory's tokenizer, timestamp tokens included; a bare CTranslate2 dir
    (tokenizer.json only) is rebuilt."""
    if not (model_dir / "tokenizer_config.json").is_file():
        return build_tokenizer(model_dir)
    from transformers import WhisperTokenizer

    tokenizer = WhisperTokenizer.from_pretrained(model_dir)
    vocab_size = read_json(model_dir / MODEL_CONFIG).get("vocab_size")
    if vocab_size is None and (model_dir / CT2_MODEL).is_file():
        vocab_size = _model_bin_shape(model_dir, "decoder/embeddings/weight")[0]
    if vocab_size is not None:
        add_timestamp_tokens(tokenizer, int(vocab_size), model_dir)
    return tokenizer


def load_feature_extractor(model_dir: Path) -> WhisperFeatureExtractor:
    """preprocessor_config.json (what CTranslate2 and faster-whisper read), else the processor's.

    The mel filters follow the model: a processor saved for another model size (80 vs 128
    mels) is rebuilt at the model's `num_mel_bins`, with a warning.
    """
    from transformers import WhisperFeatureExtractor

    processor_config = read_json(model_dir / "processor_config.json")
    if (model_dir / PREPROCESSOR_CONFIG).is_file():
        path = model_dir / PREPROCESSOR_CONFIG
        extractor = WhisperFeatureExtractor.from_json_file(str(path))
    elif "feature_extractor" in processor_config:
        extractor = WhisperFeatureExtractor(**processor_config["feature_extractor"])
    elif (model_dir / CT2_MODEL).is_file():
        return build_feature_extractor(model_dir)  # checked against model.bin's conv1 there
    else:
        raise ModelError(f"{model_dir}: no {PREPROCESSOR_CONFIG}, so no feature settings")
    n_mels = read_json(model_dir / MODEL_CONFIG).get("num_mel_bins")
    return with_mel_bins(extractor, n_mels, model_dir)
