"""Where `pefty prepare`'s lines come from: KsponSpeech's .trn scripts (or its per-utterance
CP949 .txt files), a folder of audio with transcripts beside it, or a CSV. Each input line
becomes an Entry with its file and line, checked and normalized by prepare.py."""

from __future__ import annotations

import csv
import io
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pefty_whisper.data.kspon import parse_trn_line, read_cp949_transcript
from pefty_whisper.data.manifest import row_span
from pefty_whisper.errors import DataError

logger = logging.getLogger(__name__)

KSPON_TRN_FILES = ("train.trn", "dev.trn", "eval_clean.trn", "eval_other.trn")


# Where KsponSpeech distributions put the .trn scripts, relative to the corpus root.
KSPON_SCRIPT_DIRS = ("scripts", "KsponSpeech_scripts", ".")


# Training audio lives in KsponSpeech_0N/KsponSpeech_XXXX/; folders 0621-0623 are the dev set.
PART_PATTERN = re.compile(r"KsponSpeech_0([1-5])(?:[/\\]|$)")


FOLDER_PATTERN = re.compile(r"KsponSpeech_(\d{4})$")


FIRST_DEV_FOLDER = 621


CSV_PATH_COLUMNS = ("path", "audio", "audio_path", "file", "filename")


CSV_TEXT_COLUMNS = ("sentence", "text", "transcript", "transcription")


@dataclass(frozen=True, slots=True)
class Entry:
    """One input line, before its audio is checked and its transcript normalized.

    Plain strings and slots: KsponSpeech has 628,545 lines, and a Path per line costs more
    memory (and time) than the rest of the entry.
    """

    source: str
    line: int
    audio: str  # "" when the line names none
    raw: str | None  # None: the transcript could not be read (see error)
    group: str  # the manifest it belongs to, e.g. "part1", "dev", "eval_clean"
    error: str = ""
    # seconds into the audio file, for a CSV line with start/end columns; None: the whole file
    start: float | None = None
    end: float | None = None


def find_scripts_dir(root: Path) -> Path | None:
    for candidate in KSPON_SCRIPT_DIRS:
        folder = root / candidate
        if any((folder / name).is_file() for name in KSPON_TRN_FILES):
            return folder
    return None


def entries_from_trn_files(root: Path, scripts: Path) -> list[Entry]:
    present = [scripts / name for name in KSPON_TRN_FILES if (scripts / name).is_file()]
    if not present:
        raise DataError(f"{scripts}: none of {', '.join(KSPON_TRN_FILES)} found")
    for name in KSPON_TRN_FILES:
        if not (scripts / name).is_file():
            logger.warning("%s not found: skipping it", scripts / name)
    entries: list[Entry] = []
    for trn in present:
        if trn.name == "train.trn":
            entries.extend(entries_from_trn(root, trn, _part_group))
        else:
            entries.extend(entries_from_trn(root, trn, lambda _, group=trn.stem: group))
    return entries


def _part_group(audio_path: str) -> str:
    match = PART_PATTERN.search(audio_path)
    return f"part{match.group(1)}" if match else ""


def entries_from_trn(root: Path, trn: Path, group_of: Callable[[str], str]) -> list[Entry]:
    """Parse a `.trn` file line by line: a bad line (not UTF-8, no `::`) is a reject, no crash."""
    entries = []
    source, root_text = str(trn), str(root)  # one string shared by every entry of the file
    for line_no, text in _trn_lines(trn):
        if text is None:
            entries.append(Entry(source, line_no, "", None, "", "line is not UTF-8"))
            continue
        if not text:
            continue
        try:
            parsed = parse_trn_line(text, trn, line_no)
        except DataError:
            entries.append(Entry(source, line_no, "", None, "", "no ' :: ' between path and text"))
            continue
        audio_path = _posix_path(parsed.audio_path)
        group = group_of(audio_path)
        error = "" if group else "path is not under KsponSpeech_01..05"
        audio = os.path.join(root_text, audio_path)
        entries.append(Entry(source, line_no, audio, parsed.transcript, group, error))
    return entries


