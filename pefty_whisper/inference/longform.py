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

After sequential decoding, VAD speech that no segment covers, and the speech under a segment
whose text is far shorter than that speech, is decoded again region by region (recover_speech,
decode.recover): the timestamp walk can skip a sentence on any backend, or time one segment over
three sentences and write three words of them.
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
    "sparse_segments",
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
# A segment with at least SPARSE_MIN_SPEECH_S of VAD speech under it whose text runs at under
# SPARSE_SHARE of the rate of the file's other segments (characters per second of speech under
# them, pooled, from at least SPARSE_MIN_OTHER_S of it) is timed over speech it did not write: on
# issue 21's long round one PyTorch segment spanned three sentences (11 s of speech) and wrote
# "바장님이 이제 이" (0.6 characters/s against the others' 3.8). Honest segments there ran at
# 2.9-5.1 (0.75-1.35 of the rest), so half the rate leaves slow speakers and fillers alone.
SPARSE_SHARE = 0.5
SPARSE_MIN_SPEECH_S = 2.0
SPARSE_MIN_OTHER_S = 3.0
# A sparse segment's regions decoded again replace it only if they write at least this many
# times its characters: where the second decode hears no more, the first one stands.
SPARSE_GAIN = 1.5
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


def sparse_segments(
    regions: Sequence[Span],
    segments: Sequence[Segment],
    share: float = SPARSE_SHARE,
    min_speech_s: float = SPARSE_MIN_SPEECH_S,
) -> list[tuple[int, list[Span]]]:
    """Segments whose text is far shorter than the VAD speech under them, by index, each with
    the regions it holds (more than half of each region lies inside the segment's times).

    Coverage by times cannot see these: the segment covers the speech, its text does not. The
    yardstick is the file's own rate elsewhere, so a slow speaker or a language with long words
    sets its own."""
    speech = [_speech_under(regions, s.start, s.end) for s in segments]
    chars = [_characters(s.text) for s in segments]
    found = []
    for index, segment in enumerate(segments):
        other_speech = sum(speech) - speech[index]
        if speech[index] < min_speech_s or other_speech < SPARSE_MIN_OTHER_S:
            continue
        usual = (sum(chars) - chars[index]) / other_speech
        if chars[index] / speech[index] >= share * usual:
            continue
        held = [
            (start, end)
            for start, end in regions
            if _speech_under([(start, end)], segment.start, segment.end) > (end - start) / 2
        ]
        if held:
            found.append((index, held))
    return found


def _speech_under(regions: Sequence[Span], start: float, end: float) -> float:
    return sum(max(0.0, min(end, r_end) - max(start, r_start)) for r_start, r_end in regions)


def _characters(text: str) -> int:
    return sum(not c.isspace() for c in text)


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
    `recovered`.

    A segment can also be timed over several sentences and write one (sparse_segments): its
    regions are decoded one by one, and if they write clearly more (SPARSE_GAIN) they replace
    it, with every segment whose middle lies among them (the tail of the same speech). Pieces
    of all files share batches.
    """
    pieces: list[np.ndarray] = []
    owners: list[tuple[int, float, float, int | None]] = []  # file, start, end, sparse segment

    def add(index: int, span: Span, sparse: int | None) -> None:
        for start, end in chunk_spans([span], window_s):
            pieces.append(audios[index][round(start * SAMPLE_RATE) : round(end * SAMPLE_RATE)])
            owners.append((index, start, end, sparse))

    for index, (plan, segments) in enumerate(zip(plans, found, strict=True)):
        for gap in missed_speech(plan.regions or (), segments):
            add(index, gap, None)
        for sparse, held in sparse_segments(plan.regions or (), segments):
            for region in held:
                add(index, region, sparse)
    texts = transcribe_speech(pieces) if pieces else []
    added: list[list[Segment]] = [[] for _ in found]
    redecoded: list[dict[int, list[Segment]]] = [{} for _ in found]
    for (index, start, end, sparse), text in zip(owners, texts, strict=True):
        segment = Segment(round(start, 3), round(end, 3), text, recovered=True)
        if sparse is not None:
            redecoded[index].setdefault(sparse, []).append(segment)
        elif text:
            added[index].append(segment)
    results = []
    for segments, extra, again in zip(found, added, redecoded, strict=True):
        kept = _replace_sparse(list(segments), again)
        results.append(sorted(kept + extra, key=lambda s: s.start))
    if pieces:
        logger.info(
            "recovery: %d of %d speech pieces decoded again gave text",
            sum(map(bool, texts)),
            len(texts),
        )
    return results


def _replace_sparse(segments: list[Segment], redecoded: dict[int, list[Segment]]) -> list[Segment]:
    """Each sparse segment (by index) replaced by its regions decoded again, where they write
    SPARSE_GAIN times its characters, along with every segment whose middle lies among them."""
    kept = list(segments)
    for index, new in redecoded.items():
        written = sum(_characters(s.text) for s in new)
        if written < SPARSE_GAIN * max(1, _characters(segments[index].text)):
            continue
        first, last, gone = new[0].start, new[-1].end, segments[index]
        kept = [s for s in kept if s is not gone and not first <= (s.start + s.end) / 2 <= last]
        kept += [s for s in new if s.text]
        logger.info("recovery: a segment at %.1f s decoded again region by region", gone.start)
    return kept


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
