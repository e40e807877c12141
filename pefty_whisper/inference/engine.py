"""The protocol every backend answers, so the Transcriber never asks which one it holds.

An engine encodes a batch of log-mel features, detects the spoken language of each row,
generates from per-row prompts, and, where its library has one, decodes whole recordings by
timestamps (transformers' long-form generate, faster-whisper's transcribe). Backends live in
one module each; the Transcriber imports a backend's module (and so its library: torch,
ctranslate2, onnxruntime) only when it loads one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np
    from transformers import WhisperFeatureExtractor, WhisperTokenizer

    from pefty_whisper.inference.confidence import Scored
    from pefty_whisper.inference.longform import FilePlan
    from pefty_whisper.inference.results import Segment
    from pefty_whisper.whisper.tokens import WhisperTokens

__all__ = ["Engine", "LongformRequest", "ModelFiles"]


@dataclass(frozen=True)
class ModelFiles:
    """What every backend decodes with, loaded once by the Transcriber: the same tokens,
    tokenizer and feature extractor whichever library runs the weights."""

    model_dir: Path
    tokens: WhisperTokens
    tokenizer: WhisperTokenizer
    feature_extractor: WhisperFeatureExtractor

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self.tokenizer.decode(list(tokens), skip_special_tokens=True).strip()


@dataclass(frozen=True)
class LongformRequest:
    """One call's wishes for sequential decoding (a server request may differ from the next)."""

    language: str | None  # None: the model's
    prompt: str | None  # Whisper's previous-text prompt
    temperature: float  # the first of the fallback schedule
    word_timestamps: bool = False  # time each word by the alignment heads (Segment.words)


class Engine(Protocol):
    model: Any  # the loaded model object(s); the same object for the Transcriber's lifetime
    device: str  # where it runs: "cpu", "cuda", ...
    # The library that decodes whole recordings by timestamps ("transformers", "faster-whisper");
    # None where the backend has none (ONNX: chunked decoding only).
    sequential_decoder: str | None
    # Whether the encoder takes only Whisper's 30 s input (the ONNX export is traced at it).
    full_context_only: bool

    def encode(self, features: np.ndarray) -> Any:
        """The encoder output for a batch of features, kept in the engine's own form."""
        ...

    def detect_languages(self, encoded: Any) -> list[str]:
        """One language code per row ("ko"), from the decoder's first step after SOT."""
        ...

    def generate(
        self, encoded: Any, prompts: list[list[int]], max_new_tokens: int
    ) -> list[list[int]]:
        """New tokens per row (no prompt, no end-of-text), at most max_new_tokens each."""
        ...

    def generate_scored(
        self, encoded: Any, prompts: list[list[int]], max_new_tokens: int
    ) -> list[Scored]:
        """`generate`'s tokens with the mean log-probability and the no-speech probability of
        each row (confidence.py), which `pefty label` filters pseudo-labels by."""
        ...

    def no_speech_probs(self, encoded: Any) -> list[float]:
        """Per row, the probability of Whisper's no-speech token right after SOT (openai's
        no_speech_prob); 0.0 for a model without that token."""
        ...

    def predicts_timestamps(self, audio: np.ndarray) -> bool:
        """Whether the model, left to choose, starts a transcript with a timestamp: a model
        fine-tuned without timestamps has unlearnt them and is decoded chunked instead."""
        ...

    def decode_sequential(
        self, audios: Sequence[np.ndarray], plans: Sequence[FilePlan], request: LongformRequest
    ) -> list[list[Segment]]:
        """Whole recordings decoded by timestamps, with the library's hallucination guards;
        with VAD regions in a plan, only the speech is decoded and times map back."""
        ...
