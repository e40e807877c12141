"""Transcripts as text, JSON, SubRip (srt) or WebVTT: what `pefty transcribe` prints and
`pefty serve` answers.

With word timings (`--word-timestamps`), JSON lists each segment's words, SubRip gets a cue per
word (it has no timing inside a cue), and WebVTT keeps a cue per segment with a cue timestamp
before each word (`<00:00:01.140>`), which players show as karaoke-style highlighting.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from pefty_whisper.inference.results import Segment, Transcription, Word

__all__ = [
    "OUTPUT_FORMATS",
    "OutputFormat",
    "format_transcriptions",
    "srt_time",
    "to_json",
    "to_srt",
    "to_vtt",
    "vtt_time",
    "word_json",
]

OutputFormat = Literal["text", "json", "srt", "vtt"]
OUTPUT_FORMATS: tuple[OutputFormat, ...] = ("text", "json", "srt", "vtt")


def format_transcriptions(results: Sequence[Transcription], output_format: str) -> str:
    """One string for all files: a tab-separated line per file for several, one SRT numbering."""
    if output_format == "json":
        return json.dumps(to_json(results), ensure_ascii=False, indent=2)
    if output_format == "srt":
        return to_srt(results)
    if output_format == "vtt":
        return to_vtt(results)
    if output_format != "text":
        raise ValueError(f"unknown output format {output_format!r}: use text, json, srt or vtt")
    if len(results) == 1:
        return results[0].text
    return "\n".join(f"{r.path}\t{r.text}" for r in results)


def to_json(results: Sequence[Transcription]) -> list[dict[str, Any]]:
    """Path, text, duration, language, backend, decode path, segments and uncovered speech
    per file, in the order given."""
    return [
        {
            "path": r.path,
            "text": r.text,
            "duration_s": round(r.duration_s, 3),
            "language": r.language,
            "backend": r.backend,
            "method": r.method,
            "segments": [_segment_json(s) for s in r.segments],
            "uncovered_speech": [list(span) for span in r.uncovered],
        }
        for r in results
    ]


def _segment_json(segment: Segment) -> dict[str, Any]:
    body: dict[str, Any] = {"start": segment.start, "end": segment.end, "text": segment.text}
    if segment.recovered:
        body["recovered"] = True
    if segment.words:
        body["words"] = [word_json(w) for w in segment.words]
    return body


def word_json(word: Word) -> dict[str, Any]:
    """A word as OpenAI's verbose_json and faster-whisper name its fields."""
    return {
        "word": word.text,
        "start": word.start,
        "end": word.end,
        "probability": word.probability,
    }


def to_srt(results: Sequence[Transcription]) -> str:
    """SubRip blocks numbered across all files: one per segment, or one per word where the
    segments carry word timings."""
    blocks = []
    for r in results:
        for s in r.segments:
            cues = [(w.start, w.end, w.text.strip()) for w in s.words] or [(s.start, s.end, s.text)]
            for start, end, text in cues:
                blocks.append(f"{len(blocks) + 1}\n{srt_time(start)} --> {srt_time(end)}\n{text}\n")
    return "\n".join(blocks)


def srt_time(seconds: float) -> str:
    """01:02:03,456: SubRip wants a comma before the milliseconds."""
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d},{millis:03d}"


def to_vtt(results: Sequence[Transcription]) -> str:
    """One WebVTT document: a cue per segment, all files in order."""
    cues = [
        f"{vtt_time(s.start)} --> {vtt_time(s.end)}\n{_vtt_text(s)}\n"
        for r in results
        for s in r.segments
    ]
    return "\n".join(["WEBVTT\n", *cues])


def _vtt_text(segment: Segment) -> str:
    """The cue's text; with words, a cue timestamp before each word after the first, kept
    strictly inside the cue as WebVTT requires."""
    if not segment.words:
        return segment.text
    parts = [segment.words[0].text.strip()]
    for word in segment.words[1:]:
        text = word.text.strip()
        if segment.start < word.start < segment.end:
            text = f"<{vtt_time(word.start)}>{text}"
        # Words keep the tokenizer's spacing: none between them in Chinese or Japanese.
        parts.append(f" {text}" if word.text.startswith(" ") else text)
    return "".join(parts)


def vtt_time(seconds: float) -> str:
    """01:02:03.456: WebVTT wants a dot before the milliseconds."""
    return srt_time(seconds).replace(",", ".")
