"""What a decode gives back: segments, transcriptions of files, and where the time went."""

from __future__ import annotations

from dataclasses import dataclass

from pefty_whisper.whisper.model_dir import Backend

__all__ = ["DecodeTimings", "Segment", "TranscribeReport", "Transcription", "Word"]


@dataclass(frozen=True)
class Word:
    """One word of a segment, timed by the alignment heads (`--word-timestamps`)."""

    start: float  # seconds from the start of the file
    end: float
    text: str  # as the tokenizer wrote it, with its leading space (" weather")
    probability: float | None = None  # mean probability of its tokens, where known


@dataclass(frozen=True)
class Segment:
    start: float  # seconds from the start of the file
    end: float
    text: str
    # What sequential decoding reports (faster-whisper); None where the path does not know.
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    compression_ratio: float | None = None
    temperature: float | None = None
    # Word timings, when asked for (decode_sequential with word_timestamps); () otherwise.
    words: tuple[Word, ...] = ()
    # Speech the sequential decode skipped, decoded again on its own (longform.recover_speech):
    # its times are the VAD region's, not the model's.
    recovered: bool = False


@dataclass(frozen=True)
class Transcription:
    path: str
    text: str
    segments: tuple[Segment, ...]
    duration_s: float
    seconds: float  # wall time spent on this file (its share of the batches it was decoded in)
    language: str | None = None
    backend: str = ""
    # The decode path taken: "sequential (faster-whisper)", "sequential (transformers)",
    # "chunked (VAD)", "chunked (30 s windows)".
    method: str = ""
    # VAD speech that no segment covers, (start, end) in seconds: a dropped sentence that
    # recovery (decode.recover) could not fill either.
    uncovered: tuple[tuple[float, float], ...] = ()

    @property
    def real_time_factor(self) -> float:
        return self.seconds / self.duration_s if self.duration_s > 0 else 0.0


@dataclass
class DecodeTimings:
    """Accumulated seconds per stage, so a benchmark can say where the time goes."""

    encoder_s: float = 0.0
    decoder_s: float = 0.0
    features_s: float = 0.0

    @property
    def total_s(self) -> float:
        return self.encoder_s + self.decoder_s + self.features_s

    def reset(self) -> None:
        self.encoder_s = self.decoder_s = self.features_s = 0.0


@dataclass(frozen=True)
class TranscribeReport:
    """What `pefty transcribe` decoded, and how fast."""

    backend: Backend
    transcriptions: tuple[Transcription, ...]
    # Files that could not be read, with the reason: the others are transcribed anyway.
    failures: tuple[tuple[str, str], ...] = ()

    @property
    def audio_seconds(self) -> float:
        return sum(t.duration_s for t in self.transcriptions)

    @property
    def seconds(self) -> float:
        return sum(t.seconds for t in self.transcriptions)

    @property
    def real_time_factor(self) -> float:
        return self.seconds / max(self.audio_seconds, 1e-9)
