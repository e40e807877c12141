"""Long recordings: which decode path a file takes, VAD chunks cut at pauses, speech coverage.

Two paths, both run by the libraries made for them:

- sequential: Whisper's own long-form decoding by timestamp tokens, with its hallucination guards
  (temperature fallback on compression ratio and log-probability, the no-speech threshold):
  faster-whisper's `WhisperModel.transcribe` for a CTranslate2 export (its Silero VAD as
  `vad_filter`), transformers' long-form `generate(return_timestamps=True)` for a checkpoint;
  each engine runs its own (Engine.decode_sequential), this module plans what it decodes.
- chunked: Silero VAD regions merged into chunks of at most 30 s, cut in the pauses, each chunk
  decoded with `<|notimestamps|>` by the Transcriber's batch path, so chunks of many files (or
  many server requests) share batches, as faster-whisper's BatchedInferencePipeline does for one
  file. The path for models that never learnt timestamps, and for ONNX. Without VAD the chunks
  are fixed 30 s windows (the old path, kept as the benchmark's baseline).

After sequential decoding, VAD speech that no segment covers is decoded again on its own
(recover_speech, decode.recover): the timestamp walk can skip a sentence on any backend.
Whatever the path, where VAD speech is still uncovered (recovery found no speech in it, or is
off), the file gets a warning with the time range: a dropped sentence is reported, not lost.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from pefty_whisper.data.audio import SAMPLE_RATE
from pefty_whisper.errors import ModelError
from pefty_whisper.inference.results import Segment, Word

if TYPE_CHECKING:
    from pefty_whisper.inference.options import TranscriberOptions

__all__ = [
    "COVERAGE_MIN_S",
    "FilePlan",
    "chunk_spans",
    "decode_chunked",
    "missed_speech",
    "monotonic",
    "plan_file",
    "recover_speech",
    "seed_fallback",
    "speech_regions",
    "temperatures",
    "uncovered_speech",
    "window_spans",
]

logger = logging.getLogger(__name__)

Span = tuple[float, float]
# Speech no segment covers is reported from this length on: shorter gaps are VAD padding.
COVERAGE_MIN_S = 1.0
# A segment's edges are fuzzy by about this much (timestamps, VAD padding).
COVERAGE_SLACK_S = 0.3
# Chunked decoding joins speech regions across pauses up to this long (natural speech), never
# across longer silence, where Whisper would hallucinate.
MAX_PAUSE_S = 2.0


@dataclass(frozen=True)
class FilePlan:
    """How one file is cut: its decode spans, and the VAD's speech regions (None: VAD off)."""

    spans: tuple[Span, ...]
    regions: tuple[Span, ...] | None


# --------------------------------------------------------------------------------------------
# VAD, chunks and coverage (pure functions of times, tested on planted values)
# --------------------------------------------------------------------------------------------


def vad_available() -> bool:
    return importlib.util.find_spec("faster_whisper") is not None


def speech_regions(audio: np.ndarray, max_chunk_s: float = 30.0) -> list[Span]:
    """Speech regions in seconds, from the Silero VAD that faster-whisper ships in its wheel
    (BatchedInferencePipeline's settings: 160 ms pauses split, 400 ms padding)."""
    if not vad_available():
        raise ModelError(
            "voice activity detection needs faster-whisper: pip install faster-whisper"
        )
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(
        max_speech_duration_s=max_chunk_s, min_silence_duration_ms=160, speech_pad_ms=400
    )
    found = get_speech_timestamps(np.asarray(audio, dtype=np.float32), options)
    return [(r["start"] / SAMPLE_RATE, r["end"] / SAMPLE_RATE) for r in found]


def chunk_spans(
    regions: Sequence[Span], max_s: float, max_pause_s: float = MAX_PAUSE_S
) -> list[Span]:
    """Consecutive speech regions joined into spans of at most `max_s`, cut in the pauses
    between regions; a pause longer than `max_pause_s` always cuts, so silence is never decoded
    (a region longer than `max_s` is cut at `max_s`, which the VAD's own limit avoids)."""
    spans: list[Span] = []
    for start, end in regions:
        while end - start > max_s:
            spans.append((start, start + max_s))
            start += max_s
        joins = spans and start - spans[-1][1] <= max_pause_s
        if joins and end - spans[-1][0] <= max_s and start >= spans[-1][1] - 1e-6:
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
    return spans


