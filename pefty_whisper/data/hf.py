"""`pefty prepare hf`: a Hugging Face `datasets` corpus (FLEURS, Common Voice, Zeroth) -> manifest.

Audio is read with `Audio(decode=False)`, so rows give the stored bytes or path and decoding
stays with soundfile (datasets 5 decodes and encodes through torchcodec and FFmpeg, which this
package does without). Audio a row holds as bytes is written once under the workspace; audio it
names by a path that exists is referenced where it lies. The rows then go through the same checks
as every other source (prepare.py), so rejects are counted and reported the same way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pefty_whisper.data.audio import AUDIO_SUFFIXES
from pefty_whisper.errors import DataError

logger = logging.getLogger(__name__)

# Transcript columns of the corpora Korean users hold, in order of preference: Common Voice
# `sentence`, FLEURS `transcription` (its `raw_transcription` keeps case and punctuation),
# Zeroth-Korean `text`.
TEXT_COLUMNS = ("sentence", "text", "transcript", "transcription", "raw_transcription")
METADATA_FILES = ("metadata.csv", "metadata.jsonl")
# `save_to_disk` writes one of these beside its Arrow shards.
SAVED_DATASET_FILES = ("dataset_info.json", "state.json", "dataset_dict.json")


@dataclass(frozen=True)
class HfRow:
    """One dataset row reduced to what a manifest needs."""

    index: int
    audio: Path | None  # a file that holds the audio (referenced or written here)
    text: str
    error: str = ""


def load_hf_dataset(source: str, split: str | None, config_name: str | None) -> Any:
    """A `datasets.Dataset` from a `save_to_disk` folder, an audio folder with a metadata file,
    or (online only) a hub id; `split` picks one split of a dataset that has several."""
    import datasets

    path = Path(source)
    if path.is_dir() and any((path / name).is_file() for name in SAVED_DATASET_FILES):
        loaded = datasets.load_from_disk(str(path))
    elif path.is_dir():
        loaded = _load_audio_folder(path)
    elif path.exists():
        raise DataError(f"{source}: a file, not a dataset: pass a folder or a hub id")
    elif source.count("/") == 1 and not source.startswith((".", "/")):
        try:
            loaded = datasets.load_dataset(source, config_name, split=split)
        except Exception as exc:  # the hub raises many types: offline, gated, missing
            raise DataError(
                f"{source}: not a local folder and not loadable from the Hugging Face hub "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); pass a folder "
                "written by `Dataset.save_to_disk`"
            ) from exc
    else:
        raise DataError(f"{source}: dataset folder not found")
    return _one_split(loaded, source, split)


def _load_audio_folder(folder: Path) -> Any:
    """An `audiofolder` layout (audio files + metadata.csv/.jsonl with a `file_name` column).

    datasets' own audiofolder builder encodes every file through torchcodec; reading the
    metadata with its csv/json builders and resolving `file_name` here gives the same rows.
    """
    import datasets

    metadata = next((folder / n for n in METADATA_FILES if (folder / n).is_file()), None)
    if metadata is None:
        raise DataError(
            f"{folder}: neither a `save_to_disk` dataset ({', '.join(SAVED_DATASET_FILES)}) nor "
            f"an audio folder with {' or '.join(METADATA_FILES)}"
        )
    builder = "csv" if metadata.suffix == ".csv" else "json"
    table = datasets.load_dataset(builder, data_files=str(metadata), split="train")
    if "file_name" not in table.column_names:
        found = ", ".join(table.column_names)
        raise DataError(f"{metadata}: no `file_name` column (found: {found})")
    return table.map(
        lambda row: {"audio": {"path": str(folder / row["file_name"]), "bytes": None}},
        remove_columns=["file_name"],
    )


def _one_split(loaded: Any, source: str, split: str | None) -> Any:
    import datasets

    if not isinstance(loaded, datasets.DatasetDict):
        return loaded
    if split is None:
        if len(loaded) == 1:
            return next(iter(loaded.values()))
        raise DataError(f"{source} has splits {', '.join(loaded)}: pick one with --split")
    if split not in loaded:
        raise DataError(f"{source} has no split {split!r}: use one of {', '.join(loaded)}")
    return loaded[split]


def audio_column(dataset: Any, wanted: str | None) -> str:
    """The column holding audio: the one asked for, else the one typed `Audio`, else `audio`."""
    import datasets

    columns = dataset.column_names
    if wanted is not None:
        if wanted not in columns:
            raise DataError(f"no audio column {wanted!r}; the dataset has: {', '.join(columns)}")
        return wanted
    typed = [c for c, f in dataset.features.items() if isinstance(f, datasets.Audio)]
    if typed:
        return typed[0]
    if "audio" in columns:
        return "audio"
    raise DataError(f"no audio column (pass --audio-column); the dataset has: {', '.join(columns)}")


def text_column(dataset: Any, wanted: str | None) -> str:
    """The transcript column, picked as `prepare csv` picks it (or the one asked for)."""
    columns = dataset.column_names
    if wanted is not None and wanted not in columns:
        raise DataError(f"no text column {wanted!r}; the dataset has: {', '.join(columns)}")
    found = wanted or next((c for c in TEXT_COLUMNS if c in columns), None)
    if found is None:
        raise DataError(
            f"no transcript column (one of {', '.join(TEXT_COLUMNS)}; or pass --text-column); "
            f"the dataset has: {', '.join(columns)}"
        )
    return found


def hf_rows(dataset: Any, audio: str, text: str | None, audio_dir: Path) -> list[HfRow]:
    """Every row's audio file and transcript; bytes-only audio is written into `audio_dir`.
    `text` None: audio only (`pefty label` transcribes a dataset that has no text)."""
    import datasets

    if isinstance(dataset.features.get(audio), datasets.Audio):
        dataset = dataset.cast_column(audio, datasets.Audio(decode=False))
    rows = []
    for index, row in enumerate(dataset.select_columns([audio] if text is None else [audio, text])):
        rows.append(_row(index, row[audio], row[text] if text else "", audio_dir))
    return rows


def _row(index: int, value: Any, text: Any, audio_dir: Path) -> HfRow:
    transcript = text if isinstance(text, str) else ""
    if isinstance(value, str):
        value = {"path": value, "bytes": None}
    if not isinstance(value, dict):
        return HfRow(index, None, transcript, f"audio is a {type(value).__name__}, not a file")
    path, data = value.get("path"), value.get("bytes")
    if path and Path(path).is_file():
        return HfRow(index, Path(path), transcript)
    if not data:
        return HfRow(index, None, transcript, f"audio file not found and no bytes: {path}")
    suffix = Path(path or "").suffix.lower()
    # Bytes keep their container; soundfile sniffs wav/flac/ogg/mp3 from the content.
    target = audio_dir / f"{index:07d}{suffix if suffix in AUDIO_SUFFIXES else '.wav'}"
    if not target.is_file() or target.stat().st_size != len(data):
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        partial.write_bytes(data)
        partial.replace(target)
    return HfRow(index, target, transcript)
