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
            self._load(model_dir, compute_type, options.num_threads)
            if self.device == "cuda" and options.device == "auto":
                self._encode_one_frame()
        except (RuntimeError, ValueError) as exc:
            if not (self.device == "cuda" and options.device == "auto"):
                raise ModelError(f"{model_dir}: CTranslate2 cannot load it ({exc})") from exc
            # ctranslate2 finds the GPU through the driver but needs CUDA 12's cuBLAS and
            # cuDNN 9 of its own on the loader path; torch's bundled copies are not on it.
            compute_type = "int8" if compute_type not in ("float32", "int16") else compute_type
            logger.warning(
                "CTranslate2 cannot run on the GPU (%s): decoding on the CPU in %s; see the "
                "README's Troubleshooting for the CUDA libraries it needs",
                str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                compute_type,
            )
            self.device = "cpu"
            try:
                self._load(model_dir, compute_type, options.num_threads)
            except (RuntimeError, ValueError) as cpu_exc:
                raise ModelError(f"{model_dir}: CTranslate2 cannot load it ({cpu_exc})") from exc
        self.compute_type = compute_type
        self.beam_size = options.beam_size

    def _load(self, model_dir: Path, compute_type: str, num_threads: int) -> None:
        import ctranslate2

        # faster-whisper's WhisperModel loads the CTranslate2 model, and this engine decodes
        # with that same object: one copy in memory for batched chunks and for faster-whisper's
        # sequential decoding. It needs tokenizer.json (every export writes one).
        self.whisper: Any = None
        if (model_dir / "tokenizer.json").is_file() and _has_faster_whisper():
            from faster_whisper import WhisperModel

            self.whisper = WhisperModel(
                str(model_dir),
                device=self.device,
                compute_type=compute_type,
                cpu_threads=num_threads,
            )
            self.model = self.whisper.model
        else:
            self.model = ctranslate2.models.Whisper(
                str(model_dir),
                device=self.device,
                compute_type=compute_type,
                intra_threads=num_threads,
            )

    def _encode_one_frame(self) -> None:
        """Loading can succeed without cuBLAS and cuDNN; the first encode is where that shows."""
        import ctranslate2

        features = np.zeros((1, self.model.n_mels, 2), dtype=np.float32)
        self.model.encode(ctranslate2.StorageView.from_array(features), to_cpu=True)

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


def _has_faster_whisper() -> bool:
    import importlib.util

    return importlib.util.find_spec("faster_whisper") is not None