def window_spans(duration_s: float, window_s: float) -> list[Span]:
    """Fixed consecutive windows: the path without VAD."""
    count = max(1, math.ceil(duration_s / window_s - 1e-9))
    return [(i * window_s, min(duration_s, (i + 1) * window_s)) for i in range(count)]


def uncovered_speech(
    regions: Sequence[Span],
    segments: Sequence[Segment],
    min_s: float = COVERAGE_MIN_S,
    slack_s: float = COVERAGE_SLACK_S,
) -> list[Span]:
    """Stretches of VAD speech, at least `min_s` long, that no segment with text covers."""
    merged: list[Span] = []
    for start, end in _uncovered_pieces(regions, segments, slack_s):
        if merged and start - merged[-1][1] < slack_s:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return [(round(s, 2), round(e, 2)) for s, e in merged if e - s >= min_s]


def missed_speech(
    regions: Sequence[Span],
    segments: Sequence[Segment],
    min_s: float = COVERAGE_MIN_S,
    slack_s: float = COVERAGE_SLACK_S,
) -> list[Span]:
    """What recovery decodes, each piece on its own: a VAD region (about one sentence: the
    VAD splits at pauses of 160 ms) that segments cover less than half of, whole; of a region
    mostly covered, the uncovered stretches of at least `min_s`.

    Whole, because a segment's end timestamp often runs on into the pause and over the edge
    of the next region: cutting that edge off would cut off the sentence's first word."""
    pieces: list[Span] = []
    for start, end in regions:
        gaps = _uncovered_pieces([(start, end)], segments, slack_s)
        if sum(e - s for s, e in gaps) >= max(min_s, (end - start) / 2):
            pieces.append((start, end))
        else:
            pieces += [(s, e) for s, e in gaps if e - s >= min_s]
    return pieces


def _uncovered_pieces(
    regions: Sequence[Span], segments: Sequence[Segment], slack_s: float
) -> list[Span]:
    covered = sorted((s.start - slack_s, s.end + slack_s) for s in segments if s.text.strip())
    gaps: list[Span] = []
    for start, end in regions:
        cursor = start
        for c_start, c_end in covered:
            if c_end <= cursor or c_start >= end:
                continue
            if c_start > cursor:
                gaps.append((cursor, c_start))
            cursor = max(cursor, c_end)
        if cursor < end:
            gaps.append((cursor, end))
    return gaps


def monotonic(segments: Sequence[Segment], duration_s: float) -> list[Segment]:
    """Segments clipped to the file and to non-decreasing times: a model that emits a
    timestamp past the audio's end (a random or badly fine-tuned one) cannot break subtitles."""
    out: list[Segment] = []
    floor = 0.0
    for segment in segments:
        start = min(max(segment.start, floor), duration_s)
        end = min(max(segment.end, start), duration_s)
        if out and start >= duration_s:
            break
        words = tuple(_clipped(w, floor, duration_s) for w in segment.words)
        out.append(replace(segment, start=round(start, 3), end=round(end, 3), words=words))
        floor = start
    return out


def _clipped(word: Word, floor: float, duration_s: float) -> Word:
    start = min(max(word.start, floor), duration_s)
    return replace(word, start=start, end=min(max(word.end, start), duration_s))


def plan_file(
    audio: np.ndarray, use_vad: bool, window_s: float, chunked: bool, join: bool = True
) -> FilePlan:
    """The spans a file is decoded in (chunked path) and its speech regions, if VAD is on.

    `join` False keeps every VAD region its own chunk: a model fine-tuned on one utterance per
    example writes the first sentence of a joined chunk and ends, dropping the rest.
    """
    duration = len(audio) / SAMPLE_RATE
    regions = tuple(speech_regions(audio, window_s)) if use_vad else None
    if not chunked:
        return FilePlan((), regions)
    if regions is None:
        return FilePlan(tuple(window_spans(duration, window_s)), None)
    if not join:
        return FilePlan(tuple(chunk_spans(regions, window_s, max_pause_s=-math.inf)), regions)
    return FilePlan(tuple(chunk_spans(regions, window_s)), regions)


