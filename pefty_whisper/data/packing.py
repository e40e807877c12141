"""Packed 30 s training windows with timestamps, the format Whisper itself was trained on.

A round trained on one short utterance per example with `<|notimestamps|>` stops predicting
timestamps, and long-form decoders (faster-whisper, transformers' sequential generate) then jump
whole windows and drop speech. Here consecutive utterances of a manifest (corpus order: in
KsponSpeech neighbours come from one conversation) are joined with short seeded silences into
windows of at most 30 s, never cutting an utterance, with the labels

    <|startoftranscript|><|ko|><|transcribe|><|0.40|> text <|3.10|><|3.42|> text <|6.80|>...

on Whisper's 0.02 s grid. So that decoding without timestamps keeps working too, a share of
the packed windows drops the timestamps (`<|notimestamps|>` and the joined text, distil-whisper's
timestamp probability) and a share of utterances can stay single examples with
`<|notimestamps|>`, padded to 30 s (costlier: one utterance per encoder pass). A small share
are no-speech windows (digital silence, low noise, hum) whose target is Whisper's no-speech
token and an empty transcript, so the model learns to write nothing on them. The encoder
always sees 30 s, so the model stays right for every consumer of an export, while each window
carries several utterances.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from random import Random
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from pefty_whisper.data.audio import SAMPLE_RATE, load_audio, probe_audio
from pefty_whisper.data.manifest import Utterance
from pefty_whisper.errors import DataError
from pefty_whisper.whisper.tokens import (
    MAX_TARGET_POSITIONS,
    TIME_STEP_S,
    WhisperTokens,
    timestamp_token,
)

if TYPE_CHECKING:
    from transformers import WhisperTokenizer

    from pefty_whisper.config import Config
    from pefty_whisper.data.augment import LoaderAugment

logger = logging.getLogger(__name__)

WindowKind = Literal["packed", "single", "no_speech"]
NoiseKind = Literal["silence", "noise", "hum"]
NOISE_KINDS: tuple[NoiseKind, ...] = ("silence", "noise", "hum")
WINDOW_S = 30.0


@dataclass(frozen=True)
class PackingOptions:
    """How a manifest becomes windows; the config's data section fills these."""

    window_s: float = WINDOW_S
    single_share: float = 0.0  # utterances kept as one example with <|notimestamps|>
    untimed_share: float = 0.3  # packed windows whose target has no timestamps
    no_speech_share: float = 0.05  # no-speech windows, relative to the speech windows
    gap_s: tuple[float, float] = (0.1, 0.8)  # seeded silence before each utterance
    max_tokens: int = MAX_TARGET_POSITIONS  # train.max_label_tokens, within the model's
    seed: int = 0


@dataclass(frozen=True)
class Window:
    """One training example: which utterances, the silence before each, or a no-speech clip."""

    kind: WindowKind
    members: tuple[int, ...] = ()  # utterance indices, in corpus order
    gaps_s: tuple[float, ...] = ()  # silence before each member (the first is the lead-in)
    noise: NoiseKind | None = None  # no-speech windows only
    noise_s: float = 0.0
    seed: int = 0
    timestamps: bool = True  # packed windows only: False for `<|notimestamps|>` joined text

    @property
    def num_utterances(self) -> int:
        return len(self.members)


@dataclass(frozen=True)
class WindowPlan:
    """The windows of one epoch and what they hold, for the round's record."""

    windows: tuple[Window, ...]

    def count(self, kind: WindowKind) -> int:
        return sum(window.kind == kind for window in self.windows)

    @property
    def utterances(self) -> int:
        return sum(window.num_utterances for window in self.windows)

    @property
    def untimed(self) -> int:
        """Packed windows trained without timestamps."""
        return sum(w.kind == "packed" and not w.timestamps for w in self.windows)

    def summary(self) -> dict[str, int]:
        return {
            "windows": len(self.windows),
            "packed_windows": self.count("packed"),
            "untimed_windows": self.untimed,
            "single_utterances": self.count("single"),
            "no_speech_windows": self.count("no_speech"),
            "utterances": self.utterances,
        }


def _on_grid(seconds: float) -> float:
    return round(seconds / TIME_STEP_S) * TIME_STEP_S


