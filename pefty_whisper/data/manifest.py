"""Manifests: the CSV files (`path,sentence,...`) every round trains, validates and tests on.

Bad rows are skipped and reported with their line numbers instead of failing a 100,000-row file
on its first problem; a file that lacks a required column fails at once.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pefty_whisper.data.table import TableBuilder, Utterance, UtteranceTable
from pefty_whisper.errors import DataError
from pefty_whisper.files import atomic_write_text

logger = logging.getLogger(__name__)

# `path,sentence` first: the convention of the seed code, which users' own CSVs follow.
COLUMNS = ("path", "sentence", "duration", "id", "raw")
REQUIRED_COLUMNS = ("path", "sentence")
# Written last and only when some row has a phonetic form (KsponSpeech's dual transcriptions):
# a manifest of any other corpus stays the five columns it always was, byte for byte, and a
# manifest without the column reads as "" for every row.
PHONETIC_COLUMN = "phonetic"
# Written after it, and likewise only when some row has them: seconds into the audio file where
# a row that points into a long recording begins and ends (`pefty label` writes such rows).
# A row without them is its whole file.
SPAN_COLUMNS = ("start", "end")


def round_manifest_name(part: int, split: str) -> str:
    """Round N trains and validates on KsponSpeech part N: `train_KsponSpeech_0N_{train,test}`.

    The one spelling of the name: `pefty prepare` writes it, the workspace reads it (data/ cannot
    import the workspace, which imports the config).
    """
    return f"train_KsponSpeech_{part:02d}_{split}"


@dataclass(frozen=True)
class Reject:
    source: str
    line: int
    path: str
    reason: str


@dataclass
class Manifest:
    path: Path
    # read_manifest gives an UtteranceTable (columns, shared by forked loader workers);
    # prepare builds plain lists
    utterances: Sequence[Utterance]
    rejects: list[Reject] = field(default_factory=list)

    @property
    def hours(self) -> float:
        if isinstance(self.utterances, UtteranceTable):
            return float(self.utterances.durations_or_zero().sum()) / 3600
        return sum(u.duration or 0.0 for u in self.utterances) / 3600

    def reject_counts(self) -> Counter[str]:
        return Counter(r.reason for r in self.rejects)


def read_manifest(path: str | Path, check_audio: bool = True) -> Manifest:
    """Read a manifest, skipping (and recording) rows that cannot be trained on.

    Rows are streamed into columns (table.py): a 124,000-row file never exists as 124,000
    objects, in this process or in the loader workers forked from it.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: manifest not found (run `pefty prepare` to create it)")
    rows = TableBuilder()
    rejects: list[Reject] = []
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                found = ", ".join(reader.fieldnames or []) or "none"
                raise DataError(
                    f"{path}: missing column '{missing[0]}' (found: {found}); "
                    "convert it with `pefty prepare csv`"
                )
            base_dir = path.parent
            for row in reader:
                reason = _add_row(rows, row, base_dir, check_audio)
                if reason:
                    rejects.append(
                        Reject(str(path), reader.line_num, row.get("path") or "", reason)
                    )
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (save the CSV as UTF-8)") from exc
    manifest = Manifest(path=path, utterances=rows.build(), rejects=rejects)
    if manifest.rejects:
        logger.warning(
            "%s: skipped %d bad rows (%s)",
            path,
            len(manifest.rejects),
            ", ".join(f"{n} {r}" for r, n in manifest.reject_counts().items()),
        )
    return manifest


def _add_row(
    rows: TableBuilder, row: dict[str, str | None], base_dir: Path, check_audio: bool
) -> str:
    """Append one CSV row to the table; the reason it cannot be trained on, or ""."""
    audio = (row.get("path") or "").strip()
    sentence = (row.get("sentence") or "").strip()
    if not audio:
        return "empty path"
    if not sentence:
        return "empty sentence"
    resolved = str(Path(audio) if os.path.isabs(audio) else base_dir / audio)
    if check_audio and not os.path.isfile(resolved):
        return "audio file not found"
    duration_text = (row.get("duration") or "").strip()
    duration = None
    if duration_text:
        try:
            duration = float(duration_text)
        except ValueError:
            return f"duration is not a number ({duration_text!r})"
    span = row_span(row)
    if isinstance(span, str):
        return span
    start, end = span
    if start is not None and end is not None and duration is None:
        duration = round(end - start, 3)  # a span's length: no need to probe the whole file
    utterance_id = (row.get("id") or "").strip() or Path(audio).stem
    raw = (row.get("raw") or "").strip()
    phonetic = (row.get(PHONETIC_COLUMN) or "").strip()
    rows.append(resolved, sentence, duration, utterance_id, raw, phonetic, start, end)
    return ""


