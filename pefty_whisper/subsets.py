"""Subsets that one corpus figure hides: utterances with digits or Latin letters, and by length.

Digits and Latin letters are where the KsponSpeech spelling side and the spoken form part
(`3시` said `세 시`, `KBS` said `케이 비 에스`), and very short or very long utterances are where
Whisper's errors concentrate, so a CER is reported per subset too, each with its bootstrap
interval (intervals.py). A subset is a boolean mask over the set's utterances; its figure is
computed from the per-utterance counts of any protocol (metrics.ProtocolCounts).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pefty_whisper.intervals import CONFIDENCE, RESAMPLES, RateInterval, bootstrap_rate

logger = logging.getLogger(__name__)

# Seconds where the duration buckets part: <2 s, 2-5 s, 5-10 s, >=10 s.
DURATION_EDGES_S = (2.0, 5.0, 10.0)
# `\d` is every Unicode decimal digit (fullwidth `３` too); Latin letters, fullwidth included.
_DIGIT = re.compile(r"\d")
_LATIN = re.compile(r"[A-Za-z\uff21-\uff3a\uff41-\uff5a]")


@dataclass(frozen=True)
class SubsetFigure:
    """One subset's error rate: its totals and its interval (`interval.value` is the rate)."""

    name: str  # "digits", "no digits", "<2 s", ...
    utterances: int
    errors: int
    reference_length: int
    interval: RateInterval

    @property
    def rate(self) -> float:
        return self.interval.value


def has_digits(text: str) -> bool:
    return _DIGIT.search(text) is not None


def has_latin(text: str) -> bool:
    return _LATIN.search(text) is not None


def subset_masks(
    references: Sequence[str],
    durations: Sequence[float | None] | np.ndarray | None = None,
    edges_s: Sequence[float] = DURATION_EDGES_S,
) -> dict[str, np.ndarray]:
    """Boolean masks over the utterances, by name, in the order a table would list them.

    `references` are the spelling side (the manifest's `sentence`): the phonetic side never
    holds digits. Each pair (`digits`/`no digits`, `latin`/`no latin`) and the duration buckets
    partition the set; utterances of unknown duration (None or NaN) fall in `duration unknown`,
    which is listed only when there are some.
    """
    masks = {"all": np.ones(len(references), dtype=bool)}
    digits = np.array([has_digits(text) for text in references], dtype=bool)
    latin = np.array([has_latin(text) for text in references], dtype=bool)
    masks.update({"digits": digits, "no digits": ~digits, "latin": latin, "no latin": ~latin})
    if durations is not None:
        masks.update(duration_masks(durations, edges_s))
    return masks


def duration_masks(
    durations: Sequence[float | None] | np.ndarray, edges_s: Sequence[float] = DURATION_EDGES_S
) -> dict[str, np.ndarray]:
    """`<2 s`, `2-5 s`, `5-10 s`, `>=10 s` (for the default edges), plus `duration unknown`."""
    seconds = np.array([np.nan if d is None else d for d in durations], dtype=np.float64)
    edges = [float(edge) for edge in edges_s]
    if not edges or any(a >= b for a, b in zip(edges[:-1], edges[1:], strict=True)):
        raise ValueError(f"duration edges must be increasing and not empty, got {edges_s}")
    known = ~np.isnan(seconds)
    labels = [_edge_label(edge) for edge in edges]
    masks = {f"<{labels[0]} s": known & (seconds < edges[0])}
    for index in range(1, len(edges)):
        name = f"{labels[index - 1]}-{labels[index]} s"
        masks[name] = known & (seconds >= edges[index - 1]) & (seconds < edges[index])
    masks[f">={labels[-1]} s"] = known & (seconds >= edges[-1])
    if not known.all():
        masks["duration unknown"] = ~known
    return masks


def _edge_label(seconds: float) -> str:
    """An edge as a label writes it: `2`, `2.5`."""
    return f"{seconds:g}"


def subset_figures(
    errors: Sequence[int] | np.ndarray,
    reference_lengths: Sequence[int] | np.ndarray,
    masks: Mapping[str, np.ndarray],
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> tuple[SubsetFigure, ...]:
    """Each non-empty subset's rate and interval, from one protocol's per-utterance counts.

    An empty subset (no utterance with Latin letters in a small set) is left out: a rate over
    nothing is not a figure. Every subset is resampled on its own with the same seed.
    """
    errors = np.asarray(errors, dtype=np.int64)
    lengths = np.asarray(reference_lengths, dtype=np.int64)
    if errors.shape != lengths.shape or errors.ndim != 1:
        raise ValueError(f"{errors.shape} error counts but {lengths.shape} reference lengths")
    figures = []
    for name, mask in masks.items():
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != errors.shape:
            raise ValueError(f"subset {name!r}: mask of {mask.shape} for {errors.shape} counts")
        if not mask.any():
            logger.debug("subset %r is empty: no figure", name)
            continue
        interval = bootstrap_rate(
            errors[mask], lengths[mask], resamples=resamples, seed=seed, confidence=confidence
        )
        figures.append(
            SubsetFigure(
                name=name,
                utterances=int(mask.sum()),
                errors=int(errors[mask].sum()),
                reference_length=int(lengths[mask].sum()),
                interval=interval,
            )
        )
    return tuple(figures)
