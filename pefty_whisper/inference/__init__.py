"""Inference: the Transcriber (one model loaded once, any backend) and what it gives back."""

from pefty_whisper.inference.options import TranscriberOptions
from pefty_whisper.inference.results import (
    DecodeTimings,
    Segment,
    TranscribeReport,
    Transcription,
)
from pefty_whisper.inference.transcriber import Transcriber, transcribe_paths
from pefty_whisper.whisper.model_dir import BACKENDS, Backend

__all__ = [
    "BACKENDS",
    "Backend",
    "DecodeTimings",
    "Segment",
    "TranscribeReport",
    "Transcriber",
    "TranscriberOptions",
    "Transcription",
    "transcribe_paths",
]