def plan_windows(
    durations: Sequence[float], text_tokens: Sequence[int], options: PackingOptions
) -> WindowPlan:
    """Group consecutive utterances into windows of at most `window_s`, seeded.

    `text_tokens[i]` is the length of utterance i's transcript in tokens (no prefix): a window
    closes before its label would pass `max_tokens`. An utterance longer than the window, or
    whose label alone is too long, stays a single example (the filter before training drops
    what Whisper cannot take at all).
    """
    if len(durations) != len(text_tokens):
        raise ValueError(f"{len(durations)} durations but {len(text_tokens)} token counts")
    rng = Random(f"pefty-packing:{options.seed}")
    # Its own stream, so a timestamp share leaves the grouping (and the seeds) as they were.
    timestamp_rng = Random(f"pefty-packing-timestamps:{options.seed}")
    low, high = options.gap_s
    # SOT, language, task, end-of-text; each member adds two timestamp tokens.
    prefix = 4
    windows: list[Window] = []
    current: list[int] = []
    gaps: list[float] = []
    length_s = 0.0
    tokens = prefix

    def close() -> None:
        nonlocal current, gaps, length_s, tokens
        if current:
            timed = timestamp_rng.random() >= options.untimed_share
            windows.append(
                Window(
                    "packed",
                    tuple(current),
                    tuple(gaps),
                    seed=rng.getrandbits(32),
                    timestamps=timed,
                )
            )
        current, gaps, length_s, tokens = [], [], 0.0, prefix

    for index, (duration, count) in enumerate(zip(durations, text_tokens, strict=True)):
        fits_alone = duration + high <= options.window_s and prefix + count + 2 < options.max_tokens
        if rng.random() < options.single_share or not fits_alone:
            close()
            windows.append(Window("single", (index,), (0.0,), seed=rng.getrandbits(32)))
            continue
        gap = _on_grid(rng.uniform(low, high))
        if current and (
            length_s + gap + duration > options.window_s or tokens + count + 2 >= options.max_tokens
        ):
            close()
        current.append(index)
        gaps.append(gap)
        length_s += gap + duration
        tokens += count + 2
    close()
    speech = len(windows)
    for _ in range(round(speech * options.no_speech_share)):
        windows.insert(
            rng.randrange(len(windows) + 1),
            Window(
                "no_speech",
                noise=rng.choice(NOISE_KINDS),
                noise_s=round(rng.uniform(2.0, options.window_s), 2),
                seed=rng.getrandbits(32),
            ),
        )
    return WindowPlan(tuple(windows))


def packing_tokens(tokenizer: WhisperTokenizer, language: str, task: str) -> WhisperTokens:
    """The token table a packed label is built from, with what packing needs checked."""
    tokens = WhisperTokens.from_tokenizer(tokenizer, language=language, task=task)
    if tokenizer.convert_tokens_to_ids(timestamp_token(0)) != tokens.first_timestamp:
        raise DataError(
            "this Whisper tokenizer has no <|0.00|> token right after <|notimestamps|>: "
            "cannot pack windows (data.packing=false trains single utterances)"
        )
    if tokens.no_speech is None:
        raise DataError("this Whisper tokenizer has no no-speech token: cannot pack windows")
    return tokens


@dataclass(frozen=True)
class Example:
    """Decoder input and targets of one window; `labels[i]` is the target after `inputs[i]`."""

    inputs: tuple[int, ...]
    labels: tuple[int, ...]


def teacher_forced(ids: Sequence[int]) -> Example:
    """The usual shift: the model reads ids[:-1] and learns to predict ids[1:]."""
    return Example(tuple(ids[:-1]), tuple(ids[1:]))


def packed_example(
    special: WhisperTokens,
    texts: Sequence[Sequence[int]],
    spans_s: Sequence[tuple[float, float]],
) -> Example:
    """`<|sot|><|ko|><|transcribe|><|t0|> text <|t1|><|t2|> text <|t3|>...<|eot|>`."""
    ids = special.prefix()
    for text, (start, end) in zip(texts, spans_s, strict=True):
        first, last = special.timestamp(start), special.timestamp(end)
        if ids[-1] >= special.first_timestamp and first <= ids[-1]:
            first = ids[-1] + 1  # strictly increasing, even where rounding met the last end
        last = max(last, first + 1)
        ids += [first, *text, last]
    ids.append(special.eot)
    return teacher_forced(ids)


def untimed_example(special: WhisperTokens, text: Sequence[int]) -> Example:
    """A single utterance, or a packed window's joined text, with `<|notimestamps|>`."""
    return teacher_forced([*special.prompt(), *text, special.eot])


