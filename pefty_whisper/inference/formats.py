"""Transcripts as text, JSON, SubRip (srt) or WebVTT: what `pefty transcribe` prints and
`pefty serve` answers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from pefty_whisper.inference.results import Transcription

__all__ = [
    "OUTPUT_FORMATS",
    "OutputFormat",
    "format_transcriptions",
    "srt_time",
    "to_json",
    "to_srt",
    "to_vtt",
    "vtt_time",
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
            "segments": [{"start": s.start, "end": s.end, "text": s.text} for s in r.segments],
            "uncovered_speech": [list(span) for span in r.uncovered],
        }
        for r in results
    ]


def to_srt(results: Sequence[Transcription]) -> str:
    """SubRip blocks numbered across all files (one block per segment)."""
    blocks = []
    for r in results:
        for s in r.segments:
            blocks.append(
                f"{len(blocks) + 1}\n{srt_time(s.start)} --> {srt_time(s.end)}\n{s.text}\n"
            )
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
        f"{vtt_time(s.start)} --> {vtt_time(s.end)}\n{s.text}\n"
        for r in results
        for s in r.segments
    ]
    return "\n".join(["WEBVTT\n", *cues])


def vtt_time(seconds: float) -> str:
    """01:02:03.456: WebVTT wants a dot before the milliseconds."""
    return srt_time(seconds).replace(",", ".")
