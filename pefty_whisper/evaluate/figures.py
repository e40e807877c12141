"""The figures of one decode: every scoring protocol and subset with its bootstrap interval, and
the per-utterance TSV they can all be recomputed from.

Published KsponSpeech figures differ in protocol (docs/scoring.md), so one decode is scored
under each of metrics.PROTOCOLS; a figure on 40 or 3,000 utterances carries its 95% interval
(intervals.py); digits, Latin letters and duration buckets get their own figures (subsets.py).
The TSV keeps, per utterance, the normalized references (both sides), the duration and each
protocol's edit counts, so `read_counts` gives back exactly what the record's figures were
drawn from, and compare.py pairs two evaluations utterance by utterance.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pefty_whisper.data.manifest import Utterance
from pefty_whisper.errors import DataError
from pefty_whisper.intervals import CONFIDENCE, RESAMPLES, bootstrap_rates
from pefty_whisper.metrics import (
    PROTOCOLS,
    Protocol,
    ProtocolCounts,
    ProtocolScores,
    normalize_for_scoring,
    score_protocols,
)
from pefty_whisper.subsets import subset_figures, subset_masks
from pefty_whisper.workspace import BootstrapSettings, RateFigure

logger = logging.getLogger(__name__)

SUBSET_PROTOCOL: Protocol = "kspon"  # the subsets' figures are the primary CER's
# Each protocol's per-utterance (errors, reference length) columns in the TSV. kspon's and
# wer's are the columns TSVs had before protocols existed, so old TSVs still pair on them.
PROTOCOL_COLUMNS: dict[Protocol, tuple[str, str]] = {
    "kspon": ("char_errors", "reference_chars"),
    "kspon-phonetic": ("phonetic_char_errors", "phonetic_reference_chars"),
    "dual": ("dual_char_errors", "dual_reference_chars"),
    "spaces": ("char_errors_with_spaces", "reference_chars_with_spaces"),
    "wer": ("word_errors", "reference_words"),
}
TSV_COLUMNS = (
    "id",
    "reference",
    "hypothesis",
    "char_errors",
    "substitutions",
    "deletions",
    "insertions",
    "reference_chars",
    "word_errors",
    "reference_words",
    "phonetic",  # the pronunciation side, normalized; "" where the utterance has none
    "duration",  # seconds, "" where the manifest had none: the duration buckets
    "phonetic_char_errors",
    "phonetic_reference_chars",
    "dual_char_errors",
    "dual_reference_chars",
    "dual_side",  # spelling or phonetic: the side `dual` scored the utterance against
    "char_errors_with_spaces",
    "reference_chars_with_spaces",
)


@dataclass(frozen=True, eq=False)  # eq=False: numpy arrays have no single truth value
class DecodeCounts:
    """Per-utterance counts of one decode, in manifest order: what every figure is made of."""

    ids: tuple[str, ...]
    references: tuple[str, ...]  # normalized spelling side: the subsets' digits and letters
    durations: np.ndarray  # float64 seconds, NaN where unknown
    counts: dict[Protocol, ProtocolCounts]  # the protocols the TSV holds, in PROTOCOLS order
    path: Path | None = None  # the TSV it was read from

    @property
    def num_utterances(self) -> int:
        return len(self.ids)

    def masks(self) -> dict[str, np.ndarray]:
        """The subsets' masks (subsets.py) without `all`, which is the protocol's own figure."""
        masks = subset_masks(self.references, self.durations)
        masks.pop("all")
        return masks


@dataclass(frozen=True, eq=False)
class DecodeFigures:
    """One decode's figures: each protocol's and each subset's rate with its interval."""

    counts: DecodeCounts
    protocols: dict[str, RateFigure]
    subsets: dict[str, RateFigure]
    bootstrap: BootstrapSettings

    @property
    def primary(self) -> RateFigure:
        return self.protocols[SUBSET_PROTOCOL]


def decode_counts(
    utterances: Sequence[Utterance],
    scores: ProtocolScores,
    durations: Sequence[float] | None = None,
) -> DecodeCounts:
    """The counts of a decode scored with metrics.score_protocols, with the manifest's ids and
    durations; `durations` (the decoded audio's seconds) stands in where the manifest has none."""
    seconds = [
        u.duration
        if u.duration is not None
        else (durations[i] if durations is not None else math.nan)
        for i, u in enumerate(utterances)
    ]
    return DecodeCounts(
        ids=tuple(u.id for u in utterances),
        references=tuple(u.reference for u in scores.spelling.utterances),
        durations=np.array(seconds, dtype=np.float64),
        counts={c.protocol: c for c in scores.counts},
    )


