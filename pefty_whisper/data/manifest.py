"""Manifests: the CSV files (`path,sentence,...`) every round trains, validates and tests on.

Bad rows are skipped and reported with their line numbers instead of failing a 100,000-row file
on its first problem; a file that lacks a required column fails at once.
"""

from __future__ import annotations

import csv
import io
import logging
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pefty_whisper.errors import DataError
from pefty_whisper.files import atomic_write_text

logger = logging.getLogger(__name__)

# `path,sentence` first: the convention of the seed code, which users' own CSVs follow.
COLUMNS = ("path", "sentence", "duration", "id", "raw")
REQUIRED_COLUMNS = ("path", "sentence")


def round_manifest_name(part: int, split: str) -> str:
    """Round N trains and validates on KsponSpeech part N: `train_KsponSpeech_0N_{train,test}`.

    The one spelling of the name: `pefty prepare` writes it, the workspace reads it (data/ cannot
    import the workspace, which imports the config).
    """
    return f"train_KsponSpeech_{part:02d}_{split}"


@dataclass(frozen=True)
class Utterance:
    path: str  # absolute, or relative to the manifest's directory in the file
    sentence: str  # the normalized Whisper target
    duration: float | None = None  # seconds; kept so batches can be grouped by length
    id: str = ""
    raw: str = ""  # the transcript before normalization, for auditing


@dataclass(frozen=True)
class Reject:
    source: str
    line: int
    path: str
    reason: str


@dataclass
class Manifest:
    path: Path
    utterances: list[Utterance]
    rejects: list[Reject] = field(default_factory=list)

    @property
    def hours(self) -> float:
        return sum(u.duration or 0.0 for u in self.utterances) / 3600

    def reject_counts(self) -> Counter[str]:
        return Counter(r.reason for r in self.rejects)


def read_manifest(path: str | Path, check_audio: bool = True) -> Manifest:
    """Read a manifest, skipping (and recording) rows that cannot be trained on."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: manifest not found (run `pefty prepare` to create it)")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (save the CSV as UTF-8)") from exc
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        found = ", ".join(reader.fieldnames or []) or "none"
        raise DataError(
            f"{path}: missing column '{missing[0]}' (found: {found}); "
            "convert it with `pefty prepare csv`"
        )
    manifest = Manifest(path=path, utterances=[])
    for row in reader:
        line = reader.line_num
        utterance, reason = _row_to_utterance(row, path.parent, check_audio)
        if utterance is None:
            manifest.rejects.append(Reject(str(path), line, row.get("path") or "", reason))
        else:
            manifest.utterances.append(utterance)
    if manifest.rejects:
        logger.warning(
            "%s: skipped %d bad rows (%s)",
            path,
            len(manifest.rejects),
            ", ".join(f"{n} {r}" for r, n in manifest.reject_counts().items()),
        )
    return manifest


def _row_to_utterance(
    row: dict[str, str | None], base_dir: Path, check_audio: bool
) -> tuple[Utterance | None, str]:
    audio = (row.get("path") or "").strip()
    sentence = (row.get("sentence") or "").strip()
    if not audio:
        return None, "empty path"
    if not sentence:
        return None, "empty sentence"
    resolved = Path(audio) if Path(audio).is_absolute() else base_dir / audio
    if check_audio and not resolved.is_file():
        return None, "audio file not found"
    duration_text = (row.get("duration") or "").strip()
    duration = None
    if duration_text:
        try:
            duration = float(duration_text)
        except ValueError:
            return None, f"duration is not a number ({duration_text!r})"
    utterance = Utterance(
        path=str(resolved),
        sentence=sentence,
        duration=duration,
        id=(row.get("id") or "").strip() or Path(audio).stem,
        raw=(row.get("raw") or "").strip(),
    )
    return utterance, ""


def manifest_text(utterances: Iterable[Utterance]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for u in utterances:
        duration = "" if u.duration is None else f"{u.duration:.3f}"
        writer.writerow([u.path, u.sentence, duration, u.id, u.raw])
    return buffer.getvalue()


def write_manifest(path: Path, utterances: Iterable[Utterance]) -> None:
    """Write atomically: a killed `prepare` never leaves a truncated CSV behind."""
    atomic_write_text(path, manifest_text(utterances))


def write_rejects(path: Path, rejects: Sequence[Reject]) -> None:
    """One row per skipped input, so nothing is dropped without a trace."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow(("source", "line", "path", "reason"))
    for r in rejects:
        writer.writerow((r.source, r.line, r.path, r.reason))
    atomic_write_text(path, buffer.getvalue())


def split_utterances(
    utterances: Sequence[Utterance], test_ratio: float, seed: int
) -> tuple[list[Utterance], list[Utterance]]:
    """Seeded train/test split; each side keeps the input order so reruns write identical files."""
    if not 0.0 <= test_ratio < 1.0:
        raise DataError(f"data.test_ratio must be in [0, 1); got {test_ratio}")
    count = len(utterances)
    test_count = round(count * test_ratio)
    if test_ratio > 0 and count >= 2:
        test_count = min(max(test_count, 1), count - 1)
    order = list(range(count))
    random.Random(seed).shuffle(order)
    test_indices = set(order[:test_count])
    train = [u for i, u in enumerate(utterances) if i not in test_indices]
    test = [u for i, u in enumerate(utterances) if i in test_indices]
    return train, test
