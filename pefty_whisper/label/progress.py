"""A labelling's progress: append-only JSON lines, one file per rank, flushed after every batch.

A killed `pefty label` loses at most the batch it was decoding: the next run reads every
progress file in the work folder (whatever the world size then), skips the inputs marked done
and the utterances already written, and appends. A trailing half-written line (a kill during a
write) is ignored. The settings a labelling started with are kept beside the progress; a run
with other settings would mix two labellings, so it is refused.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from pefty_whisper.errors import PeftyError
from pefty_whisper.files import atomic_write_text
from pefty_whisper.label.filters import Decoded

__all__ = ["Progress", "ProgressLog", "check_settings"]

logger = logging.getLogger(__name__)

SETTINGS_FILE = "settings.json"
PROGRESS_GLOB = "progress-*.jsonl"


def check_settings(work_dir: Path, settings: dict[str, Any], name: str) -> bool:
    """Write the settings of a new labelling, or check a resumed one's; True when resuming."""
    path = work_dir / SETTINGS_FILE
    if not path.is_file():
        work_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(settings, indent=2, ensure_ascii=False) + "\n")
        return False
    before = json.loads(path.read_text(encoding="utf-8"))
    changed = sorted(k for k in {*before, *settings} if before.get(k) != settings.get(k))
    if changed:
        key = changed[0]
        raise PeftyError(
            f"{work_dir}: an unfinished labelling of '{name}' was started with {key}="
            f"{before.get(key)!r}, now {settings.get(key)!r}: rerun with the same settings to "
            f"resume it, or remove {work_dir} to start over"
        )
    return True


class Progress:
    """What every progress file of a work folder holds: finished inputs and decoded rows."""

    def __init__(self, work_dir: Path) -> None:
        self.done: dict[int, int] = {}  # input -> its number of utterances
        self.rows: dict[tuple[int, int], Decoded] = {}
        for path in sorted(work_dir.glob(PROGRESS_GLOB)):
            for line in _lines(path):
                if "done" in line:
                    self.done[int(line["input"])] = int(line["done"])
                else:
                    row = Decoded(**line)
                    self.rows[(row.input, row.segment)] = row

    def rows_of(self, index: int) -> list[Decoded]:
        count = self.done[index]
        missing = [k for k in range(count) if (index, k) not in self.rows]
        if missing:
            raise PeftyError(
                f"input {index}: utterance {missing[0]} is marked done but has no row: the "
                "progress is damaged; rerun with --force"
            )
        return [self.rows[(index, k)] for k in range(count)]


def _lines(path: Path) -> Iterable[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.endswith("\n"):
                logger.info("%s:%d: a half-written line (a killed run): ignored", path, number)
                return
            yield json.loads(text)


class ProgressLog:
    """This rank's append-only progress file."""

    def __init__(self, work_dir: Path, rank: int) -> None:
        self.path = work_dir / f"progress-{rank}.jsonl"
        _drop_partial_tail(self.path)
        self.handle: IO[str] = self.path.open("a", encoding="utf-8")

    def rows(self, rows: Iterable[Decoded]) -> None:
        for row in rows:
            self.handle.write(json.dumps(asdict(row), ensure_ascii=False) + "\n")

    def done(self, index: int, count: int) -> None:
        self.handle.write(json.dumps({"input": index, "done": count}) + "\n")

    def flush(self) -> None:
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def _drop_partial_tail(path: Path) -> None:
    """Cut a half-written last line, so appended lines start on a line of their own."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)
