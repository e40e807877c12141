"""What a model directory is: its kind, every file name it holds, and where `--model` points.

The one owner of "which kind of Whisper directory is this" (a LoRA adapter, a transformers
checkpoint, a CTranslate2 export, an ONNX export) and of the names of the files that tell them
apart, so merge, evaluate, export, transcribe and serve all recognise a directory alike.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pefty_whisper.errors import ModelError

__all__ = [
    "ADAPTER_CONFIG",
    "BACKENDS",
    "CT2_MODEL",
    "GENERATION_CONFIG",
    "MODEL_CONFIG",
    "MODEL_DIR_HINT",
    "ONNX_DECODER",
    "ONNX_DECODER_WITH_PAST",
    "ONNX_ENCODER",
    "PREPROCESSOR_CONFIG",
    "Backend",
    "ModelDir",
    "ModelKind",
    "check_model_dir",
    "looks_like_hub_id",
    "read_json",
    "resolve_model_dir",
]

# The files that tell the kinds apart, and the ones every kind may carry.
ADAPTER_CONFIG = "adapter_config.json"
CT2_MODEL = "model.bin"
ONNX_ENCODER = "encoder_model.onnx"
ONNX_DECODER = "decoder_model.onnx"
ONNX_DECODER_WITH_PAST = "decoder_with_past_model.onnx"
MODEL_CONFIG = "config.json"
GENERATION_CONFIG = "generation_config.json"
PREPROCESSOR_CONFIG = "preprocessor_config.json"
WEIGHT_PATTERNS = ("*.safetensors", "*.bin")
HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken"]
# The workspace's own folders: `merged/round9` is a missing round, never a hub id.
WORKSPACE_FOLDERS = ("merged", "adapters", "exports", "imported", "data", "eval")

Backend = Literal["torch", "ct2", "onnx"]
BACKENDS: tuple[Backend, ...] = ("torch", "ct2", "onnx")
ModelKind = Literal["adapter", "torch", "ct2", "onnx"]

MODEL_DIR_HINT = (
    "a model directory holds a transformers checkpoint (config.json + *.safetensors), a "
    f"CTranslate2 export ({CT2_MODEL}) or an ONNX export ({ONNX_ENCODER} + {ONNX_DECODER})"
)


@dataclass(frozen=True)
class ModelDir:
    """A directory that holds a Whisper model or a LoRA adapter, told apart by its files."""

    path: Path

    @property
    def kind(self) -> ModelKind:
        """adapter, torch (transformers), ct2 or onnx; a ModelError for anything else."""
        path = self.path
        if not path.is_dir():
            raise ModelError(f"{path}: model directory not found")
        if (path / ADAPTER_CONFIG).is_file():
            return "adapter"
        if (path / CT2_MODEL).is_file():
            return "ct2"
        if (path / ONNX_ENCODER).is_file():
            return "onnx"
        if (path / MODEL_CONFIG).is_file() and any(path.glob("*.safetensors")):
            return "torch"
        raise ModelError(f"{path} is not a Whisper model directory: {MODEL_DIR_HINT}")

    @property
    def backend(self) -> Backend:
        """The backend that runs the directory; an adapter must be merged first."""
        kind = self.kind
        if kind == "adapter":
            raise ModelError(
                f"{self.path} holds a LoRA adapter, not a model: run `pefty merge` first"
            )
        return kind

    @property
    def is_adapter(self) -> bool:
        return (self.path / ADAPTER_CONFIG).is_file()

    @property
    def is_export(self) -> bool:
        """A CTranslate2 or ONNX export (decoded by its own runtime, not by transformers)."""
        return (self.path / CT2_MODEL).is_file() or (self.path / ONNX_ENCODER).is_file()

    @property
    def is_ct2(self) -> bool:
        return (self.path / CT2_MODEL).is_file()

    @property
    def ct2_model(self) -> Path:
        return self.path / CT2_MODEL

    def json(self, name: str) -> dict[str, Any]:
        """A JSON file of the directory ({} where it has none)."""
        return read_json(self.path / name)

    def max_target_positions(self) -> int:
        """The decoder's positions: config.json, else a CTranslate2 model's position table,
        else Whisper's 448 (all released models)."""
        from pefty_whisper.whisper.tokens import MAX_TARGET_POSITIONS

        config = self.json(MODEL_CONFIG)
        if "max_target_positions" in config:
            return int(config["max_target_positions"])
        if self.is_ct2:  # a CTranslate2 config.json does not say: ask the index
            from pefty_whisper.whisper.ct2_file import Ct2ModelFile

            model = Ct2ModelFile(self.ct2_model)
            if "decoder/position_encodings/encodings" in model:
                return model.shape("decoder/position_encodings/encodings")[0]
        return MAX_TARGET_POSITIONS

    @classmethod
    def resolve(cls, model: str | Path, root: Path | None = None) -> ModelDir:
        """`--model` as every command reads it: a directory (relative to the workspace root, or
        absolute) of any kind, else a hub id found in the local Hugging Face cache."""
        path = Path(model)
        if not path.is_absolute() and root is not None:
            path = Path(root) / path
        if path.is_dir():
            return cls(path)
        return cls(resolve_model_dir(model, root))


