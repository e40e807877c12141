"""The workspace layout: every path pefty reads or writes, and the atomic writes that protect them.

Outputs are written to a hidden temporary sibling and renamed into place, so a killed command
never leaves a half-written file or model directory that looks finished.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pefty_whisper.config import Config, load_config
from pefty_whisper.errors import PeftyError

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


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file so that readers see the old content or the new, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_directory(final: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that replaces `final` only when the block succeeds.

    An existing `final` is kept unless `force` is set, and even then it is removed only after
    the new directory is complete.
    """
    if final.exists() and not force:
        raise PeftyError(f"{final} already exists: pass --force to replace it")
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}.*.partial"):
        logger.warning("removing %s, left by a command that was killed", stale)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".partial"))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


ROUND_FILE = "round.json"


def weights_hash(model_dir: Path) -> str:
    """Content hash of a model's weight files: what `pefty merge` checks an adapter's base against.

    Only the weights count, so re-saving a processor or config does not break the lineage.
    """
    files = sorted(model_dir.glob("*.safetensors")) or sorted(model_dir.glob("*.bin"))
    if not files:
        raise PeftyError(f"{model_dir}: no weight files (*.safetensors) to hash")
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 24), b""):
                digest.update(block)
    return f"sha256:{digest.hexdigest()}"


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


def package_versions(*names: str) -> dict[str, str]:
    """Versions of the packages that shaped an output, recorded for reproducibility."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in ("pefty-whisper", "torch", "transformers", "peft", *names):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return versions