def no_speech_example(special: WhisperTokens) -> Example:
    """Whisper's no-speech form under a forced Korean prompt.

    Decoders force `<|sot|><|ko|><|transcribe|>`, so the model reads that prompt as always, but
    the target right after `<|sot|>` is the no-speech token (what faster-whisper's and
    transformers' no-speech thresholds read) and the transcript is empty.
    """
    sot, language, task, no_timestamps = special.prompt()
    inputs = (sot, language, task, no_timestamps)
    labels = (special.no_speech, task, no_timestamps, special.eot)
    return Example(inputs, labels)


def no_speech_audio(kind: NoiseKind, seconds: float, seed: int) -> np.ndarray:
    """Generated non-speech: digital silence, low broadband noise, or mains hum."""
    rng = np.random.default_rng(seed)
    samples = int(seconds * SAMPLE_RATE)
    if kind == "silence":
        return np.zeros(samples, dtype=np.float32)
    if kind == "noise":
        level = 10 ** (rng.uniform(-60.0, -40.0) / 20)
        return (rng.standard_normal(samples) * level).astype(np.float32)
    t = np.arange(samples) / SAMPLE_RATE
    mains = rng.choice((50.0, 60.0))
    hum = sum(np.sin(2 * np.pi * mains * k * t + rng.uniform(0, 2 * np.pi)) / k for k in (1, 2, 3))
    level = 10 ** (rng.uniform(-45.0, -30.0) / 20)
    return (hum * level + rng.standard_normal(samples) * level * 0.05).astype(np.float32)


class PackedDataset(torch.utils.data.Dataset):
    """Windows assembled in the loader's workers: member audio joined with silences, labels
    built from each member's measured position, so timestamps match the waveform exactly."""

    def __init__(
        self,
        utterances: Sequence[Utterance],
        plan: WindowPlan,
        tokenizer: WhisperTokenizer,
        special: WhisperTokens,
        window_s: float = WINDOW_S,
    ) -> None:
        # Kept as given: a data/table.py table stays a few arrays in forked loader workers.
        self.utterances = utterances
        self.plan = plan
        self.tokenizer = tokenizer
        self.special = special
        self.window_samples = int(window_s * SAMPLE_RATE)
        # Waveform augmentation of each member (train/augmentation.py attaches it); the plan
        # left room for the slowest speed factor, and the spans are measured after it.
        self.augment: LoaderAugment | None = None

    def __len__(self) -> int:
        return len(self.plan.windows)

    @property
    def durations(self) -> list[float]:
        """Seconds of audio per window (for batching by length, like SpeechDataset)."""
        return [self._seconds(window) for window in self.plan.windows]

    def _seconds(self, window: Window) -> float:
        if window.kind == "no_speech":
            return window.noise_s
        return sum(window.gaps_s) + sum(self.utterances[i].duration or 0.0 for i in window.members)

    def _text(self, index: int) -> list[int]:
        return self.tokenizer(self.utterances[index].sentence, add_special_tokens=False).input_ids

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        window = self.plan.windows[index]
        if window.kind == "no_speech":
            audio = no_speech_audio(window.noise, window.noise_s, window.seed)
            return _item(audio, no_speech_example(self.special))
        try:
            members = [self.utterances[i] for i in window.members]
            audios = [load_audio(u.path, *u.span) for u in members]
        except DataError as exc:
            # A file that went bad after `prepare`: skip the window, do not kill the round.
            logger.warning("skipping a window with unreadable audio: %s", exc)
            return None
        if self.augment is not None:
            # Babble comes from the window's other members: neighbours in the conversation.
            audios = [
                self.augment(audio, row, others=audios[:k] + audios[k + 1 :]).audio
                for k, (row, audio) in enumerate(zip(window.members, audios, strict=True))
            ]
        if window.kind == "single":
            return _item(audios[0], untimed_example(self.special, self._text(window.members[0])))
        return self._packed(window, audios)

    def _packed(self, window: Window, audios: list[np.ndarray]) -> dict[str, Any] | None:
        pieces, spans, position = [], [], 0
        for gap_s, audio in zip(window.gaps_s, audios, strict=True):
            gap = round(gap_s * SAMPLE_RATE)
            pieces += [np.zeros(gap, dtype=np.float32), audio]
            start = position + gap
            position = start + len(audio)
            spans.append((start / SAMPLE_RATE, position / SAMPLE_RATE))
        if position > self.window_samples:
            # The manifest's durations were off (a file changed after prepare): keep what fits.
            keep = sum(1 for _, end in spans if end * SAMPLE_RATE <= self.window_samples)
            if keep == 0:
                return None
            pieces, spans = pieces[: 2 * keep], spans[:keep]
            logger.warning("a packed window ran past %.0f s: kept %d utterances", WINDOW_S, keep)
        members = window.members[: len(spans)]
        if window.timestamps:
            example = packed_example(self.special, [self._text(i) for i in members], spans)
        else:
            joined = " ".join(self.utterances[i].sentence for i in members)
            text = self.tokenizer(joined, add_special_tokens=False).input_ids
            example = untimed_example(self.special, text)
        return _item(np.concatenate(pieces), example)