def read_json(path: Path) -> dict[str, Any]:
    """A model directory's JSON file, {} if absent; a one-line error if unreadable."""
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path} is not readable JSON: {exc}") from exc


def resolve_model_dir(name_or_path: str | Path, root: Path | None = None) -> Path:
    """A local transformers checkpoint for `name_or_path`: itself, or the hub snapshot of a
    model id.

    Every later step (hashing, merging, exporting) works on files, so hub ids are resolved once
    here. A hub id is `owner/name` that is not a local path; offline it works only if it is
    already in the Hugging Face cache.
    """
    candidate = Path(name_or_path)
    if not candidate.is_absolute() and root is not None:
        candidate = root / candidate
    if candidate.exists():
        return check_model_dir(candidate)
    text = str(name_or_path)
    if not looks_like_hub_id(text, root):
        raise ModelError(f"{candidate}: model directory not found{_missing_hint(text, root)}")
    from huggingface_hub import snapshot_download

    try:
        snapshot = snapshot_download(text, allow_patterns=HUB_FILES)
    except Exception as exc:  # the hub raises many types: offline, gated, missing
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
        where = (
            "not in the Hugging Face cache (HF_HUB_OFFLINE is set)"
            if offline
            else (f"not downloadable from the Hugging Face hub ({type(exc).__name__})")
        )
        raise ModelError(
            f"{text}: not a local directory (looked in {candidate}) and {where}; "
            "pass a local model directory"
        ) from exc
    return check_model_dir(Path(snapshot))


def looks_like_hub_id(text: str, root: Path | None = None) -> bool:
    """`openai/whisper-small`: one slash, no path syntax, and not a folder of this workspace
    or of the current directory (`merged/round9` is a round that does not exist yet)."""
    first = text.split("/", 1)[0]
    if text.count("/") != 1 or text.startswith((".", "/", "~")) or "\\" in text:
        return False
    if first in WORKSPACE_FOLDERS or Path(first).is_dir():
        return False
    return not (root is not None and (root / first).is_dir())


def _missing_hint(text: str, root: Path | None) -> str:
    parts = Path(text).parts
    if len(parts) != 2 or parts[0] not in ("merged", "adapters") or root is None:
        return ""
    found = sorted(p.name for p in (root / parts[0]).glob("round*") if p.is_dir())
    have = f"; it has {', '.join(found)}" if found else ""
    command = "pefty merge" if parts[0] == "merged" else "pefty train"
    index = parts[1].removeprefix("round")
    step = f"`{command} --round {index}`" if index.isdigit() else f"`{command}`"
    return f" in the workspace {root}{have}: {step} writes {parts[0]}/{parts[1]}"


def check_model_dir(path: Path) -> Path:
    """Fail early, with the way out, on directories that are not a transformers checkpoint."""
    if not path.is_dir():
        raise ModelError(f"{path} is a file, not a model directory")
    if (path / ADAPTER_CONFIG).is_file():
        raise ModelError(f"{path} holds a LoRA adapter, not a model: run `pefty merge` first")
    if not (path / MODEL_CONFIG).is_file():
        raise ModelError(f"{path}: no config.json, so not a transformers model directory")
    if not any(any(path.glob(pattern)) for pattern in WEIGHT_PATTERNS):
        raise ModelError(
            f"{path}: config.json but no weights (*.safetensors): copy the weight files too"
        )
    return path
