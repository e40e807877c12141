"""`pefty prepare`: KsponSpeech scripts, a folder of audio + transcripts, or a CSV -> manifests.

Every input line becomes an utterance or a reject with its file, line and reason; one bad line in
100,000 never stops the run. Outputs are deterministic (input order, seeded split) and written
atomically, so re-running gives identical files.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from pefty_whisper.config import DataSection, NormalizeMode
from pefty_whisper.data.audio import AUDIO_SUFFIXES, probe_audio
from pefty_whisper.data.kspon import (
    normalize_sides,
    normalize_transcript,
)
from pefty_whisper.data.manifest import (
    Manifest,
    Reject,
    Utterance,
    round_manifest_name,
    split_utterances,
    write_manifest,
    write_rejects,
)
from pefty_whisper.data.sources import (
    Entry,
    entries_from_csv,
    entries_from_kspon_txt,
    entries_from_trn,
    entries_from_trn_files,
    entry_from_sibling_txt,
    find_scripts_dir,
)
from pefty_whisper.errors import ConfigError, DataError, PeftyError

logger = logging.getLogger(__name__)

T = TypeVar("T")
# The CLI passes a progress bar here; library code never writes to the terminal itself.
Track = Callable[[Sequence[T], str], Iterable[T]]

REJECTS_FILE = "prepare_rejects.tsv"
DUPLICATE_REASON = "audio file listed again (the first listing is kept)"
SET_NAME = re.compile(r"[^\W_][\w.-]*")
# Threads hide file-system latency when probing hundreds of thousands of files (cold cache,
# NFS, HDD): a probe waits on an inode and a data block, and waiting threads free the GIL.
PROBE_THREADS = 16
PROBE_BATCH = 256  # entries per task
SPAN_SLACK_S = 0.05  # a span's end may pass the file's by rounding, not by more


@dataclass
class PrepareReport:
    out_dir: Path
    manifests: dict[str, Manifest] = field(default_factory=dict)
    rejects: list[Reject] = field(default_factory=list)
    odd_byte_files: int = 0
    over_max_duration: int = 0
    rejects_path: Path | None = None
    set_name: str = ""  # the rejects record's rows of this prepare are tagged with it
    duplicates: int = 0
    first_duplicate: str = ""  # "file:line repeats file:line"
    outside_root: int = 0  # audio paths outside the data root (absolute, or `..`)
    first_outside: str = ""
    fully_rejected: list[str] = field(default_factory=list)  # scripts none of whose lines passed

    @property
    def num_utterances(self) -> int:
        return sum(len(m.utterances) for m in self.manifests.values())

    def reject_counts(self) -> Counter[str]:
        return Counter(r.reason for r in self.rejects)


def no_progress(items: Sequence[T], label: str) -> Iterable[T]:
    return items


def prepare_kspon(
    root: Path,
    out_dir: Path,
    data: DataSection,
    scripts_dir: Path | None = None,
    track: Track = no_progress,
) -> PrepareReport:
    """Write the per-round CSVs, dev.csv, eval_clean.csv and eval_other.csv from a KsponSpeech root.

    Uses the official `.trn` scripts when present, else the per-utterance CP949 `.txt` files.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: KsponSpeech root not found (pass --root /path/to/KsponSpeech)")
    scripts = scripts_dir or find_scripts_dir(root)
    if scripts is not None:
        entries = entries_from_trn_files(root, scripts)
    else:
        logger.info("no .trn scripts under %s: reading per-utterance .txt transcripts", root)
        entries = entries_from_kspon_txt(root)
    if not entries:
        raise DataError(
            f"{root}: no KsponSpeech utterances found (expected scripts/train.trn or "
            "KsponSpeech_0N/KsponSpeech_XXXX/*.pcm with .txt transcripts)"
        )
    report = PrepareReport(out_dir=Path(out_dir), set_name="kspon")
    groups = _check_entries(entries, data, data.normalize, report, track, data_root=root)
    if scripts is not None and not any(g.startswith("part") for g in groups):
        train = [e for e in entries if Path(e.source).name == "train.trn"]
        if train:
            raise DataError(
                f"{train[0].source}: every training line was rejected, so no round has data; "
                + _reject_example(report, train[0].source)
            )
    for group, utterances in sorted(groups.items()):
        if group.startswith("part"):
            part = int(group.removeprefix("part"))
            train, test = split_utterances(utterances, data.test_ratio, data.split_seed + part)
            _add_manifest(report, round_manifest_name(part, "train"), train)
            _add_manifest(report, round_manifest_name(part, "test"), test)
        else:
            _add_manifest(report, group, utterances)
    _write_outputs(report)
    return report


