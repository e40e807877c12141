"""Several training sets in one round, each at its share of the epoch: keep a slice of general data.

A model tuned on KsponSpeech alone forgets other Korean speech (a whisper-base tuned that way got
worse on Common Voice ko and FLEURS ko); mixing a share of such a set into every round is the
usual remedy. The round's own set (the first) is seen whole, once per epoch; every other set
contributes `share x epoch` examples, drawn without repeats until that set runs out (a small set
at a large share is repeated, a large one is sampled). The draw is made once per round (a round
of several epochs sees the same rows of a sampled set each epoch) and seeded, so every process of
a multi-GPU run and a resumed run see the same epoch; round.json records what was drawn.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from pefty_whisper.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

SHARE_TOLERANCE = 1e-6
R = TypeVar("R")


@dataclass(frozen=True)
class MixEntry:
    """One `--train NAME[:share]` (or `data.mix`) entry, before the name becomes a path."""

    name: str
    share: float | None = None  # of each epoch's examples; None: a part of what is left

    @classmethod
    def parse(cls, text: str) -> MixEntry:
        """`cv_ko_train:0.1` -> (cv_ko_train, 0.1); `data/x.csv` -> (data/x.csv, None)."""
        text = text.strip()
        name, sep, tail = text.rpartition(":")
        if not sep or not name:
            return cls(text)
        try:
            share = float(tail)
        except ValueError:
            return cls(text)  # a colon that is part of the name
        if not 0 < share <= 1:
            raise ConfigError(
                f"training set '{text}': the share must be in (0, 1], e.g. {name}:0.1 for a "
                "tenth of each epoch"
            )
        return cls(name.strip(), share)


@dataclass(frozen=True)
class TrainSet:
    """A training manifest of a round and the share of each epoch asked for it."""

    path: Path
    share: float | None = None


def check_distinct(sets: Sequence[TrainSet]) -> None:
    """A set listed twice (`--train` and `data.mix`) would be drawn twice: refuse it."""
    paths = [s.path for s in sets]
    repeated = next((p for p in paths if paths.count(p) > 1), None)
    if repeated is not None:
        raise ConfigError(f"training set {repeated} is listed twice (--train and data.mix)")


def resolve_shares(given: Sequence[float | None], sizes: Sequence[int]) -> list[float]:
    """Every set's share of the epoch: the ones given, and the rest split by set size.

    Shares given for every set must add up to 1; otherwise they must leave something for the
    sets without one.
    """
    total = sum(s for s in given if s is not None)
    open_sets = [i for i, s in enumerate(given) if s is None]
    if not open_sets:
        if abs(total - 1.0) > SHARE_TOLERANCE:
            raise ConfigError(
                f"the training sets' shares add up to {total:g}, not 1: fix them, or leave the "
                "round's own set without a share to give it the rest"
            )
        return [float(s) for s in given if s is not None]
    rest = 1.0 - total
    if rest <= SHARE_TOLERANCE:
        raise ConfigError(
            f"the shares given add up to {total:g}, leaving nothing for "
            f"{len(open_sets)} set(s) without one: lower them"
        )
    open_size = sum(sizes[i] for i in open_sets)
    shares = [0.0 if s is None else float(s) for s in given]
    for i in open_sets:
        shares[i] = rest * (sizes[i] / open_size if open_size else 1 / len(open_sets))
    return shares


def plan_draws(sizes: Sequence[int], shares: Sequence[float], seed: int) -> list[np.ndarray]:
    """The rows of each set in one epoch: the first set whole, the others at their shares.

    Each pass over a set is in corpus order (neighbours stay neighbours, as packing wants);
    the loader's sampler shuffles the epoch.
    """
    if not sizes or sizes[0] == 0:
        raise ConfigError("the round's own training set has no usable utterances")
    epoch = sizes[0] / shares[0]
    rng = np.random.default_rng(seed)
    draws = [np.arange(sizes[0], dtype=np.int64)]
    for size, share in zip(sizes[1:], shares[1:], strict=True):
        count = round(share * epoch)
        if size == 0 or count == 0:
            draws.append(np.zeros(0, dtype=np.int64))
            continue
        passes, rest = divmod(count, size)
        parts = [np.arange(size, dtype=np.int64)] * passes
        parts.append(np.sort(rng.permutation(size)[:rest]))
        draws.append(np.concatenate(parts))
    return draws


class MixedDataset(torch.utils.data.Dataset):
    """One epoch over several datasets: item i is row `rows[i]` of dataset `sources[i]`.

    Two int arrays index the epoch, so the datasets themselves (and their columns) are shared,
    not copied, by the loader's workers.
    """

    def __init__(
        self, parts: Sequence[Any], draws: Sequence[np.ndarray], shares: Sequence[float]
    ) -> None:
        self.parts = list(parts)
        self.shares = list(shares)
        self.sources = np.concatenate(
            [np.full(len(d), i, dtype=np.int32) for i, d in enumerate(draws)]
        )
        self.rows = np.concatenate(list(draws)).astype(np.int64, copy=False)
        self.drawn = [len(d) for d in draws]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Any:
        return self.parts[int(self.sources[index])][int(self.rows[index])]

    def with_draws(self, records: Sequence[R]) -> list[R]:
        """The parts' records (dataclasses with `share` and `drawn`) with this epoch's mix."""
        return [
            dataclasses.replace(record, share=round(share, 6), drawn=drawn)
            for record, share, drawn in zip(records, self.shares, self.drawn, strict=True)
        ]

    @property
    def durations(self) -> list[float]:
        """Seconds per item, for batching by length (the parts' own durations, as drawn)."""
        per_part = [np.asarray(p.durations, dtype=np.float64) for p in self.parts]
        return np.concatenate(
            [per_part[i][self.rows[self.sources == i]] for i in range(len(self.parts))]
        ).tolist()


def mix_datasets(parts: Sequence[Any], sets: Sequence[TrainSet], seed: int) -> MixedDataset:
    """The epoch of a round that trains on several sets (see the module docstring)."""
    sizes = [len(p) for p in parts]
    empty = next((s.path for s, size in zip(sets, sizes, strict=True) if size == 0), None)
    if empty is not None:
        raise DataError(f"{empty}: no usable utterances to train on")
    shares = resolve_shares([s.share for s in sets], sizes)
    dataset = MixedDataset(parts, plan_draws(sizes, shares, seed), shares)
    for size, share, drawn in zip(sizes, shares, dataset.drawn, strict=True):
        logger.info("training set: %d of %d utterances per epoch (share %.3f)", drawn, size, share)
    return dataset
