"""The ONNX engine: onnxruntime sessions over Optimum's encoder/decoder layout, greedy decoding."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from pefty_whisper.errors import ConfigError, ModelError
from pefty_whisper.inference.confidence import Scored, row_confidence
from pefty_whisper.inference.engine import LongformRequest, ModelFiles
from pefty_whisper.inference.longform import FilePlan
from pefty_whisper.inference.results import Segment
from pefty_whisper.ranks import local_rank
from pefty_whisper.whisper.model_dir import ONNX_DECODER, ONNX_DECODER_WITH_PAST, ONNX_ENCODER

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pefty_whisper.inference.options import TranscriberOptions

__all__ = ["OnnxEngine"]

logger = logging.getLogger(__name__)


class OnnxEngine:
    """onnxruntime sessions for the Optimum layout, with the greedy loop transformers runs."""

    # No timestamp decoding (the greedy loop has no timestamp rules): long recordings chunked.
    sequential_decoder = None
    # The encoder is exported at Whisper's 30 s input.
    full_context_only = True

    def __init__(self, files: ModelFiles, options: TranscriberOptions) -> None:
        import onnxruntime

        model_dir = files.model_dir

        if options.beam_size != 1:
            raise ConfigError(
                f"beam_size {options.beam_size}: the onnx backend decodes greedily only; "
                "use beam_size 1, or the ct2 or torch backend for beam search"
            )
        for name in (ONNX_ENCODER, ONNX_DECODER):
            if not (model_dir / name).is_file():
                raise ModelError(f"{model_dir} has no {name}: not a complete ONNX export")
        self.device = options.device
        if self.device == "auto":
            available = onnxruntime.get_available_providers()
            self.device = "cuda" if "CUDAExecutionProvider" in available else "cpu"
        providers: list[Any] = ["CPUExecutionProvider"]
        if self.device.startswith("cuda"):
            # Under a launcher each rank decodes on its own GPU (LOCAL_RANK).
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": local_rank()}))

        def session(name: str, memory_plans: bool = True) -> Any:
            session_options = onnxruntime.SessionOptions()
            if options.num_threads > 0:
                session_options.intra_op_num_threads = options.num_threads
            session_options.enable_mem_pattern = memory_plans
            return onnxruntime.InferenceSession(
                str(model_dir / name), session_options, providers=providers
            )

        # onnxruntime keeps a memory plan per input shape; the encoder's are large (about
        # 1.5 GB per batch size for whisper-base), and a last partial batch adds another: peak
        # memory on 20 utterances went from 4.8 to 3.3 GB without them, and no slower.
        self.encoder = session(ONNX_ENCODER, memory_plans=False)
        self.decoder = session(ONNX_DECODER)
        with_past = model_dir / ONNX_DECODER_WITH_PAST
        self.decoder_with_past = session(ONNX_DECODER_WITH_PAST) if with_past.is_file() else None
        self.model = (self.encoder, self.decoder, self.decoder_with_past)
        self.tokens = files.tokens
        self._decoder_inputs = {i.name for i in self.decoder.get_inputs()}
        self._decoder_outputs = [o.name for o in self.decoder.get_outputs()]
        if self.decoder_with_past is not None:
            self._past_inputs = [i.name for i in self.decoder_with_past.get_inputs()]
            self._past_outputs = [o.name for o in self.decoder_with_past.get_outputs()]

    def encode(self, features: np.ndarray) -> np.ndarray:
        return self.encoder.run(["last_hidden_state"], {"input_features": features})[0]

    def logits(self, encoded: np.ndarray, input_ids: np.ndarray) -> np.ndarray:
        """Decoder logits for whole sequences (no cache): for parity checks and detection."""
        feed = {"input_ids": input_ids.astype(np.int64), "encoder_hidden_states": encoded}
        return self.decoder.run(["logits"], feed)[0]

    def detect_languages(self, encoded: np.ndarray) -> list[str]:
        # As transformers does: one decoder step on SOT, argmax over the language tokens.
        codes, ids = list(self.tokens.languages), list(self.tokens.languages.values())
        sot = np.full((encoded.shape[0], 1), self.tokens.sot, dtype=np.int64)
        scores = self.logits(encoded, sot)[:, -1, :][:, ids]
        return [codes[i] for i in scores.argmax(axis=-1)]

    def no_speech_probs(self, encoded: np.ndarray) -> list[float]:
        if self.tokens.no_speech is None:
            return [0.0] * encoded.shape[0]
        sot = np.full((encoded.shape[0], 1), self.tokens.sot, dtype=np.int64)
        logits = self.logits(encoded, sot)[:, -1, :].astype(np.float64)
        probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return (probs[:, self.tokens.no_speech] / probs.sum(axis=-1)).tolist()

    def generate(
        self, encoded: np.ndarray, prompts: list[list[int]], max_new_tokens: int
    ) -> list[list[int]]:
        eos = self.tokens.eot
        input_ids = np.asarray(prompts, dtype=np.int64)
        finished = np.zeros(len(prompts), dtype=bool)
        outputs = self.decoder.run(
            self._decoder_outputs, self._decoder_feed(input_ids, encoded, self._decoder_inputs)
        )
        logits, present = outputs[0], dict(zip(self._decoder_outputs[1:], outputs[1:], strict=True))
        generated: list[np.ndarray] = []
        for step in range(max_new_tokens):
            next_tokens = self._pick(logits[:, -1, :], first=step == 0)
            # Finished rows keep emitting end-of-text (transformers pads them the same way).
            next_tokens = np.where(finished, eos, next_tokens)
            generated.append(next_tokens)
            finished |= next_tokens == eos
            if finished.all() or step == max_new_tokens - 1:
                break
            if self.decoder_with_past is None:
                input_ids = np.concatenate([input_ids, next_tokens[:, None]], axis=1)
                logits = self.logits(encoded, input_ids)
                continue
            feed = self._past_feed(next_tokens[:, None], encoded, present)
            outputs = self.decoder_with_past.run(self._past_outputs, feed)
            logits = outputs[0]
            present.update(zip(self._past_outputs[1:], outputs[1:], strict=True))
        if not generated:
            return [[] for _ in prompts]
        tokens = np.stack(generated, axis=1)
        return [self.tokens.until_eos(row) for row in tokens.tolist()]

    def generate_scored(
        self, encoded: np.ndarray, prompts: list[list[int]], max_new_tokens: int
    ) -> list[Scored]:
        # The tokens generated, scored by one pass of the decoder without a cache.
        generated = self.generate(encoded, prompts, max_new_tokens)
        scored = []
        for index, (prompt, tokens) in enumerate(zip(prompts, generated, strict=True)):
            ids = np.asarray([prompt + tokens], dtype=np.int64)
            logits = self.logits(encoded[index : index + 1], ids)[0]
            ended = len(tokens) < max_new_tokens
            scored.append(row_confidence(logits, len(prompt), tokens, self.tokens, ended))
        return scored

    def predicts_timestamps(self, audio: np.ndarray) -> bool:
        return False

    def decode_sequential(
        self, audios: Sequence[np.ndarray], plans: Sequence[FilePlan], request: LongformRequest
    ) -> list[list[Segment]]:
        raise ConfigError(
            "decode.longform=sequential: the onnx backend has no timestamp decoding; "
            "use chunked (or auto), or a ct2 or torch model"
        )

    def _pick(self, logits: np.ndarray, first: bool) -> np.ndarray:
        # The logits processors transformers' Whisper generate applies in greedy decoding:
        # suppress_tokens always, begin_suppress_tokens at the first generated position.
        scores = logits.astype(np.float32, copy=True)
        if self.tokens.suppress_tokens:
            scores[:, list(self.tokens.suppress_tokens)] = -np.inf
        if first and self.tokens.begin_suppress_tokens:
            scores[:, list(self.tokens.begin_suppress_tokens)] = -np.inf
        return scores.argmax(axis=-1).astype(np.int64)

    @staticmethod
    def _decoder_feed(
        input_ids: np.ndarray, encoded: np.ndarray, wanted: set[str]
    ) -> dict[str, np.ndarray]:
        feed = {"input_ids": input_ids, "encoder_hidden_states": encoded}
        return {name: value for name, value in feed.items() if name in wanted}

    def _past_feed(
        self, input_ids: np.ndarray, encoded: np.ndarray, present: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        feed: dict[str, np.ndarray] = {}
        for name in self._past_inputs:
            if name == "input_ids":
                feed[name] = input_ids
            elif name == "encoder_hidden_states":
                feed[name] = encoded
            elif name.startswith("past_key_values."):
                feed[name] = present[name.replace("past_key_values.", "present.", 1)]
            else:
                raise ModelError(f"{ONNX_DECODER_WITH_PAST}: unexpected input {name!r}")
        return feed
