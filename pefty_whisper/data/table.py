"""Utterances in memory: a manifest's rows as a few numpy columns instead of one object per row.

A training set of 124,000 utterances as Python objects is about 600,000 objects, and every
forked loader worker copies the pages it reads them from (reading an object writes its
reference count, and the garbage collector walks them all). Columns are a handful of objects
over flat buffers, which the workers read without writing, so the pages stay shared; an
`Utterance` is built only for the row asked for.
"""

from __future__ import annotations

import array
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Utterance:
    path: str  # absolute, or relative to the manifest's directory in the file
    sentence: str  # the normalized Whisper target
    duration: float | None = None  # seconds; kept so batches can be grouped by length
    id: str = ""
    raw: str = ""  # the transcript before normalization, for auditing
    # The pronunciation side of KsponSpeech's `(3시)/(세 시)` parts, "" where the utterance has
    # none: a second reference for scoring (metrics.py), never a training target.
    phonetic: str = ""
    # Seconds into `path` where the utterance begins and ends (a row that points into a long
    # recording, as `pefty label` writes); None: the whole file.
    start: float | None = None
    end: float | None = None

    @property
    def span(self) -> tuple[float | None, float | None]:
        """(start, end) as `load_audio` takes them."""
        return self.start, self.end


class StringColumn:
    """Strings as one UTF-8 buffer and row offsets: two objects however many rows."""

    __slots__ = ("data", "offsets")

    def __init__(self, data: np.ndarray, offsets: np.ndarray) -> None:
        self.data = data  # uint8, every row's UTF-8 bytes back to back
        self.offsets = offsets  # int64, len(rows) + 1: row i is data[offsets[i]:offsets[i + 1]]

    @classmethod
    def from_strings(cls, strings: Iterable[str]) -> StringColumn:
        builder = _StringBuilder()
        for text in strings:
            builder.append(text)
        return builder.build()

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> str:
        start, stop = self.offsets[index], self.offsets[index + 1]
        return self.data[start:stop].tobytes().decode("utf-8")

    def slice(self, start: int, stop: int) -> list[str]:
        """Rows start..stop as str (for tokenizing a chunk at a time)."""
        return [self[i] for i in range(start, stop)]

    def take(self, indices: np.ndarray) -> StringColumn:
        """The rows at `indices`, in that order, as a new column."""
        builder = _StringBuilder()
        data, offsets = self.data, self.offsets
        for index in indices.tolist():
            builder.append_bytes(data[offsets[index] : offsets[index + 1]].tobytes())
        return builder.build()

    @staticmethod
    def concat(columns: Sequence[StringColumn]) -> StringColumn:
        if not columns:
            return StringColumn.from_strings(())
        shifts = np.cumsum([0] + [len(c.data) for c in columns[:-1]])
        offsets = [columns[0].offsets[:1]] + [
            c.offsets[1:] + shift for c, shift in zip(columns, shifts, strict=True)
        ]
        return StringColumn(np.concatenate([c.data for c in columns]), np.concatenate(offsets))

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes + self.offsets.nbytes)