def _trn_lines(trn: Path) -> list[tuple[int, str | None]]:
    """(line number, text) of a script; None for a line that cannot be decoded.

    The scripts are UTF-8; a script re-saved in CP949 (as the corpus's .txt files are) is read
    as CP949 when no line of it is UTF-8 Korean and every line decodes that way. A script that
    mixes both keeps its UTF-8 lines and rejects the rest.
    """
    raw = trn.read_bytes().splitlines()
    utf8 = [_decode(line, "utf-8") for line in raw]
    if any(text is None for text in utf8) and not any(
        text is not None and not text.isascii() for text in utf8
    ):
        cp949 = [_decode(line, "cp949") for line in raw]
        if all(text is not None for text in cp949):
            logger.warning("%s is not UTF-8: read as CP949 (re-save it as UTF-8)", trn)
            utf8 = cp949
    return [(i, None if t is None else t.strip()) for i, t in enumerate(utf8, start=1)]


def _decode(line: bytes, encoding: str) -> str | None:
    try:
        return line.decode(encoding)
    except UnicodeDecodeError:
        return None


def _posix_path(text: str) -> str:
    """Windows `\\` separators (a script or CSV made on Windows) read as `/`."""
    return text.replace("\\", "/") if os.sep == "/" else text


def entries_from_kspon_txt(root: Path) -> list[Entry]:
    entries = []
    for audio in sorted(root.glob("KsponSpeech_0[1-5]/KsponSpeech_*/*.pcm")):
        folder = FOLDER_PATTERN.search(audio.parent.name)
        is_dev = folder is not None and int(folder.group(1)) >= FIRST_DEV_FOLDER
        group = "dev" if is_dev else _part_group(audio.relative_to(root).as_posix())
        entries.append(entry_from_sibling_txt(root, audio, group))
    for group in ("eval_clean", "eval_other"):
        for audio in sorted(root.glob(f"KsponSpeech_eval/{group}/*.pcm")):
            entries.append(entry_from_sibling_txt(root, audio, group))
    return entries


def entry_from_sibling_txt(root: Path, audio: Path, group: str) -> Entry:
    transcript = audio.with_suffix(".txt")
    source = str(transcript)
    if not transcript.is_file():
        return Entry(source, 1, str(audio), None, group, "transcript .txt not found")
    try:
        return Entry(source, 1, str(audio), read_cp949_transcript(transcript), group)
    except DataError:
        return Entry(source, 1, str(audio), None, group, "transcript is neither CP949 nor UTF-8")


def entries_from_csv(src: Path, group: str) -> list[Entry]:
    if not src.is_file():
        raise DataError(f"{src}: CSV not found")
    try:
        text = src.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{src}: not UTF-8 text (save the CSV as UTF-8)") from exc
    reader = csv.DictReader(io.StringIO(text))
    columns = reader.fieldnames or []
    path_column = next((c for c in CSV_PATH_COLUMNS if c in columns), None)
    text_column = next((c for c in CSV_TEXT_COLUMNS if c in columns), None)
    if path_column is None or text_column is None:
        wanted = CSV_PATH_COLUMNS if path_column is None else CSV_TEXT_COLUMNS
        raise DataError(
            f"{src}: no {'audio path' if path_column is None else 'transcript'} column "
            f"(one of {', '.join(wanted)}); found: {', '.join(columns) or 'none'}"
        )
    entries = []
    for row in reader:
        audio_text = _posix_path((row.get(path_column) or "").strip())
        audio = Path(audio_text) if Path(audio_text).is_absolute() else src.parent / audio_text
        error = "" if audio_text else "empty path"
        span = row_span(row)  # a line may point into a long recording (data/manifest.py)
        if isinstance(span, str):
            error, span = error or span, (None, None)
        entries.append(
            Entry(
                str(src),
                reader.line_num,
                str(audio),
                row.get(text_column) or "",
                group,
                error,
                *span,
            )  # fmt: skip
        )
    return entries