def _item(audio: np.ndarray, example: Example) -> dict[str, Any]:
    return {
        "audio": audio,
        "decoder_input_ids": list(example.inputs),
        "labels": list(example.labels),
    }


def packed_training_set(
    utterances: Sequence[Utterance],
    tokenizer: WhisperTokenizer,
    config: Config,
    part: int = 0,
    max_tokens: int | None = None,
) -> PackedDataset:
    """A round's training set as packed windows, single utterances and no-speech windows, in
    the shares the config's data section asks for (seeded by data.split_seed and `part`, the
    set's place in a mix)."""
    data = config.data
    if config.model.context == "auto" and part == 0:
        logger.warning(
            "model.context=auto does not apply to packed windows, which are 30 s: training and "
            "validation run at the full context (data.packing=false trains single utterances "
            "at auto)"
        )
    options = PackingOptions(
        single_share=data.single_share,
        untimed_share=data.untimed_share,
        no_speech_share=data.no_speech_share,
        seed=data.split_seed + part,
        max_tokens=max_tokens or config.train.max_label_tokens,
    )
    sentences = [utterance.sentence for utterance in utterances]
    lengths = [len(ids) for ids in tokenizer(sentences, add_special_tokens=False).input_ids]
    # A manifest written by hand may lack durations: the pcm/wav header tells them. Planned at
    # the slowest speed factor (augment.speed), so a window stays within 30 s whichever factor
    # each member draws in whichever epoch.
    slowest = min(config.augment.speed) if config.augment.speed_prob > 0 else 1.0
    durations = [(u.duration or _length_s(u)) / min(slowest, 1.0) for u in utterances]
    plan = plan_windows(durations, lengths, options)
    special = packing_tokens(tokenizer, config.model.language, config.model.task)
    logger.info(
        "packed %d utterances into %d windows (%d packed, %d of them untimed, %d single, "
        "%d no-speech)",
        plan.utterances,
        len(plan.windows),
        plan.count("packed"),
        plan.untimed,
        plan.count("single"),
        plan.count("no_speech"),
    )
    return PackedDataset(utterances, plan, tokenizer, special, options.window_s)


def _length_s(utterance: Utterance) -> float:
    """Seconds of a row without a duration: its span's, else the file's header."""
    if utterance.start is not None and utterance.end is not None:
        return utterance.end - utterance.start
    return probe_audio(utterance.path).duration_s


class PackedSets(torch.utils.data.ConcatDataset):
    """The epoch of a round that mixes several sets (data/mixing.py), each set's drawn
    utterances packed apart: a window never joins two corpora, whose neighbours are unrelated."""

    def __init__(self, parts: Sequence[PackedDataset]) -> None:
        super().__init__(parts)
        self.plan = WindowPlan(tuple(w for part in parts for w in part.plan.windows))


def packed_mixed_set(
    mixed: Any, tokenizer: WhisperTokenizer, config: Config, max_tokens: int | None = None
) -> PackedSets:
    """A mixed epoch (a data/mixing.py MixedDataset) as packed windows: each set's draw becomes
    windows as a single set's would, and each pass over a set drawn several times is packed
    on its own, so no window joins a pass's end to the next one's start or holds an utterance
    twice."""
    parts = []
    for index, part in enumerate(mixed.parts):
        rows = mixed.rows[mixed.sources == index]
        # Within a pass rows only increase: a step down is where the next pass begins.
        for passed in np.split(rows, np.flatnonzero(np.diff(rows) <= 0) + 1):
            if len(passed):
                utterances = part.utterances.take(passed)
                parts.append(
                    packed_training_set(utterances, tokenizer, config, len(parts), max_tokens)
                )
    return PackedSets(parts)


def packing_summary(dataset: Any, windows_seen: int) -> dict[str, int] | None:
    """round.json's record of a packed round: one pass's windows and utterances, and the
    windows the round saw; None for a round of single utterances."""
    if not isinstance(dataset, PackedDataset | PackedSets):
        return None
    return {**dataset.plan.summary(), "windows_seen": windows_seen}
