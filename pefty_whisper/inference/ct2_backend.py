"""The CTranslate2 engine: `ctranslate2.models.Whisper`, the runtime faster-whisper is built on."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pefty_whisper.errors import ModelError

if TYPE_CHECKING:
    from pefty_whisper.inference import TranscriberOptions
    from pefty_whisper.inference.model_dir import DecodingSpec

__all__ = ["Ct2Engine"]

logger = logging.getLogger(__name__)


class Ct2Engine:
    def __init__(self, model_dir: Path, options: TranscriberOptions, spec: DecodingSpec) -> None:
        import ctranslate2

        self.device = options.device
        if self.device == "auto":
            self.device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        compute_type = options.compute_type
        if compute_type == "auto":
            compute_type = "float16" if self.device == "cuda" else "int8"
        try:
            self.model = ctranslate2.models.Whisper(
                str(model_dir),
                device=self.device,
                compute_type=compute_type,
                intra_threads=options.num_threads,
            )
        except (RuntimeError, ValueError) as exc:
            raise ModelError(f"{model_dir}: CTranslate2 cannot load it ({exc})") from exc
        self.compute_type = compute_type
        self.beam_size = options.beam_size

    def encode(self, features: np.ndarray) -> Any:
        import ctranslate2

        storage = ctranslate2.StorageView.from_array(np.ascontiguousarray(features))
        # to_cpu=False: the encoder output stays on the device for generate().
        return self.model.encode(storage, to_cpu=False)

    def detect_languages(self, encoded: Any) -> list[str]:
        # Ranked (token, probability) pairs per row; the best is "<|ko|>".
        return [ranked[0][0][2:-2] for ranked in self.model.detect_language(encoded)]

    def generate(
        self, encoded: Any, prompts: list[list[int]], max_new_tokens: int
    ) -> list[list[int]]:
        # CTranslate2 generates at most max_length // 2 new tokens (openai/whisper's
        # sample_len = n_text_ctx // 2), so ask for twice the number of new tokens.
        results = self.model.generate(
            encoded,
            prompts,
            beam_size=self.beam_size,
            max_length=2 * max_new_tokens,
            return_scores=False,
        )
        return [list(result.sequences_ids[0]) for result in results]
