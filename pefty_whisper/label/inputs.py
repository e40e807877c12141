"""What `pefty label` transcribes: a SOURCE (a folder of audio, an audio file, a manifest CSV,
or a Hugging Face dataset without text) as a fixed, ordered list of inputs.

The order is the labelling's identity: shards (input i goes to rank i % world), the progress
file of a resumed run and the written set all follow it, so it is sorted and checked before
any model loads.
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from pefty_whisper.data.audio import AUDIO_SUFFIXES, probe_audio
from pefty_whisper.data.hf import SAVED_DATASET_FILES
from pefty_whisper.data.manifest import SPAN_COLUMNS
from pefty_whisper.data.sources import CSV_PATH_COLUMNS
from pefty_whisper.errors import DataError

__all__ = ["DatasetPick", "LabelInput", "label_inputs"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetPick:
    """What to read of a Hugging Face dataset SOURCE, as `prepare hf` takes it: one split of
    several, a hub id's config, the audio column when none is typed Audio."""

    split: str | None = None
    subset: str | None = None
    audio_column: str | None = None

    def describe(self) -> str:
        """' [split test, subset ko_kr]' to follow the source's name; '' when nothing is picked."""
        picked = [f"{key.replace('_', ' ')} {value}" for key, value in vars(self).items() if value]
        return f" [{', '.join(picked)}]" if picked else ""


@dataclass(frozen=True)
class LabelInput:
    """One recording (or a span of one) to transcribe; `where` says where it was listed."""

    path: str  # absolute
    start: float | None = None
    end: float | None = None
    where: str = ""  # "src.csv:12", for messages

    @property
    def name(self) -> str:
        """The id its rows are named after: the file's stem (and start, for a span)."""
        stem = Path(self.path).stem
        return stem if self.start is None else f"{stem}-{self.start:g}s"


def label_inputs(source: str, audio_dir: Path, pick: DatasetPick | None = None) -> list[LabelInput]:
    """The inputs of SOURCE in their fixed order, every file checked (headers only)."""
    path = Path(source).expanduser()
    pick = pick or DatasetPick()
    if pick.describe() and path.exists() and (path.is_file() or not _is_dataset(path)):
        raise DataError(
            f"{path}: --split, --subset and --audio-column pick from a Hugging Face dataset; "
            "this is a folder of audio, an audio file or a manifest: drop them"
        )
    if path.is_file() and path.suffix.lower() == ".csv":
        inputs = _from_csv(path)
    elif path.is_file() and path.suffix.lower() in AUDIO_SUFFIXES:
        inputs = [LabelInput(str(path.resolve()), where=str(path))]
    elif path.is_dir() and not _is_dataset(path):
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        inputs = [LabelInput(str(p.resolve()), where=str(p)) for p in files]
        if not inputs:
            raise DataError(
                f"{path}: no audio files ({', '.join(AUDIO_SUFFIXES)}) in this folder; "
                "pass a folder of recordings, a manifest CSV or a Hugging Face dataset"
            )
    elif path.exists():
        if path.is_file():
            raise DataError(
                f"{path}: not audio ({', '.join(AUDIO_SUFFIXES)}) nor a manifest (.csv)"
            )
        inputs = _from_dataset(source, audio_dir, pick)
    else:
        inputs = _from_dataset(source, audio_dir, pick)
    for item in inputs:
        try:
            probe_audio(item.path)
        except DataError as exc:
            raise DataError(f"{item.where}: {exc} (remove it from the source)") from exc
    return inputs


def _is_dataset(folder: Path) -> bool:
    names = (*SAVED_DATASET_FILES, "metadata.csv", "metadata.jsonl")
    return any((folder / name).is_file() for name in names)


def _from_csv(src: Path) -> list[LabelInput]:
    """A manifest (or any CSV with an audio column; a text column is ignored), with optional
    start/end seconds per row; relative paths are taken from the CSV's folder."""
    try:
        with src.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            column = next((c for c in CSV_PATH_COLUMNS if c in columns), None)
            if column is None:
                raise DataError(
                    f"{src}: no audio path column (one of {', '.join(CSV_PATH_COLUMNS)}); "
                    f"found: {', '.join(columns) or 'none'}"
                )
            inputs = [_csv_row(src, reader.line_num, row, column) for row in reader]
    except UnicodeDecodeError as exc:
        raise DataError(f"{src}: not UTF-8 text (save the CSV as UTF-8)") from exc
    if not inputs:
        raise DataError(f"{src}: no rows to label")
    return inputs


def _csv_row(src: Path, line: int, row: dict[str, str | None], column: str) -> LabelInput:
    where = f"{src}:{line}"
    audio = (row.get(column) or "").strip().replace("\\", "/")
    if not audio:
        raise DataError(f"{where}: empty audio path (fill it in or delete the line)")
    resolved = audio if os.path.isabs(audio) else str(src.parent / audio)
    times = [(row.get(c) or "").strip() for c in SPAN_COLUMNS]
    if not any(times):
        return LabelInput(os.path.abspath(resolved), where=where)
    try:
        start, end = (float(t) for t in times)
    except ValueError:
        raise DataError(
            f"{where}: start/end must both be seconds (got {times[0]!r}, {times[1]!r})"
        ) from None
    if not 0 <= start < end:
        raise DataError(f"{where}: start/end must satisfy 0 <= start < end (got {start}, {end})")
    return LabelInput(os.path.abspath(resolved), start, end, where)


def _from_dataset(source: str, audio_dir: Path, pick: DatasetPick) -> list[LabelInput]:
    """A Hugging Face dataset (`prepare hf`'s sources) read for its audio only."""
    from pefty_whisper.data import hf

    dataset = hf.load_hf_dataset(source, pick.split, pick.subset)
    column = hf.audio_column(dataset, pick.audio_column)
    inputs = []
    for row in hf.hf_rows(dataset, column, None, audio_dir):
        if row.audio is None:
            raise DataError(f"{source}: row {row.index + 1}: {row.error}")
        inputs.append(LabelInput(str(Path(row.audio).resolve()), where=f"{source}:{row.index + 1}"))
    if not inputs:
        raise DataError(f"{source}: the dataset has no rows")
    return inputs