class _StringBuilder:
    """Appends rows without keeping a Python object per row."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.offsets = array.array("q", [0])

    def append(self, text: str) -> None:
        self.append_bytes(text.encode("utf-8"))

    def append_bytes(self, data: bytes) -> None:
        self.buffer += data
        self.offsets.append(len(self.buffer))

    def build(self) -> StringColumn:
        data = np.frombuffer(bytes(self.buffer), dtype=np.uint8)
        return StringColumn(data, np.frombuffer(self.offsets, dtype=np.int64).copy())


class UtteranceTable(Sequence[Utterance]):
    """A manifest's utterances as columns; indexing builds the `Utterance` of one row.

    Reads like a list of Utterance (len, index, slice, iterate), so code that takes a sequence
    of utterances takes a table too; the loader reads `path(i)` and `sentence(i)` directly.
    """

    def __init__(
        self,
        paths: StringColumn,
        sentences: StringColumn,
        durations: np.ndarray,
        ids: StringColumn,
        raws: StringColumn,
        phonetics: StringColumn | None = None,
        starts: np.ndarray | None = None,
        ends: np.ndarray | None = None,
    ) -> None:
        self.paths = paths
        self.sentences = sentences
        self.durations = durations  # float64 seconds, NaN where the manifest has none
        self.ids = ids
        self.raws = raws
        # None: every row's phonetic form is "" (an empty column is still an offset per row).
        self.phonetics = phonetics if phonetics is not None else _empty_column(len(durations))
        # float64 seconds into the file, NaN for a row that is the whole file
        self.starts = starts if starts is not None else _no_times(len(durations))
        self.ends = ends if ends is not None else _no_times(len(durations))

    @classmethod
    def from_utterances(cls, utterances: Iterable[Utterance]) -> UtteranceTable:
        if isinstance(utterances, UtteranceTable):
            return utterances
        builder = TableBuilder()
        for u in utterances:
            builder.append(u.path, u.sentence, u.duration, u.id, u.raw, u.phonetic, u.start, u.end)
        return builder.build()

    def __len__(self) -> int:
        return len(self.durations)

    @overload
    def __getitem__(self, index: int) -> Utterance: ...
    @overload
    def __getitem__(self, index: slice) -> UtteranceTable: ...
    def __getitem__(self, index: int | slice) -> Utterance | UtteranceTable:
        if isinstance(index, slice):
            return self.take(np.arange(len(self))[index])
        count = len(self)
        if not -count <= index < count:
            raise IndexError(f"utterance {index} out of range ({count} rows)")
        index %= count
        return Utterance(
            path=self.paths[index],
            sentence=self.sentences[index],
            duration=self.duration(index),
            id=self.ids[index],
            raw=self.raws[index],
            phonetic=self.phonetics[index],
            start=_seconds(self.starts[index]),
            end=_seconds(self.ends[index]),
        )

    def __iter__(self) -> Iterator[Utterance]:
        for index in range(len(self)):
            yield self[index]

    def path(self, index: int) -> str:
        return self.paths[index]

    def sentence(self, index: int) -> str:
        return self.sentences[index]

    def phonetic(self, index: int) -> str:
        return self.phonetics[index]

    def span(self, index: int) -> tuple[float | None, float | None]:
        """(start, end) of a row in its file, as `load_audio` takes them; (None, None): all."""
        return _seconds(self.starts[index]), _seconds(self.ends[index])

    @property
    def has_spans(self) -> bool:
        """Whether any row points into a longer file (the manifest then has start/end)."""
        return bool(len(self.starts)) and not bool(np.isnan(self.starts).all())

    @property
    def has_phonetic(self) -> bool:
        """Whether any row has a phonetic form (one comparison, no row decoded)."""
        return bool(self.phonetics.offsets[-1] > 0)

    def duration(self, index: int) -> float | None:
        value = float(self.durations[index])
        return None if np.isnan(value) else value

    def durations_or_zero(self) -> np.ndarray:
        """Seconds per row, 0 where unknown (batching by length treats those as short)."""
        return np.nan_to_num(self.durations, nan=0.0)

    def take(self, indices: Sequence[int] | np.ndarray) -> UtteranceTable:
        """The rows at `indices`, in that order."""
        indices = np.asarray(indices, dtype=np.int64)
        return UtteranceTable(
            self.paths.take(indices),
            self.sentences.take(indices),
            self.durations[indices],
            self.ids.take(indices),
            self.raws.take(indices),
            self.phonetics.take(indices),
            self.starts[indices],
            self.ends[indices],
        )

    @staticmethod
    def concat(tables: Sequence[UtteranceTable]) -> UtteranceTable:
        return UtteranceTable(
            StringColumn.concat([t.paths for t in tables]),
            StringColumn.concat([t.sentences for t in tables]),
            np.concatenate([t.durations for t in tables]) if tables else np.zeros(0),
            StringColumn.concat([t.ids for t in tables]),
            StringColumn.concat([t.raws for t in tables]),
            StringColumn.concat([t.phonetics for t in tables]),
            np.concatenate([t.starts for t in tables]) if tables else np.zeros(0),
            np.concatenate([t.ends for t in tables]) if tables else np.zeros(0),
        )

    @property
    def nbytes(self) -> int:
        """Bytes held by the columns (what a worker would otherwise copy)."""
        columns = (self.paths, self.sentences, self.ids, self.raws, self.phonetics)
        arrays = (self.durations, self.starts, self.ends)
        return sum(c.nbytes for c in columns) + sum(int(a.nbytes) for a in arrays)


class TableBuilder:
    """Builds a table row by row (reading a CSV) without a Python object per row."""

    def __init__(self) -> None:
        self.columns = [_StringBuilder() for _ in range(5)]
        self.durations = array.array("d")
        self.starts = array.array("d")
        self.ends = array.array("d")

    def append(
        self,
        path: str,
        sentence: str,
        duration: float | None,
        id: str,
        raw: str,
        phonetic: str = "",
        start: float | None = None,
        end: float | None = None,
    ) -> None:
        for column, text in zip(self.columns, (path, sentence, id, raw, phonetic), strict=True):
            column.append(text)
        self.durations.append(float("nan") if duration is None else duration)
        self.starts.append(float("nan") if start is None else start)
        self.ends.append(float("nan") if end is None else end)

    def __len__(self) -> int:
        return len(self.durations)

    def build(self) -> UtteranceTable:
        paths, sentences, ids, raws, phonetics = (c.build() for c in self.columns)
        times = (self.durations, self.starts, self.ends)
        durations, starts, ends = (np.frombuffer(a, dtype=np.float64).copy() for a in times)
        return UtteranceTable(paths, sentences, durations, ids, raws, phonetics, starts, ends)


def _seconds(value: float) -> float | None:
    value = float(value)
    return None if value != value else value  # NaN: none


def _no_times(rows: int) -> np.ndarray:
    return np.full(rows, np.nan)


def _empty_column(rows: int) -> StringColumn:
    return StringColumn(np.zeros(0, dtype=np.uint8), np.zeros(rows + 1, dtype=np.int64))