# --------------------------------------------------------------------------------------------
# The chunked path: every backend, batched across files
# --------------------------------------------------------------------------------------------


def decode_chunked(
    transcribe_batch: Callable[..., list[str]],
    audios: Sequence[np.ndarray],
    plans: Sequence[FilePlan],
    language: str | None,
) -> list[list[Segment]]:
    """One segment per chunk; the chunks of all files decoded together in batches by
    `transcribe_batch` (the Transcriber's batch path, any backend)."""
    pieces, owners = [], []
    for index, (audio, plan) in enumerate(zip(audios, plans, strict=True)):
        for start, end in plan.spans:
            pieces.append(audio[round(start * SAMPLE_RATE) : round(end * SAMPLE_RATE)])
            owners.append((index, start, end))
    texts = transcribe_batch(pieces, language=language) if pieces else []
    results: list[list[Segment]] = [[] for _ in audios]
    for (index, start, end), text in zip(owners, texts, strict=True):
        if text:
            results[index].append(Segment(round(start, 3), round(end, 3), text))
    return results


# --------------------------------------------------------------------------------------------
# Recovery: speech the sequential path skipped, decoded again on its own
# --------------------------------------------------------------------------------------------


def recover_speech(
    transcribe_speech: Callable[[list[np.ndarray]], list[str]],
    audios: Sequence[np.ndarray],
    plans: Sequence[FilePlan],
    found: Sequence[Sequence[Segment]],
    window_s: float,
) -> list[list[Segment]]:
    """Each file's segments with the VAD speech they miss put back in time order.

    Sequential decoding moves on by the model's timestamps: a window that ends on a single
    timestamp (the model's "nothing more here") is skipped to its end, a window judged
    silent is skipped whole, and a timestamp that jumps ahead leaves its gap untranscribed, so a
    sentence the VAD heard can be lost on any backend (issue 21). Every such piece is decoded
    on its own without timestamps by `transcribe_speech` (the batch path, which returns "" for
    a piece it finds no speech in) and becomes a segment with the piece's times, marked
    `recovered`. Pieces of all files share batches.
    """
    pieces, owners = [], []
    for index, (audio, plan, segments) in enumerate(zip(audios, plans, found, strict=True)):
        for gap in missed_speech(plan.regions or (), segments):
            for start, end in chunk_spans([gap], window_s):
                pieces.append(audio[round(start * SAMPLE_RATE) : round(end * SAMPLE_RATE)])
                owners.append((index, start, end))
    texts = transcribe_speech(pieces) if pieces else []
    results = [list(segments) for segments in found]
    for (index, start, end), text in zip(owners, texts, strict=True):
        if text:
            results[index].append(Segment(round(start, 3), round(end, 3), text, recovered=True))
    if pieces:
        logger.info(
            "recovery: %d of %d skipped speech pieces gave text", sum(map(bool, texts)), len(texts)
        )
    return [sorted(segments, key=lambda s: s.start) for segments in results]


# --------------------------------------------------------------------------------------------
# The sequential path's schedule, shared by the backends' long-form decoders
# --------------------------------------------------------------------------------------------


def temperatures(first: float, fallback: bool) -> tuple[float, ...]:
    """Whisper's fallback schedule from `first` up to 1.0 in steps of 0.2."""
    if not fallback:
        return (first,)
    steps = [round(first + 0.2 * i, 2) for i in range(6)]
    return tuple(t for t in steps if t <= 1.0) or (first,)


def fallback(options: TranscriberOptions) -> bool:
    """Whether a failed guard (compression ratio, log-probability) retries hotter."""
    return options.compression_ratio_threshold is not None or options.log_prob_threshold is not None


def seed_fallback(seed: int) -> None:
    """Seed the sampling of the fallback's hotter retries (torch's and CTranslate2's).

    Without it a retry draws from wherever the process's random state happens to be, so the same
    audio could decode differently after other work, or in another rank than in one process.
    """
    import sys

    import torch

    torch.manual_seed(seed)
    if "ctranslate2" in sys.modules:  # loaded by the ct2 backend; never imported for this
        sys.modules["ctranslate2"].set_random_seed(seed)
