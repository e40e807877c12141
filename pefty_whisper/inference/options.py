"""How to decode: the options a Transcriber is built with, from the config's `decode:` section."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pefty_whisper.config import DecodeSection, ModelSection
from pefty_whisper.whisper.context import ContextMode

if TYPE_CHECKING:
    from pefty_whisper.config import Config

__all__ = ["TranscriberOptions"]


@dataclass(frozen=True)
class TranscriberOptions:
    """How to decode; the defaults suit a CPU box, `pefty transcribe` and evaluation alike."""

    backend: Literal["auto", "torch", "ct2", "onnx"] = "auto"  # auto: from the directory's files
    batch_size: int = 8
    beam_size: int = 1
    max_new_tokens: int = 225  # tokens after the prompt, the same meaning for every backend
    device: str = "auto"  # cuda if available, else cpu
    compute_type: str = "auto"  # ct2: int8 on CPU, float16 on GPU; torch: float32 / float16
    num_threads: int = 0  # 0: the library's default
    language: str | None = None  # None: the model directory's generation config decides
    # Encoder context per batch (see context.py): full pads to 30 s; auto to the batch's
    # longest waveform rounded up to context_step_s. The ONNX encoder is exported at 30 s only.
    context: ContextMode = ModelSection.context
    context_step_s: float = ModelSection.context_step_s
    # Long recordings (see longform.py and the `decode:` section for each one's why).
    longform: Literal["auto", "sequential", "chunked"] = DecodeSection.longform
    vad: Literal["auto", "always", "never"] = DecodeSection.vad
    condition_on_previous_text: bool = DecodeSection.condition_on_previous_text
    compression_ratio_threshold: float | None = DecodeSection.compression_ratio_threshold
    log_prob_threshold: float | None = DecodeSection.log_prob_threshold
    no_speech_threshold: float | None = DecodeSection.no_speech_threshold
    recover: bool = DecodeSection.recover  # decode again the speech sequential decoding skipped

    @classmethod
    def from_config(
        cls, config: Config, backend: Literal["auto", "torch", "ct2", "onnx"] = "auto"
    ) -> TranscriberOptions:
        """The config's `decode:` and context settings, so every command decodes alike."""
        decode = config.decode
        return cls(
            backend=backend,
            batch_size=decode.batch_size,
            beam_size=decode.beam_size,
            max_new_tokens=decode.max_new_tokens,
            device=decode.device,
            compute_type=decode.compute_type,
            context=config.model.context,
            context_step_s=config.model.context_step_s,
            longform=decode.longform,
            vad=decode.vad,
            condition_on_previous_text=decode.condition_on_previous_text,
            compression_ratio_threshold=decode.compression_ratio_threshold,
            log_prob_threshold=decode.log_prob_threshold,
            no_speech_threshold=decode.no_speech_threshold,
            recover=decode.recover,
        )
