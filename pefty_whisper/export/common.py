"""What every export shares: the optional packages it needs, the source checks and the
processor files written beside the exported weights."""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from pefty_whisper.errors import ModelError
from pefty_whisper.whisper.model_dir import ModelDir
from pefty_whisper.whisper.processor import load_feature_extractor, write_preprocessor_config

__all__ = ["EXPORT_EXTRA_HINT", "check_source", "require_export_extra", "write_processor_files"]

logger = logging.getLogger(__name__)

EXPORT_EXTRA_HINT = "pip install 'pefty-whisper[export]'"


def require_export_extra(*modules: str, purpose: str) -> None:
    """One line naming the missing packages and the install command, instead of an ImportError
    deep inside a conversion."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise ModelError(f"{purpose} needs {', '.join(missing)}: {EXPORT_EXTRA_HINT}")


def check_source(model_dir: Path, out_dir: Path, force: bool) -> dict[str, Any]:
    """Refuse what cannot be exported, before any work; returns the model's config.json."""
    backend = ModelDir(model_dir).backend  # adapter and non-model dirs fail here, with the way out
    if backend != "torch":
        raise ModelError(
            f"{model_dir} is already a {backend} export: export from the merged transformers "
            "model it came from (merged/roundN)"
        )
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    if config.get("model_type") != "whisper":
        raise ModelError(
            f"{model_dir} holds a {config.get('model_type', 'unknown')!r} model, not Whisper"
        )
    if out_dir.exists() and not force:  # say so before minutes of work, not after
        raise ModelError(f"{out_dir} already exists: pass --force to replace it")
    if out_dir.resolve() == model_dir.resolve():
        raise ModelError(f"{out_dir}: an export cannot replace the model it is made from")
    return config


def write_processor_files(model_dir: Path, out_dir: Path, copy_model_config: bool = False) -> None:
    """Tokenizer, processor and generation config beside the exported weights.

    preprocessor_config.json is what CTranslate2 and faster-whisper read; generation_config.json
    carries the language and task the Transcriber puts in the prompt. A CTranslate2 directory
    keeps its own config.json, so the transformers one is copied for ONNX only.
    """
    from transformers import WhisperProcessor, WhisperTokenizer

    extractor = load_feature_extractor(model_dir)
    tokenizer = WhisperTokenizer.from_pretrained(model_dir)
    WhisperProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(out_dir)
    write_preprocessor_config(out_dir, extractor)
    names = ["generation_config.json"] + (["config.json"] if copy_model_config else [])
    for name in names:
        if (model_dir / name).is_file():
            shutil.copyfile(model_dir / name, out_dir / name)
