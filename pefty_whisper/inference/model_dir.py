"""What a model directory holds: its backend, tokenizer, feature extractor and decoding settings.

Everything here is the same whichever backend runs the directory, so every engine decodes from
the same prompt, suppression lists and length limit.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pefty_whisper.errors import ModelError
from pefty_whisper.whisper_files import (
    EOT,
    SOT,
    build_feature_extractor,
    build_tokenizer,
    language_code,
    whisper_language_ids,
)

if TYPE_CHECKING:
    from transformers import WhisperFeatureExtractor, WhisperTokenizer

__all__ = [
    "BACKENDS",
    "DEFAULT_MAX_TARGET_POSITIONS",
    "MODEL_DIR_HINT",
    "ONNX_DECODER",
    "ONNX_DECODER_WITH_PAST",
    "ONNX_ENCODER",
    "Backend",
    "DecodingSpec",
    "detect_backend",
    "load_feature_extractor",
    "load_tokenizer",
    "read_decoding_spec",
    "resolve_model_path",
]

logger = logging.getLogger(__name__)

Backend = Literal["torch", "ct2", "onnx"]
BACKENDS: tuple[Backend, ...] = ("torch", "ct2", "onnx")

ONNX_ENCODER = "encoder_model.onnx"
ONNX_DECODER = "decoder_model.onnx"
ONNX_DECODER_WITH_PAST = "decoder_with_past_model.onnx"
# Whisper's text context when a directory does not say (all released models).
DEFAULT_MAX_TARGET_POSITIONS = 448

MODEL_DIR_HINT = (
    "a model directory holds a transformers checkpoint (config.json + *.safetensors), a "
    "CTranslate2 export (model.bin) or an ONNX export (encoder_model.onnx + decoder_model.onnx)"
)


def detect_backend(model_dir: Path) -> Backend:
    """The backend that can run `model_dir`, told apart by the files each format writes."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelError(f"{model_dir}: model directory not found")
    if (model_dir / "adapter_config.json").is_file():
        raise ModelError(f"{model_dir} holds a LoRA adapter, not a model: run `pefty merge` first")
    if (model_dir / "model.bin").is_file():
        return "ct2"
    if (model_dir / ONNX_ENCODER).is_file():
        return "onnx"
    if (model_dir / "config.json").is_file() and any(model_dir.glob("*.safetensors")):
        return "torch"
    raise ModelError(f"{model_dir} is not a Whisper model directory: {MODEL_DIR_HINT}")


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path} is not readable JSON: {exc}") from exc


@dataclass(frozen=True)
class DecodingSpec:
    """Everything about a directory's decoding that does not depend on the backend."""

    language: str | None  # language code ("ko"); None: detect per utterance
    task: str
    sot_token_id: int
    eos_token_id: int
    suppress_tokens: tuple[int, ...]
    begin_suppress_tokens: tuple[int, ...]
    max_target_positions: int
    multilingual: bool
    # Language code -> its token id, for per-utterance detection (empty: English-only model).
    languages: dict[str, int] = field(default_factory=dict)


def read_decoding_spec(
    model_dir: Path, tokenizer: WhisperTokenizer, language: str | None
) -> DecodingSpec:
    """Language, task and suppression from generation_config.json (all our exports carry it).

    A directory without one (a CTranslate2 model from elsewhere) decodes with the tokenizer's
    special tokens, no suppression here (CTranslate2 applies its own config.json lists) and
    per-utterance language detection unless a language is given.
    """
    generation = _read_json(model_dir / "generation_config.json")
    vocab = tokenizer.get_vocab()
    multilingual = "<|en|>" in vocab
    chosen = language if language is not None else generation.get("language")
    code = language_code(chosen) if chosen and multilingual else None
    if code is not None and f"<|{code}|>" not in vocab:
        raise ModelError(f"{model_dir}: this Whisper tokenizer has no <|{code}|> language token")
    if language is not None and not multilingual:
        logger.warning("%s is an English-only Whisper: ignoring language=%s", model_dir, language)
    return DecodingSpec(
        language=code,
        task=generation.get("task") or "transcribe",
        sot_token_id=int(generation.get("decoder_start_token_id", vocab[SOT])),
        eos_token_id=int(generation.get("eos_token_id", vocab[EOT])),
        suppress_tokens=tuple(generation.get("suppress_tokens") or ()),
        begin_suppress_tokens=tuple(generation.get("begin_suppress_tokens") or ()),
        max_target_positions=_max_target_positions(model_dir),
        multilingual=multilingual,
        languages={
            tokenizer.convert_ids_to_tokens(i)[2:-2]: i for i in whisper_language_ids(tokenizer)
        }
        if multilingual
        else {},
    )


def _max_target_positions(model_dir: Path) -> int:
    config = _read_json(model_dir / "config.json")
    if "max_target_positions" in config:
        return int(config["max_target_positions"])
    if (model_dir / "model.bin").is_file():  # a CTranslate2 config.json does not say: ask the index
        from pefty_whisper.export.ct2_file import Ct2ModelFile  # a leaf: no import cycle

        model = Ct2ModelFile(model_dir / "model.bin")
        if "decoder/position_encodings/encodings" in model:
            return model.shape("decoder/position_encodings/encodings")[0]
    return DEFAULT_MAX_TARGET_POSITIONS


def load_tokenizer(model_dir: Path) -> WhisperTokenizer:
    """The directory's tokenizer; a bare CTranslate2 dir (tokenizer.json only) is rebuilt."""
    if (model_dir / "tokenizer_config.json").is_file():
        from transformers import WhisperTokenizer

        return WhisperTokenizer.from_pretrained(model_dir)
    return build_tokenizer(model_dir)


def load_feature_extractor(model_dir: Path) -> WhisperFeatureExtractor:
    """preprocessor_config.json (what CTranslate2 and faster-whisper read), else the processor's.

    The mel filters follow the model: a processor saved for another model size (80 vs 128
    mels) is rebuilt at the model's `num_mel_bins`, with a warning.
    """
    from transformers import WhisperFeatureExtractor

    processor_config = _read_json(model_dir / "processor_config.json")
    if (model_dir / "preprocessor_config.json").is_file():
        path = model_dir / "preprocessor_config.json"
        extractor = WhisperFeatureExtractor.from_json_file(str(path))
    elif "feature_extractor" in processor_config:
        extractor = WhisperFeatureExtractor(**processor_config["feature_extractor"])
    elif (model_dir / "model.bin").is_file():
        return build_feature_extractor(model_dir)  # checked against model.bin's conv1 there
    else:
        raise ModelError(f"{model_dir}: no preprocessor_config.json, so no feature settings")
    from pefty_whisper.model import with_mel_bins

    n_mels = _read_json(model_dir / "config.json").get("num_mel_bins")
    return with_mel_bins(extractor, n_mels, model_dir)


def resolve_model_path(root: Path, model: str) -> Path:
    """`--model`: a directory relative to the workspace root if it exists, else what
    model.resolve_model_dir finds (an absolute path, or a hub id in the local cache)."""
    path = Path(model) if Path(model).is_absolute() else Path(root) / model
    if path.is_dir():
        return path
    from pefty_whisper.model import resolve_model_dir

    return resolve_model_dir(model, root)
