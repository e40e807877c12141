"""The protocol every backend answers, so the Transcriber never asks which one it holds.

An engine encodes a batch of log-mel features, detects the spoken language of each row, and
generates from per-row prompts. Backends live in one module each and import their library
(torch, ctranslate2, onnxruntime) only when one is built.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pefty_whisper.errors import ModelError

if TYPE_CHECKING:
    import numpy as np

    from pefty_whisper.inference import TranscriberOptions
    from pefty_whisper.inference.model_dir import Backend, DecodingSpec

__all__ = ["Engine", "load_engine", "until_eos"]

# The library each optional backend runs on, installed by the [export] extra.
_OPTIONAL_LIBRARY = {"ct2": "ctranslate2", "onnx": "onnxruntime"}


class Engine(Protocol):
    model: Any  # the loaded model object(s); the same object for the Transcriber's lifetime
    device: str  # where it runs: "cpu", "cuda", ...

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


def load_engine(
    backend: Backend, model_dir: Path, options: TranscriberOptions, spec: DecodingSpec
) -> Engine:
    """The engine for `backend`; only that backend's library is imported."""
    library = _OPTIONAL_LIBRARY.get(backend)
    if library is not None and importlib.util.find_spec(library) is None:
        raise ModelError(
            f"{model_dir} is a {backend} model, which needs {library}: "
            "pip install 'pefty-whisper[export]'"
        )
    if backend == "ct2":
        from pefty_whisper.inference.ct2_backend import Ct2Engine

        return Ct2Engine(model_dir, options, spec)
    if backend == "onnx":
        from pefty_whisper.inference.onnx_backend import OnnxEngine

        return OnnxEngine(model_dir, options, spec)
    from pefty_whisper.inference.torch_backend import TorchEngine

    return TorchEngine(model_dir, options, spec)


def until_eos(tokens: Sequence[int], eos: int) -> list[int]:
    """Generated tokens without the end-of-text token and the padding after it."""
    tokens = [int(t) for t in tokens]
    return tokens[: tokens.index(eos)] if eos in tokens else tokens
