"""pefty-whisper: round-based LoRA fine-tuning of 8-bit Whisper for Korean speech recognition.

The public API, each name from the module that owns it:

    from pefty_whisper import Workspace, load_config, train_round, merge_round, evaluate_set
    workspace = Workspace.at("runs/kspon")
    config = workspace.load_config()

Names are imported when first used (PEP 562), so `import pefty_whisper` and `pefty --help` stay
fast: nothing pulls in torch until a stage runs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> the module that owns it
_API = {
    "load_config": "pefty_whisper.config",
    "Config": "pefty_whisper.config",
    "Workspace": "pefty_whisper.workspace",
    "default_round_plan": "pefty_whisper.train",
    "train_round": "pefty_whisper.train",
    "RoundTrainer": "pefty_whisper.train",
    "merge_round": "pefty_whisper.merge",
    "evaluate_set": "pefty_whisper.evaluate",
    "Transcriber": "pefty_whisper.inference",
    "TranscriberOptions": "pefty_whisper.inference",
    "export_model": "pefty_whisper.export",
    "ModelDir": "pefty_whisper.whisper.model_dir",
    "WhisperTokens": "pefty_whisper.whisper.tokens",
}

__all__ = [
    "Config",
    "ModelDir",
    "RoundTrainer",
    "Transcriber",
    "TranscriberOptions",
    "WhisperTokens",
    "Workspace",
    "__version__",
    "default_round_plan",
    "evaluate_set",
    "export_model",
    "load_config",
    "merge_round",
    "train_round",
]

if TYPE_CHECKING:
    from pefty_whisper.config import Config, load_config
    from pefty_whisper.evaluate import evaluate_set
    from pefty_whisper.export import export_model
    from pefty_whisper.inference import Transcriber, TranscriberOptions
    from pefty_whisper.merge import merge_round
    from pefty_whisper.train import RoundTrainer, default_round_plan, train_round
    from pefty_whisper.whisper.model_dir import ModelDir
    from pefty_whisper.whisper.tokens import WhisperTokens
    from pefty_whisper.workspace import Workspace


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'pefty_whisper' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
