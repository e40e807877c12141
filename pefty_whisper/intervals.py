"""How far to trust an error rate: bootstrap intervals over utterances, and paired comparisons.

A CER near 8% on KsponSpeech's 3,000 eval utterances is known to about ±0.4 points, and on a
demo's 40 sentences to several points (DESIGN.md section 11), so a figure is reported with its
95% interval and two systems are compared on the same utterances (a paired bootstrap), never by
their figures alone. The corpus rate is sum(errors) / sum(reference lengths), not a mean of
per-utterance rates, so resampling draws whole utterances and recomputes that ratio.

The same functions take per-recording counts: a long-form figure scored one recording at a
time is resampled over recordings, and `group_counts` sums utterance counts into recordings (or
conversations) when neighbouring utterances are too alike to count as independent draws.
numpy only; no model code.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

logger = logging.getLogger(__name__)

RESAMPLES = 1000
CONFIDENCE = 0.95
# Indices drawn per block: 1,000 resamples of 3,000 utterances is one block (about 36 MB of
# indices and draw counts); larger sets are drawn in blocks so memory stays flat.
_BLOCK_DRAWS = 4_000_000

Verdict = Literal["better", "worse", "no clear difference"]


@dataclass(frozen=True)
class RateInterval:
    """An error rate in percent with its bootstrap interval (percentile method)."""

    value: float  # the rate of the set itself, not the mean of the resamples
    low: float
    high: float
    resamples: int
    seed: int
    confidence: float = CONFIDENCE

    @property
    def half_width(self) -> float:
        """Half the interval's width: the `±` figure (percentile intervals need not be
        symmetric; `low` and `high` are the exact bounds)."""
        return (self.high - self.low) / 2

    def format(self, digits: int = 1) -> str:
        """`9.9% ±1.2`: the figure and its uncertainty in one cell of a table."""
        return f"{self.value:.{digits}f}% ±{self.half_width:.{digits}f}"

    def __str__(self) -> str:
        return self.format()


@dataclass(frozen=True)
class PairedComparison:
    """System B against system A on the same utterances: B - A in points, with its interval.

    `better` means B has the lower error rate and the interval of the difference lies below 0;
    `worse` means it lies above 0; otherwise the data cannot tell them apart.
    """

    rate_a: float  # percent
    rate_b: float
    difference: float  # rate_b - rate_a, in points
    low: float
    high: float
    verdict: Verdict
    resamples: int
    seed: int
    confidence: float = CONFIDENCE

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def format(self, digits: int = 1) -> str:
        """`-3.0 points [-3.4, -2.6]: better`."""
        return (
            f"{self.difference:+.{digits}f} points "
            f"[{self.low:+.{digits}f}, {self.high:+.{digits}f}]: {self.verdict}"
        )

    def __str__(self) -> str:
        return self.format()


@dataclass(frozen=True, eq=False)  # eq=False: numpy arrays have no single truth value
class GroupCounts:
    """Counts summed per group (recording, conversation, speaker), in first-seen order."""

    groups: tuple[str, ...]
    errors: np.ndarray  # int64, one per group
    reference_lengths: np.ndarray


def bootstrap_rate(
    errors: Sequence[int] | np.ndarray,
    reference_lengths: Sequence[int] | np.ndarray,
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> RateInterval:
    """The rate sum(errors)/sum(reference_lengths) in percent with its bootstrap interval.

    Each resample draws as many units (utterances, or recordings) as there are, with
    replacement; the same seed gives the same interval.
    """
    columns = _columns("bootstrap_rate", errors, reference_lengths)
    _check_options(resamples, confidence)
    sums = _resampled_sums(columns, resamples, seed)
    rates = _percent(sums[0], sums[1])
    low, high = _bounds(rates, confidence)
    value = float(_percent(columns[0].sum(), columns[1].sum()))
    return RateInterval(value, low, high, resamples, seed, confidence)


def bootstrap_rates(
    counts: Sequence[tuple[Sequence[int] | np.ndarray, Sequence[int] | np.ndarray]],
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> tuple[RateInterval, ...]:
    """Several rates over the same units (one decode under every protocol) from one draw:
    each interval equals `bootstrap_rate` on its own counts with the same seed, at the cost of
    one resampling instead of one per rate."""
    flat = [array for pair in counts for array in pair]
    columns = _columns("bootstrap_rates", *flat)
    _check_options(resamples, confidence)
    sums = _resampled_sums(columns, resamples, seed)
    intervals = []
    for index in range(0, len(flat), 2):
        low, high = _bounds(_percent(sums[index], sums[index + 1]), confidence)
        value = float(_percent(columns[index].sum(), columns[index + 1].sum()))
        intervals.append(RateInterval(value, low, high, resamples, seed, confidence))
    return tuple(intervals)


def paired_bootstrap(
    errors_a: Sequence[int] | np.ndarray,
    errors_b: Sequence[int] | np.ndarray,
    reference_lengths: Sequence[int] | np.ndarray,
    *,
    reference_lengths_b: Sequence[int] | np.ndarray | None = None,
    resamples: int = RESAMPLES,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> PairedComparison:
    """B - A in points, resampling the utterances both systems decoded (the same draw for both).

    Pairing removes the spread that comes from which utterances happen to be in the set, so a
    difference far smaller than either system's own interval can still be clear.
    `reference_lengths_b` is for protocols whose reference depends on the hypothesis (`dual`
    picks a side per utterance); by default both systems share `reference_lengths`.
    """
    lengths_b = reference_lengths if reference_lengths_b is None else reference_lengths_b
    columns = _columns("paired_bootstrap", errors_a, reference_lengths, errors_b, lengths_b)
    _check_options(resamples, confidence)
    sums = _resampled_sums(columns, resamples, seed)
    differences = _percent(sums[2], sums[3]) - _percent(sums[0], sums[1])
    low, high = _bounds(differences, confidence)
    rate_a = float(_percent(columns[0].sum(), columns[1].sum()))
    rate_b = float(_percent(columns[2].sum(), columns[3].sum()))
    verdict: Verdict = "better" if high < 0 else "worse" if low > 0 else "no clear difference"
    return PairedComparison(
        rate_a, rate_b, rate_b - rate_a, low, high, verdict, resamples, seed, confidence
    )


def group_counts(
    errors: Sequence[int] | np.ndarray,
    reference_lengths: Sequence[int] | np.ndarray,
    groups: Sequence[str],
) -> GroupCounts:
    """Sum utterance counts per group, so `bootstrap_rate` can resample whole recordings.

    Utterances of one conversation share a speaker, a topic and a channel; resampling them one
    by one treats them as independent and gives too narrow an interval when they are not.
    """
    columns = _columns("group_counts", errors, reference_lengths)
    if len(groups) != columns.shape[1]:
        raise ValueError(f"{columns.shape[1]} utterances but {len(groups)} group labels")
    names, first, inverse = np.unique(np.asarray(groups, dtype=str), True, True)
    order = np.argsort(first, kind="stable")  # first-seen order, as the manifest lists them
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    slot = rank[inverse.reshape(-1)]
    return GroupCounts(
        groups=tuple(str(name) for name in names[order]),
        errors=np.bincount(slot, weights=columns[0], minlength=len(order)).astype(np.int64),
        reference_lengths=np.bincount(slot, weights=columns[1], minlength=len(order)).astype(
            np.int64
        ),
    )


def _columns(caller: str, *arrays: Sequence[int] | np.ndarray) -> np.ndarray:
    """The count arrays as rows of one int64 matrix, checked: 1-D, equal length, >= 0."""
    rows = [np.asarray(a) for a in arrays]
    lengths = {row.shape for row in rows}
    if any(row.ndim != 1 for row in rows) or len(lengths) != 1:
        shapes = ", ".join(str(row.shape) for row in rows)
        raise ValueError(f"{caller}: counts must be 1-D arrays of one length, got {shapes}")
    if rows[0].size == 0:
        raise ValueError(f"{caller}: no utterances to resample")
    matrix = np.stack(rows).astype(np.int64)
    if (matrix < 0).any():
        raise ValueError(f"{caller}: counts must not be negative")
    return matrix


def _check_options(resamples: int, confidence: float) -> None:
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def _resampled_sums(columns: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Each column's sum over `resamples` draws of n units with replacement: shape (k, resamples).

    A block of resamples is one index matrix from the seeded generator, turned into how often
    each unit was drawn (one bincount) and multiplied by the columns: no Python loop over
    resamples, and k columns cost one product, not k gathers. The same seed, n and `resamples`
    give the same sums.
    """
    units = columns.shape[1]
    rng = np.random.default_rng(seed)
    sums = np.empty((columns.shape[0], resamples), dtype=np.int64)
    block = max(1, _BLOCK_DRAWS // units)
    for start in range(0, resamples, block):
        rows = min(resamples, start + block) - start
        # int32 indices draw about 4x faster than int64; rows * units stays below 2**31.
        indices = rng.integers(0, units, size=(rows, units), dtype=np.int32)
        indices += (np.arange(rows, dtype=np.int32) * units)[:, None]
        draws = np.bincount(indices.ravel(), minlength=rows * units).reshape(rows, units)
        sums[:, start : start + rows] = (draws @ columns.T).T
    return sums


def _percent(errors: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Errors over length in percent, elementwise; as metrics.py, text against nothing is 100%."""
    errors, lengths = np.asarray(errors, dtype=np.float64), np.asarray(lengths, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        rates = 100.0 * errors / lengths
    return np.where(lengths > 0, rates, np.where(errors > 0, 100.0, 0.0))


def _bounds(values: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return float(low), float(high)
