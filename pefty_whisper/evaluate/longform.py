"""Whole-recording figures of a model: long-form CER with the share of deleted speech, and the
characters it writes on silence.

Per-utterance CER cannot see what users of the final model meet: a round trained on one short
utterance per example learns to end a window after one sentence, and long-form decoders (which
move their 30 s window by the last predicted timestamp) then skip speech at the seams, while a
fine-tuned model writes text on empty audio. So `pefty evaluate` also stitches the set's own
utterances, in manifest order with seeded pauses, into recordings of a few minutes, transcribes
each whole with the model's long-form path, and scores them against the joined references; and
it decodes generated silence, low noise and hum, where the goal is no text at all.

Each recording's counts are kept, so a set of several recordings gets a bootstrap interval over
recordings (intervals.py): a seam lost in one recording is one draw, not dozens of utterances.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from random import Random
from typing import Any

import numpy as np

from pefty_whisper.data.audio import SAMPLE_RATE, load_audio
from pefty_whisper.data.manifest import Utterance
from pefty_whisper.data.packing import NOISE_KINDS, no_speech_audio
from pefty_whisper.inference.longform import seed_fallback
from pefty_whisper.intervals import RESAMPLES, bootstrap_rate
from pefty_whisper.metrics import score_protocols
from pefty_whisper.ranks import map_batches

logger = logging.getLogger(__name__)

RECORDING_S = 180.0  # a few minutes: several 30 s windows, so seams are crossed
PAUSE_S = (0.3, 1.5)  # the pauses of a conversation between utterances
SILENCE_CLIP_S = 10.0


@dataclass(frozen=True)
class Recording:
    audio: np.ndarray
    reference: str  # the utterances' transcripts joined by spaces
    utterances: int
    # The pronunciation side joined the same way (each utterance's spelling where it has
    # none), "" when no utterance has one: the `dual` protocol's second reference.
    phonetic: str = ""


@dataclass(frozen=True)
class LongformScore:
    """Long-form figures of one set; deletions are the typical failure, so they stand apart."""

    cer: float  # spaces removed, against the joined references, in percent
    deleted: float  # deleted reference characters, percent of the reference
    inserted: float
    recordings: int
    audio_seconds: float
    seconds: float
    method: str  # the long-form path the model took (sequential or chunked)
    # The bootstrap interval of `cer` over recordings; None for a single recording.
    cer_low: float | None = None
    cer_high: float | None = None
    dual: float | None = None  # CER against whichever side of each recording scores better
    recording_errors: tuple[int, ...] = ()  # character errors per recording (spaces removed)
    recording_chars: tuple[int, ...] = ()  # reference characters per recording

    def as_dict(self) -> dict[str, Any]:
        return {k: _rounded(v) for k, v in asdict(self).items()}


def _rounded(value: Any) -> Any:
    return round(value, 3) if isinstance(value, float) else value


def stitch_recordings(
    utterances: Sequence[Utterance], seed: int = 0, target_s: float = RECORDING_S
) -> list[Recording]:
    """Consecutive utterances joined with seeded pauses into recordings of about `target_s`."""
    rng = Random(f"pefty-longform:{seed}")
    recordings: list[Recording] = []
    pieces: list[np.ndarray] = []
    texts: list[str] = []
    spoken: list[str] = []

    def close() -> None:
        if texts:
            phonetic = " ".join(spoken) if spoken != texts else ""
            recordings.append(
                Recording(np.concatenate(pieces), " ".join(texts), len(texts), phonetic)
            )

    length = 0
    for utterance in utterances:
        audio = load_audio(utterance.path, *utterance.span)
        if texts and (length + len(audio)) / SAMPLE_RATE > target_s:
            close()
            pieces, texts, spoken, length = [], [], [], 0
        pause = np.zeros(round(rng.uniform(*PAUSE_S) * SAMPLE_RATE), dtype=np.float32)
        pieces += [pause, audio]
        texts.append(utterance.sentence)
        spoken.append(utterance.phonetic or utterance.sentence)
        length += len(pause) + len(audio)
    close()
    return recordings


def score_longform(
    transcriber: Any, recordings: Sequence[Recording], resamples: int = RESAMPLES
) -> LongformScore:
    """Transcribe each recording whole (the Transcriber's long-form path) and score it, with
    an interval over recordings where there are several."""
    started = time.perf_counter()
    step = max(1, transcriber.options.batch_size)  # a whole set in one generate would not fit

    def decode(indices: list[int]) -> list[tuple[str, str]]:
        seed_fallback(indices[0])  # a batch decodes alike in any rank, after any other work
        results = transcriber.transcribe_audios([recordings[i].audio for i in indices])
        return [(t.text, t.method) for t in results]

    # Under a launcher each rank decodes its share of the batches (ranks.map_batches).
    decoded = map_batches(range(len(recordings)), step, decode)
    rows = [decoded[i] for i in range(len(recordings))]
    seconds = time.perf_counter() - started
    protocols = score_protocols(
        [r.reference for r in recordings],
        [text for text, _ in rows],
        [r.phonetic for r in recordings],
    )
    scores = protocols.spelling
    reference_chars = sum(u.chars.reference_length for u in scores.utterances)
    share = 100.0 / max(reference_chars, 1)
    kspon = protocols["kspon"]
    low = high = None
    if len(recordings) > 1:
        interval = bootstrap_rate(kspon.errors, kspon.reference_lengths, resamples=resamples)
        low, high = interval.low, interval.high
    return LongformScore(
        cer=scores.cer,
        deleted=share * sum(u.chars.deletions for u in scores.utterances),
        inserted=share * sum(u.chars.insertions for u in scores.utterances),
        recordings=len(recordings),
        audio_seconds=sum(len(r.audio) for r in recordings) / SAMPLE_RATE,
        seconds=seconds,
        method=",".join(sorted({method for _, method in rows})),
        cer_low=low,
        cer_high=high,
        dual=protocols["dual"].rate,
        recording_errors=tuple(int(e) for e in kspon.errors),
        recording_chars=tuple(int(n) for n in kspon.reference_lengths),
    )


def silence_characters(transcriber: Any, seed: int = 0) -> dict[str, int]:
    """Characters written (spaces not counted) on 10 s of silence, low noise and hum."""
    clips = [no_speech_audio(kind, SILENCE_CLIP_S, seed + i) for i, kind in enumerate(NOISE_KINDS)]
    seed_fallback(seed)  # hallucinations on noise take the fallback's sampled retries
    results = transcriber.transcribe_audios(clips)
    written = {
        kind: len("".join(t.text.split())) for kind, t in zip(NOISE_KINDS, results, strict=True)
    }
    if any(written.values()):
        texts = {kind: t.text for kind, t in zip(NOISE_KINDS, results, strict=True)}
        logger.warning("text written on non-speech: %s", texts)
    return written
