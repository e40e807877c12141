"""The CTranslate2 engine: `ctranslate2.models.Whisper`, the runtime faster-whisper is built on;
long recordings by faster-whisper's own `transcribe` over the same loaded model."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pefty_whisper.errors import ModelError
from pefty_whisper.inference.confidence import Scored
from pefty_whisper.inference.engine import LongformRequest, ModelFiles
from pefty_whisper.inference.longform import FilePlan, fallback, temperatures
from pefty_whisper.inference.results import Segment, Word
from pefty_whisper.ranks import local_rank

if TYPE_CHECKING:
    from pefty_whisper.inference.options import TranscriberOptions

__all__ = ["Ct2Engine"]

logger = logging.getLogger(__name__)


class Ct2Engine:
    sequential_decoder = "faster-whisper"
    full_context_only = False

    def __init__(self, files: ModelFiles, options: TranscriberOptions) -> None:
        import ctranslate2

        model_dir = files.model_dir
        self.files, self.tokens, self.options = files, files.tokens, options

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

    def _load(self, model_dir: Path, compute_type: str, num_threads: int) -> None:
        import ctranslate2

        # faster-whisper's WhisperModel loads the CTranslate2 model, and this engine decodes
        # with that same object: one copy in memory for batched chunks and for faster-whisper's
        # sequential decoding. It needs tokenizer.json (every export writes one).
        self.whisper: Any = None
        # Under a launcher each rank decodes on its own GPU (LOCAL_RANK); the CPU has one.
        index = local_rank() if self.device == "cuda" else 0
        if (model_dir / "tokenizer.json").is_file() and _has_faster_whisper():
            from faster_whisper import WhisperModel

            self.whisper = WhisperModel(
                str(model_dir),
                device=self.device,
                device_index=index,
                compute_type=compute_type,
                cpu_threads=num_threads,
            )
            self.model = self.whisper.model
        else:
            self.model = ctranslate2.models.Whisper(
                str(model_dir),
                device=self.device,
                device_index=index,
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
            beam_size=self.options.beam_size,
            max_length=2 * max_new_tokens,
            return_scores=False,
        )
        return [list(result.sequences_ids[0]) for result in results]

    def generate_scored(
        self, encoded: Any, prompts: list[list[int]], max_new_tokens: int
    ) -> list[Scored]:
        results = self.model.generate(
            encoded,
            prompts,
            beam_size=self.options.beam_size,
            max_length=2 * max_new_tokens,
            return_scores=True,
            return_no_speech_prob=True,
        )
        scored = []
        for result in results:
            tokens = list(result.sequences_ids[0])
            # CTranslate2's score is the sum over the tokens divided by their count (length
            # penalty 1); over len + 1 as faster-whisper computes avg_logprob.
            total = result.scores[0] * len(tokens)
            no_speech = result.no_speech_prob if self.tokens.no_speech is not None else None
            scored.append(Scored(tokens, total / (len(tokens) + 1), no_speech))
        return scored

    def no_speech_probs(self, encoded: Any) -> list[float]:
        if self.tokens.no_speech is None:
            return [0.0] * encoded.shape[0]
        # CTranslate2 reports it from the step after SOT; one new token is all it needs.
        results = self.model.generate(
            encoded,
            [[self.tokens.sot]] * encoded.shape[0],
            max_length=2,
            return_no_speech_prob=True,
        )
        return [float(result.no_speech_prob) for result in results]

    # -- long recordings ----------------------------------------------------------------------

    def predicts_timestamps(self, audio: np.ndarray) -> bool:
        # faster-whisper decides per window and falls back by itself: always sequential.
        return True

    def decode_sequential(
        self, audios: Sequence[np.ndarray], plans: Sequence[FilePlan], request: LongformRequest
    ) -> list[list[Segment]]:
        return [
            self._faster_whisper(audio, plan, request)
            for audio, plan in zip(audios, plans, strict=True)
        ]

    def _faster_whisper(
        self, audio: np.ndarray, plan: FilePlan, request: LongformRequest
    ) -> list[Segment]:
        from faster_whisper.vad import VadOptions

        options = self.options
        if self.whisper is None:  # faster-whisper's WhisperModel over the same model
            raise ModelError(
                f"{self.files.model_dir}: sequential decoding of a CTranslate2 model needs "
                "faster-whisper and the export's tokenizer.json; or use decode.longform=chunked"
            )
        conditioned = options.condition_on_previous_text or request.prompt is not None
        # faster-whisper refuses prompt + max_new_tokens beyond 448; a previous-text prompt
        # takes up to half of the decoder's positions.
        room = self.tokens.max_target_positions // (2 if conditioned else 1) - 4
        segments, _ = self.whisper.transcribe(
            audio,
            language=request.language or self.tokens.language,
            task=self.tokens.task,
            beam_size=options.beam_size,
            best_of=options.beam_size,
            temperature=list(temperatures(request.temperature, fallback(options))),
            compression_ratio_threshold=options.compression_ratio_threshold,
            log_prob_threshold=options.log_prob_threshold,
            no_speech_threshold=options.no_speech_threshold,
            condition_on_previous_text=options.condition_on_previous_text,
            initial_prompt=request.prompt,
            without_timestamps=False,
            max_new_tokens=min(options.max_new_tokens, room),
            vad_filter=plan.regions is not None,
            vad_parameters=VadOptions(min_silence_duration_ms=160, speech_pad_ms=400),
            word_timestamps=request.word_timestamps,
        )
        return [
            Segment(
                s.start,
                s.end,
                s.text.strip(),
                avg_logprob=s.avg_logprob,
                no_speech_prob=s.no_speech_prob,
                compression_ratio=s.compression_ratio,
                temperature=s.temperature,
                words=tuple(
                    Word(
                        round(float(w.start), 3),
                        round(float(w.end), 3),
                        w.word,
                        round(float(w.probability), 4),
                    )
                    for w in s.words or ()
                ),
            )
            for s in segments
            if s.text.strip()
        ]


def _has_faster_whisper() -> bool:
    import importlib.util

    return importlib.util.find_spec("faster_whisper") is not None