def score_decode(
    utterances: Sequence[Utterance],
    hypotheses: Sequence[str],
    *,
    durations: Sequence[float] | None = None,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> tuple[ProtocolScores, DecodeFigures]:
    """Score a decode under every protocol and draw every figure's interval; `durations` are
    the decoded audio's seconds, for utterances the manifest gives none."""
    scores = score_protocols(
        [u.sentence for u in utterances], hypotheses, [u.phonetic for u in utterances]
    )
    counts = decode_counts(utterances, scores, durations)
    return scores, figures_of(counts, resamples=resamples, seed=seed)


def figures_of(counts: DecodeCounts, *, resamples: int = RESAMPLES, seed: int = 0) -> DecodeFigures:
    """Each protocol's figure and each subset's, with seeded bootstrap intervals: the record's
    figures from a decode's counts, or the same figures again from its TSV."""
    columns = list(counts.counts.values())
    # One draw of the utterances for every protocol: the same intervals as one draw each.
    intervals = bootstrap_rates(
        [(c.errors, c.reference_lengths) for c in columns], resamples=resamples, seed=seed
    )
    protocols = {
        column.protocol: RateFigure(
            rate=interval.value,
            low=interval.low,
            high=interval.high,
            errors=int(column.errors.sum()),
            reference_length=int(column.reference_lengths.sum()),
            units=len(column.errors),
        )
        for column, interval in zip(columns, intervals, strict=True)
    }
    primary = counts.counts[SUBSET_PROTOCOL]
    subsets = {
        figure.name: RateFigure(
            rate=figure.rate,
            low=figure.interval.low,
            high=figure.interval.high,
            errors=figure.errors,
            reference_length=figure.reference_length,
            units=figure.utterances,
        )
        for figure in subset_figures(
            primary.errors,
            primary.reference_lengths,
            counts.masks(),
            resamples=resamples,
            seed=seed,
        )
    }
    settings = BootstrapSettings(resamples=resamples, seed=seed, confidence=CONFIDENCE)
    return DecodeFigures(counts, protocols, subsets, settings)


def per_utterance_tsv(
    utterances: Sequence[Utterance], scores: ProtocolScores, durations: np.ndarray
) -> str:
    """One row per utterance: the texts as scored, the seconds the duration buckets used
    (DecodeCounts.durations) and every protocol's edit counts."""
    # (errors, reference length) per utterance and protocol, as plain ints for the writer.
    pairs = {
        name: np.stack([scores[name].errors, scores[name].reference_lengths], axis=1).tolist()
        for name in PROTOCOLS
    }
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow(TSV_COLUMNS)
    for index, (utterance, score) in enumerate(
        zip(utterances, scores.spelling.utterances, strict=True)
    ):
        c = score.chars
        phonetic = normalize_for_scoring(utterance.phonetic) if utterance.phonetic else ""
        writer.writerow(
            (
                utterance.id,
                score.reference,
                score.hypothesis,
                c.errors,
                c.substitutions,
                c.deletions,
                c.insertions,
                c.reference_length,
                *pairs["wer"][index],
                phonetic,
                "" if math.isnan(durations[index]) else f"{durations[index]:.3f}",
                *pairs["kspon-phonetic"][index],
                *pairs["dual"][index],
                "phonetic" if scores.dual_took_phonetic[index] else "spelling",
                *pairs["spaces"][index],
            )
        )
    return buffer.getvalue()


def read_counts(path: Path) -> DecodeCounts:
    """A per-utterance TSV read back into counts. A TSV written before protocols existed holds
    kspon's and wer's columns only; the other protocols are then absent."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: per-utterance TSV not found: run `pefty evaluate` again")
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        header = set(reader.fieldnames or ())
        if not {"id", "reference", *PROTOCOL_COLUMNS[SUBSET_PROTOCOL]} <= header:
            raise DataError(
                f"{path}: not a per-utterance TSV of `pefty evaluate` (no id, reference, "
                "char_errors and reference_chars columns)"
            )
        present = [p for p in PROTOCOLS if set(PROTOCOL_COLUMNS[p]) <= header]
        ids, references, durations = [], [], []
        values: dict[str, list[int]] = {col: [] for p in present for col in PROTOCOL_COLUMNS[p]}
        for line, row in enumerate(reader, start=2):
            ids.append(row["id"])
            references.append(row["reference"] or "")
            durations.append(_duration(row.get("duration"), path, line))
            for name, column in values.items():
                column.append(_count(row.get(name), path, line, name))
    if not ids:
        raise DataError(f"{path}: no utterances: run `pefty evaluate` again")
    counts = {}
    for protocol in present:
        errors, lengths = PROTOCOL_COLUMNS[protocol]
        counts[protocol] = ProtocolCounts(
            protocol,
            np.array(values[errors], dtype=np.int64),
            np.array(values[lengths], dtype=np.int64),
        )
    return DecodeCounts(
        tuple(ids), tuple(references), np.array(durations, dtype=np.float64), counts, path
    )


def _count(text: str | None, path: Path, line: int, column: str) -> int:
    try:
        value = int(text or "")
    except ValueError:
        value = -1
    if value < 0:
        raise DataError(f"{path}:{line}: {column} is not a count ({text!r})")
    return value


def _duration(text: str | None, path: Path, line: int) -> float:
    if not text:
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise DataError(f"{path}:{line}: duration is not a number ({text!r})") from None
