"""Named evaluation conditions: `telephone`, `noise-babble-10db`, `speed-0.9`, ... applied to
the evaluation audio, seeded per utterance, so a round is scored under a channel or a voice it
never trained on (`pefty evaluate --condition telephone`, kept apart as eval_clean@telephone).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from pefty_whisper.config import NOISE_KINDS, AugmentSection
from pefty_whisper.config.validation import RANGES
from pefty_whisper.data.audio import load_audio
from pefty_whisper.data.augment import (
    add_noise,
    apply_gain,
    list_noise_files,
    make_noise,
    speed_perturb,
    telephone,
)
from pefty_whisper.data.table import Utterance
from pefty_whisper.errors import ConfigError

__all__ = [
    "CONDITION_FORMS",
    "Condition",
    "ConditionStep",
    "ConditionedAudio",
    "apply_condition",
    "parse_condition",
]

_CONDITION_STREAM = 1_000  # apply_condition's steps, apart from training's (epoch, index) keys
BABBLE_NEIGHBOURS = 2  # babble's talkers: the utterances this many rows either side


CONDITION_FORMS = (
    "clean, telephone, speed-<factor> (speed-0.9), noise-<snr>db (white noise, noise-10db), "
    f"noise-<kind>-<snr>db (kind: {', '.join(NOISE_KINDS)}; noise-babble-5db), quiet-<db>db, "
    "loud-<db>db, or several joined with + and applied left to right (telephone+noise-10db)"
)


_NUMBER = r"(-?\d+(?:\.\d+)?)"


_CONDITION_WORDS = ("clean", "telephone", "speed", "noise", "quiet", "loud")


@dataclass(frozen=True)
class ConditionStep:
    """One transform of a named condition."""

    transform: Literal["clean", "telephone", "speed", "noise", "gain"]
    value: float = 0.0  # the speed factor, SNR (dB) or gain (dB)
    noise: str = ""  # the noise kind


@dataclass(frozen=True)
class Condition:
    """A named evaluation condition: the same degradation of a test set for every model."""

    name: str
    steps: tuple[ConditionStep, ...]


def parse_condition(name: str) -> Condition:
    """`telephone+noise-babble-10db` -> its steps; a bad name is a one-line ConfigError naming
    it and the valid forms."""
    steps = tuple(_parse_step(name, part) for part in name.split("+"))
    return Condition(name, steps)


def _parse_step(name: str, part: str) -> ConditionStep:
    step: ConditionStep | None = None
    key, hint = "", _closest(part.split("-")[0], _CONDITION_WORDS)
    if part in ("clean", "telephone"):
        step = ConditionStep(part)  # type: ignore[arg-type]
    elif match := re.fullmatch(rf"speed-{_NUMBER}", part):
        step, key = ConditionStep("speed", float(match[1])), "augment.speed"
    elif match := re.fullmatch(rf"noise-(?:([a-z]+)-)?{_NUMBER}db", part):
        kind = match[1] or "white"
        if kind in NOISE_KINDS:
            step, key = ConditionStep("noise", float(match[2]), kind), "augment.noise_snr_db"
        hint = _closest(kind, NOISE_KINDS)
    elif match := re.fullmatch(rf"(quiet|loud)-{_NUMBER}db", part):
        db = float(match[2])
        step, key = ConditionStep("gain", -db if match[1] == "quiet" else db), "augment.gain_db"
    if step is None:
        where = f" (at '{part}')" if part != name else ""
        raise ConfigError(
            f"Unknown evaluation condition '{name}'{where}.{hint} Use {CONDITION_FORMS}"
        )
    bounds = RANGES.get(key)
    if bounds is not None and not bounds.allows(step.value):
        raise ConfigError(
            f"Evaluation condition '{name}': the value of '{part}' must be {bounds.text()}"
        )
    return step


def _closest(word: str, choices: Sequence[str]) -> str:
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" Did you mean '{match[0]}'?" if match and match[0] != word else ""


def apply_condition(
    audio: np.ndarray,
    condition: str | Condition,
    seed: int,
    others: Sequence[np.ndarray] = (),
    noise_files: Sequence[str] = (),
) -> np.ndarray:
    """`audio` under a named condition. Pass the utterance's row in its set as `seed`, so every
    model, round and backend hears the same noise. `others` are babble's talkers (without them:
    the utterance reversed); `noise_files` come from `list_noise_files` for kind file."""
    if isinstance(condition, str):
        condition = parse_condition(condition)
    for position, step in enumerate(condition.steps):
        rng = np.random.default_rng(
            np.random.SeedSequence(seed, spawn_key=(_CONDITION_STREAM, position))
        )
        if step.transform == "telephone":
            audio = telephone(audio)
        elif step.transform == "speed":
            audio = speed_perturb(audio, step.value)
        elif step.transform == "noise":
            noise = make_noise(step.noise, audio, rng, others, noise_files)
            audio = add_noise(audio, noise, step.value)
        elif step.transform == "gain":
            audio = apply_gain(audio, step.value)
    return audio


class ConditionedAudio:
    """A set's audio under a condition, row by row, as evaluation loads it: row i seeded by i,
    babble made of its neighbouring rows (other talkers of the same set), recordings from
    augment.noise_dir. Checked when made, so a bad name or a missing noise folder fails before
    a model loads."""

    def __init__(
        self,
        rows: Sequence[str | Utterance],
        condition: str | Condition,
        augment: AugmentSection,
    ) -> None:
        # A manifest's rows (a row may be a span of its file) or plain file paths.
        self.rows = [Utterance(r, "") if isinstance(r, str) else r for r in rows]
        self.condition = parse_condition(condition) if isinstance(condition, str) else condition
        kinds = {step.noise for step in self.condition.steps if step.transform == "noise"}
        self.noise_files: tuple[str, ...] = ()
        if "file" in kinds:
            if augment.noise_dir is None:
                raise ConfigError(
                    f"Evaluation condition '{self.condition.name}' draws noise recordings: "
                    "set 'augment.noise_dir' to a folder of .wav/.flac "
                    "(-o augment.noise_dir=musan/noise)"
                )
            self.noise_files = list_noise_files(augment.noise_dir)
        self.babble = "babble" in kinds

    def __call__(self, row: int) -> np.ndarray:
        others: list[np.ndarray] = []
        if self.babble:
            near = range(max(0, row - BABBLE_NEIGHBOURS), row + BABBLE_NEIGHBOURS + 1)
            others = [self._load(i) for i in near if i != row and i < len(self.rows)]
        return apply_condition(self._load(row), self.condition, row, others, self.noise_files)

    def _load(self, row: int) -> np.ndarray:
        return load_audio(self.rows[row].path, *self.rows[row].span)
