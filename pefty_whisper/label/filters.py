"""Which pseudo-labels are kept: each utterance's scores against the `label.*` thresholds.

A label is dropped for the first reason that applies, so every dropped row has exactly one
reason and the counts add up. The scores are kept in the labelling's progress, so the filters
run when the set is written, never during decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

from pefty_whisper.config import LabelSection
from pefty_whisper.inference.confidence import compression_ratio
from pefty_whisper.metrics import score_utterance

__all__ = ["REASONS", "Decoded", "disagreement", "drop_reason", "filter_settings"]

# Every reason a row is dropped for, by key (counted in the record), with its words.
REASONS = {
    "unreadable": "audio unreadable",
    "no_speech_vad": "no speech found by the VAD",
    "too_short": "shorter than label.min_segment_s",
    "empty": "empty transcript",
    "repetition": "compression ratio over label.max_compression_ratio (a repetition loop)",
    "no_speech": "no-speech probability over label.max_no_speech_prob",
    "low_logprob": "mean log-probability under label.min_avg_logprob",
    "disagreement": "CER against the second pass over label.max_disagreement_cer",
}


@dataclass(frozen=True)
class Decoded:
    """One utterance of an input: its place, its label and its scores (a progress line)."""

    input: int  # the input's index in the source's order
    segment: int  # its place among the input's utterances
    start: float | None  # seconds into the file; None: the whole file
    end: float | None
    seconds: float = 0.0  # its length
    text: str = ""
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    second: str | None = None  # the second pass's text, where one ran
    reason: str = ""  # a REASONS key where it was dropped before decoding (VAD, unreadable)

    @property
    def compression_ratio(self) -> float:
        return compression_ratio(self.text)

    @property
    def disagreement(self) -> float | None:
        return None if self.second is None else disagreement(self.text, self.second)


def disagreement(text: str, second: str) -> float:
    """CER (spaces removed, as a fraction) of a label against a second decode taken as the
    reference; 1.0 where the second decode is empty and the label is not."""
    chars = score_utterance(second, text).chars
    if chars.reference_length == 0:
        return 0.0 if chars.errors == 0 else 1.0
    return chars.errors / chars.reference_length


def drop_reason(row: Decoded, section: LabelSection) -> str:
    """The REASONS key this label is dropped for, or "" to keep it."""
    if row.reason:
        return row.reason
    if not row.text.strip():
        return "empty"
    limit = section.max_compression_ratio
    if limit is not None and row.compression_ratio > limit:
        return "repetition"
    limit = section.max_no_speech_prob
    if limit is not None and row.no_speech_prob is not None and row.no_speech_prob > limit:
        return "no_speech"
    limit = section.min_avg_logprob
    if limit is not None and row.avg_logprob is not None and row.avg_logprob < limit:
        return "low_logprob"
    limit = section.max_disagreement_cer
    cer = row.disagreement
    if limit is not None and cer is not None and cer > limit:
        return "disagreement"
    return ""


def filter_settings(section: LabelSection) -> dict[str, float | str | None]:
    """The thresholds as recorded (label.json, round.json): the label section's keys."""
    return {
        "max_compression_ratio": section.max_compression_ratio,
        "max_no_speech_prob": section.max_no_speech_prob,
        "min_avg_logprob": section.min_avg_logprob,
        "second_pass": section.second_pass,
        "max_disagreement_cer": section.max_disagreement_cer,
        "min_segment_s": section.min_segment_s,
        "max_segment_s": section.max_segment_s,
        "join_pause_s": section.join_pause_s,
    }