def row_span(row: dict[str, str | None]) -> tuple[float | None, float | None] | str:
    """A row's (start, end) seconds, (None, None) for a whole file, or why it is unusable."""
    texts = [(row.get(c) or "").strip() for c in SPAN_COLUMNS]
    if not any(texts):
        return None, None
    if not all(texts):
        return "start and end must be given together (seconds into the file)"
    try:
        start, end = (float(t) for t in texts)
    except ValueError:
        return f"start/end are not numbers ({texts[0]!r}, {texts[1]!r})"
    if not 0 <= start < end:
        return f"start/end must satisfy 0 <= start < end (got {start:g}, {end:g})"
    return start, end


def manifest_text(utterances: Iterable[Utterance]) -> str:
    rows = utterances if isinstance(utterances, Sequence) else list(utterances)
    with_phonetic = _has_phonetic(rows)
    with_spans = _has_spans(rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = COLUMNS + ((PHONETIC_COLUMN,) if with_phonetic else ())
    writer.writerow(header + (SPAN_COLUMNS if with_spans else ()))
    for u in rows:
        duration = "" if u.duration is None else f"{u.duration:.3f}"
        row = [u.path, u.sentence, duration, u.id, u.raw]
        if with_phonetic:
            row.append(u.phonetic)
        if with_spans:
            row += ["" if t is None else f"{t:.3f}" for t in (u.start, u.end)]
        writer.writerow(row)
    return buffer.getvalue()


def _has_spans(utterances: Sequence[Utterance]) -> bool:
    if isinstance(utterances, UtteranceTable):
        return utterances.has_spans
    return any(u.start is not None for u in utterances)


def _has_phonetic(utterances: Sequence[Utterance]) -> bool:
    if isinstance(utterances, UtteranceTable):
        return utterances.has_phonetic  # no row built
    return any(u.phonetic for u in utterances)


def write_manifest(path: Path, utterances: Iterable[Utterance]) -> None:
    """Write atomically: a killed `prepare` never leaves a truncated CSV behind."""
    atomic_write_text(path, manifest_text(utterances))


REJECT_COLUMNS = ("source", "line", "path", "reason", "set")


def write_rejects(path: Path, rejects: Sequence[Reject], set_name: str = "") -> None:
    """One row per skipped input, so nothing is dropped without a trace.

    One file for every prepared set: this prepare's rows (tagged with `set_name`) replace only
    its own earlier rows, so preparing another set never erases an earlier record.
    """
    kept: list[list[str]] = []
    if Path(path).is_file():
        with Path(path).open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle, delimiter="\t")
            if "set" in (reader.fieldnames or []):
                kept = [
                    [row.get(c) or "" for c in REJECT_COLUMNS]
                    for row in reader
                    if row.get("set") != set_name
                ]
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow(REJECT_COLUMNS)
    writer.writerows(kept)
    for r in rejects:
        writer.writerow((r.source, r.line, r.path, r.reason, set_name))
    atomic_write_text(path, buffer.getvalue())


def split_utterances(
    utterances: Sequence[Utterance], test_ratio: float, seed: int
) -> tuple[list[Utterance], list[Utterance]]:
    """Seeded train/test split; each side keeps the input order so reruns write identical files.

    The split is over audio files, not rows: rows that share a file land on the same side, so
    no recording is trained on and tested on at once.
    """
    if not 0.0 <= test_ratio < 1.0:
        raise DataError(f"data.test_ratio must be in [0, 1); got {test_ratio}")
    files = list(dict.fromkeys(u.path for u in utterances))
    count = len(files)
    test_count = round(count * test_ratio)
    if test_ratio > 0 and count >= 2:
        test_count = min(max(test_count, 1), count - 1)
    order = list(range(count))
    random.Random(seed).shuffle(order)
    test_files = {files[i] for i in order[:test_count]}
    train = [u for u in utterances if u.path not in test_files]
    test = [u for u in utterances if u.path in test_files]
    return train, test