def prepare_folder(
    src: Path,
    out_dir: Path,
    name: str,
    data: DataSection,
    normalize: NormalizeMode,
    split: bool = False,
    track: Track = no_progress,
) -> PrepareReport:
    """A folder of audio files with transcripts (sibling .txt, or .trn scripts) -> data/NAME.csv."""
    src = Path(src)
    if not src.is_dir():
        raise DataError(f"{src}: folder not found")
    trn_files = sorted(src.rglob("*.trn"))
    if trn_files:
        entries = [e for trn in trn_files for e in entries_from_trn(src, trn, lambda _: name)]
    else:
        entries = [
            entry_from_sibling_txt(src, audio, name)
            for audio in sorted(p for p in src.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        ]
    if not entries:
        raise DataError(f"{src}: no audio files ({', '.join(AUDIO_SUFFIXES)}) found")
    return _prepare_named(entries, out_dir, name, data, normalize, split, track, src)


def prepare_csv(
    src: Path,
    out_dir: Path,
    name: str,
    data: DataSection,
    normalize: NormalizeMode,
    split: bool = False,
    track: Track = no_progress,
) -> PrepareReport:
    """A user's CSV (path/audio/file + sentence/text/transcript columns) -> data/NAME.csv."""
    check_set_name(name)
    entries = entries_from_csv(Path(src), name)
    return _prepare_named(entries, out_dir, name, data, normalize, split, track, Path(src).parent)


def prepare_hf(
    source: str,
    out_dir: Path,
    name: str,
    data: DataSection,
    normalize: NormalizeMode,
    audio_dir: Path,
    dataset_split: str | None = None,
    config_name: str | None = None,
    audio_column: str | None = None,
    text_column: str | None = None,
    holdout: bool = False,
    track: Track = no_progress,
) -> PrepareReport:
    """A Hugging Face `datasets` corpus -> data/NAME.csv (see data/hf.py for what it reads).

    Audio a row holds as bytes is written into `audio_dir`; `holdout` splits NAME_train/NAME_test.
    """
    from pefty_whisper.data import hf

    check_set_name(name)
    dataset = hf.load_hf_dataset(source, dataset_split, config_name)
    audio = hf.audio_column(dataset, audio_column)
    text = hf.text_column(dataset, text_column)
    logger.info("%s: %d rows, audio from %r, text from %r", source, len(dataset), audio, text)
    entries = [
        Entry(source, row.index + 1, str(row.audio or ""), row.text, name, row.error)
        for row in hf.hf_rows(dataset, audio, text, audio_dir)
    ]
    if not entries:
        raise DataError(f"{source}: the dataset has no rows")
    return _prepare_named(entries, out_dir, name, data, normalize, holdout, track)


def _prepare_named(
    entries: list[Entry],
    out_dir: Path,
    name: str,
    data: DataSection,
    normalize: NormalizeMode,
    split: bool,
    track: Track,
    data_root: Path | None = None,
) -> PrepareReport:
    check_set_name(name)
    report = PrepareReport(out_dir=Path(out_dir), set_name=name)
    utterances = _check_entries(entries, data, normalize, report, track, data_root).get(name, [])
    if split:
        train, test = split_utterances(utterances, data.test_ratio, data.split_seed)
        _add_manifest(report, f"{name}_train", train)
        _add_manifest(report, f"{name}_test", test)
    else:
        _add_manifest(report, name, utterances)
    _write_outputs(report)
    return report


def _check_entries(
    entries: list[Entry],
    data: DataSection,
    normalize: NormalizeMode,
    report: PrepareReport,
    track: Track,
    data_root: Path | None = None,
) -> dict[str, list[Utterance]]:
    """Normalize every transcript and probe every audio file; returns utterances by group.

    An audio file listed twice is kept once (a split could otherwise put copies on both
    sides); the repeats are rejects. Paths outside `data_root` are counted for the summary.
    """
    groups: dict[str, list[Utterance]] = {}
    first_seen: dict[tuple[str, float | None], Entry] = {}  # by (file, start): spans differ
    kept_by_source: Counter[str] = Counter()
    with ThreadPoolExecutor(PROBE_THREADS) as pool:
        results = _map_in_chunks(pool, lambda e: _check_entry(e, data, normalize), entries)
        for entry, (utterance, reason, odd) in zip(
            track(entries, "checking audio"), results, strict=True
        ):
            key = None if utterance is None else (utterance.path, utterance.start)
            if key is not None and key in first_seen:
                first = first_seen[key]
                report.duplicates += 1
                if not report.first_duplicate:
                    report.first_duplicate = (
                        f"{entry.source}:{entry.line} repeats {first.source}:{first.line}"
                    )
                utterance, reason = None, DUPLICATE_REASON
            if utterance is None:
                report.rejects.append(Reject(entry.source, entry.line, str(entry.audio), reason))
                continue
            first_seen[(utterance.path, utterance.start)] = entry
            kept_by_source[entry.source] += 1
            _count_outside(report, entry, data_root)
            report.odd_byte_files += odd
            if utterance.duration is not None and utterance.duration > data.max_duration_s:
                report.over_max_duration += 1
            groups.setdefault(entry.group, []).append(utterance)
    report.fully_rejected = sorted({e.source for e in entries} - set(kept_by_source))
    return groups


def _count_outside(report: PrepareReport, entry: Entry, data_root: Path | None) -> None:
    if data_root is None:
        return
    # Plain strings: a Path pair per entry costs seconds over 600,000 lines.
    audio, root = os.path.abspath(entry.audio), os.path.abspath(data_root)
    if audio != root and not audio.startswith(root.rstrip(os.sep) + os.sep):
        report.outside_root += 1
        if not report.first_outside:
            report.first_outside = f"{entry.source}:{entry.line}: {audio}"


def check_set_name(name: str) -> None:
    """NAME becomes data/NAME.csv: a plain file name, never a path (`../x`, `/tmp/x`)."""
    if not SET_NAME.fullmatch(name) or ".." in name:
        raise ConfigError(
            f"--name {name!r} must be a plain name (letters, digits, _ - .), not a path: "
            "it becomes data/NAME.csv"
        )


def _map_in_chunks(
    pool: ThreadPoolExecutor, function: Callable[[Entry], T], entries: Sequence[Entry]
) -> Iterable[T]:
    """`function` over every entry, in order, a batch per task: one future per 600,000 entries
    costs more than the probes themselves, and a bounded window keeps memory flat."""
    batches = [entries[i : i + PROBE_BATCH] for i in range(0, len(entries), PROBE_BATCH)]
    window = PROBE_THREADS * 4
    for start in range(0, len(batches), window):
        for results in pool.map(
            lambda batch: [function(e) for e in batch], batches[start : start + window]
        ):
            yield from results


def _check_entry(
    entry: Entry, data: DataSection, normalize: NormalizeMode
) -> tuple[Utterance | None, str, bool]:
    if entry.error or entry.raw is None:
        return None, entry.error, False
    if normalize == "spelling":
        # The phonetic side rides along for scoring (metrics.py); one parse gives both.
        sides = normalize_sides(entry.raw)
        sentence, phonetic = sides.spelling, sides.phonetic
    else:
        # In `phonetic` mode the sentence is that side already, and `raw` text is not normalized.
        sentence, phonetic = normalize_transcript(entry.raw, normalize), ""
    if not sentence:
        return None, "empty transcript after normalization", False
    try:
        info = probe_audio(entry.audio)
    except DataError as exc:
        return None, str(exc).removeprefix(f"{Path(entry.audio)}: "), False
    duration = info.duration_s
    stem = os.path.splitext(os.path.basename(entry.audio))[0]
    if entry.start is not None and entry.end is not None:
        if entry.end > info.duration_s + SPAN_SLACK_S:
            return None, f"end {entry.end:g} s is past the file's {info.duration_s:.2f} s", False
        duration, stem = entry.end - entry.start, f"{stem}-{entry.start:g}s"
    if duration < data.min_duration_s:
        return None, f"shorter than data.min_duration_s ({data.min_duration_s} s)", False
    utterance = Utterance(
        path=_absolute(entry.audio),
        sentence=sentence,
        duration=round(duration, 3),
        id=stem,
        raw=entry.raw,
        phonetic=phonetic,
        start=entry.start,
        end=entry.end,
    )
    return utterance, "", info.odd_byte_count


def _absolute(audio: str) -> str:
    """The absolute path with its folders' symlinks resolved (once per folder, not per file:
    resolving each of 600,000 paths is a walk of lstat calls)."""
    folder, name = os.path.split(os.path.abspath(audio))
    return os.path.join(_real_folder(folder), name)


@functools.lru_cache(maxsize=4096)
def _real_folder(folder: str) -> str:
    return os.path.realpath(folder)


def _add_manifest(report: PrepareReport, name: str, utterances: list[Utterance]) -> None:
    report.manifests[name] = Manifest(path=report.out_dir / f"{name}.csv", utterances=utterances)


def _write_outputs(report: PrepareReport) -> None:
    if not any(m.utterances for m in report.manifests.values()):
        raise PeftyError(
            f"every input line was rejected ({_reject_summary(report)}); nothing written; "
            + _reject_example(report)
        )
    for manifest in report.manifests.values():
        write_manifest(manifest.path, manifest.utterances)
    report.rejects_path = report.out_dir / REJECTS_FILE
    write_rejects(report.rejects_path, report.rejects, report.set_name)
    logger.info("%d utterances written, %d rejected", report.num_utterances, len(report.rejects))


def _reject_summary(report: PrepareReport) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in report.reject_counts().most_common())


def _reject_example(report: PrepareReport, source: str | None = None) -> str:
    """One resolved example and the hints that fit it: what a user needs to fix a whole file."""
    rejects = [r for r in report.rejects if source is None or r.source == source]
    if not rejects:
        return "no lines to show"
    first = rejects[0]
    hints = []
    if first.reason == "audio file not found":
        hints.append(
            "relative paths are resolved against the CSV's folder (a .trn's: the corpus root)"
        )
    if "\\" in first.path:
        hints.append("write paths with / (Windows \\ separators are read as /)")
    where = f"{first.source}:{first.line}"
    hint = f" ({'; '.join(hints)})" if hints else ""
    return f"e.g. {where}: {first.path or '(no path)'}: {first.reason}{hint}"
