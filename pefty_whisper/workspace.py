"""The workspace layout: every path and name pefty reads or writes, and the records kept there.

Outputs are written through `files.py` (a temporary sibling renamed into place), so a killed
command never leaves a half-written file or model directory that looks finished.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pefty_whisper.config import Config, load_config
from pefty_whisper.errors import PeftyError
from pefty_whisper.files import atomic_write_text

logger = logging.getLogger(__name__)

CONFIG_FILE = "pefty.yaml"


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def at(cls, root: str | Path | None = None) -> Workspace:
        """The workspace rooted at `root`, or the current directory."""
        return cls(Path(root or ".").resolve())

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def manifest_path(self, name: str) -> Path:
        """`--set eval_clean` means data/eval_clean.csv; a path to a CSV is taken as it is."""
        candidate = Path(name)
        if candidate.suffix == ".csv":
            return candidate if candidate.is_absolute() else self.root / candidate
        return self.data_dir / f"{name}.csv"

    def round_manifest(self, round_index: int, split: str) -> Path:
        """Round N trains on part N of KsponSpeech: train_KsponSpeech_0N_{train,test}.csv."""
        return self.data_dir / f"train_KsponSpeech_{round_index:02d}_{split}.csv"

    def adapter_dir(self, round_index: int) -> Path:
        return self.root / "adapters" / f"round{round_index}"

    def merged_dir(self, round_index: int) -> Path:
        return self.root / "merged" / f"round{round_index}"

    def export_dir(self, name: str) -> Path:
        return self.root / "exports" / name

    def finished_rounds(self, folder: str) -> list[int]:
        """Round numbers under adapters/ or merged/ whose round.json says they finished."""
        return sorted(
            int(d.name.removeprefix("round"))
            for d in (self.root / folder).glob("round*")
            if d.name.removeprefix("round").isdigit() and (d / ROUND_FILE).is_file()
        )

    def load_config(self, path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
        """`--config` if given, else the workspace's pefty.yaml if present, else the defaults."""
        if path is None and (self.root / CONFIG_FILE).is_file():
            path = self.root / CONFIG_FILE
        return load_config(Path(path) if path is not None else None, overrides)


ROUND_FILE = "round.json"


def write_round_record(directory: Path, record: dict[str, Any]) -> None:
    """round.json is written last: its presence marks a round (or merge) as finished."""
    atomic_write_text(
        directory / ROUND_FILE, json.dumps(record, indent=2, ensure_ascii=False) + "\n"
    )


def read_round_record(directory: Path) -> dict[str, Any] | None:
    path = directory / ROUND_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PeftyError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
