"""A round's augmentation: the config's `augment:` section wired into the training set, the
model and round.json.

Waveform transforms (data/augment.py) run per utterance in the loader's workers, each training
set holding a `LoaderAugment` (a mix's parts apart by index range); a Trainer callback writes
the epoch to the memory those workers share; SpecAugment is a switch on the model config,
which transformers applies in training mode only. round.json records what ran: the counts are
drawn again in the training process from the same seeds, without audio.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from pefty_whisper.config import AugmentSection
from pefty_whisper.data.audio import SAMPLE_RATE
from pefty_whisper.data.augment import (
    Augmenter,
    AugmentTally,
    LoaderAugment,
    spec_augment_overrides,
)
from pefty_whisper.data.features import SpeechDataset
from pefty_whisper.data.mixing import MixedDataset
from pefty_whisper.data.packing import WINDOW_S, PackedDataset, PackedSets

if TYPE_CHECKING:
    from transformers import TrainerCallback

logger = logging.getLogger(__name__)


def loader_augment(section: AugmentSection) -> LoaderAugment | None:
    """The training sets' augmentation, or None when no waveform transform is on. Made once,
    before the loader forks its workers (the epoch it holds is shared with them)."""
    augmenter = Augmenter(section)
    if not augmenter.active:
        return None
    return LoaderAugment(augmenter, max_samples=int(WINDOW_S * SAMPLE_RATE))


def attach_augment(dataset: Any, augment: LoaderAugment | None) -> None:
    """Give each part of a round's training set its augmentation (validation gets none)."""
    if augment is None:
        return
    for part, leaf in enumerate(_leaves(dataset)):
        leaf.augment = augment.part(part)


def apply_spec_augment(model: Any, section: AugmentSection) -> None:
    """SpecAugment on (or explicitly off) for the model a round trains: a base merged from a
    round that masked would otherwise pass its switch on (spec_augment_overrides)."""
    for key, value in spec_augment_overrides(section).items():
        setattr(model.config, key, value)
    if section.spec_augment:
        logger.info(
            "SpecAugment: time masks %.2f x %d frames, feature masks %.2f x %d bins",
            section.mask_time_prob,
            section.mask_time_length,
            section.mask_feature_prob,
            section.mask_feature_length,
        )


def epoch_callbacks(augment: LoaderAugment | None) -> list[TrainerCallback]:
    """The callback that tells the workers which epoch begins (none without augmentation)."""
    if augment is None:
        return []
    from transformers import TrainerCallback

    class _AugmentEpoch(TrainerCallback):
        def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            # state.epoch is the epochs done so far: a whole number at an epoch's start, and
            # after a resume mid-epoch the epoch being resumed.
            augment.set_epoch(int(state.epoch + 1e-6))

    return [_AugmentEpoch()]


def augment_record(section: AugmentSection, dataset: Any, epochs: float) -> dict[str, Any] | None:
    """round.json's `augment`: SpecAugment's switch and, for the waveform transforms, how many
    utterances each epoch the round began held and how often each op ran over them (the same
    draws the workers made). None when nothing was on."""
    leaves = [leaf for leaf in _leaves(dataset) if leaf.augment is not None]
    if not section.spec_augment and not leaves:
        return None
    record: dict[str, Any] = {"spec_augment": section.spec_augment}
    if leaves:
        passes = max(1, math.ceil(epochs - 1e-6))
        tally = AugmentTally()
        for epoch in range(passes):
            for leaf in leaves:
                for row in _augmented_rows(leaf, dataset):
                    tally.add(leaf.augment.plan(int(row), epoch).ops)
        record |= {"passes": passes, **tally.as_dict()}
    return record


def _leaves(dataset: Any) -> list[Any]:
    """The datasets that load audio: a mix's parts, a packed mix's passes, or the set itself."""
    if isinstance(dataset, MixedDataset):
        return list(dataset.parts)
    if isinstance(dataset, PackedSets):
        return list(dataset.datasets)
    if isinstance(dataset, SpeechDataset | PackedDataset):
        return [dataset]
    raise TypeError(f"not a training set: {type(dataset).__name__}")


def _augmented_rows(leaf: Any, dataset: Any) -> Iterator[int]:
    """The rows `leaf` loads in one epoch, as often as it loads them."""
    if isinstance(leaf, PackedDataset):
        for window in leaf.plan.windows:
            yield from window.members  # no-speech windows have none
    elif isinstance(dataset, MixedDataset):
        part = dataset.parts.index(leaf)
        yield from dataset.rows[dataset.sources == part].tolist()
    else:
        yield from np.arange(len(leaf)).tolist()
