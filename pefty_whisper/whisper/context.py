"""The encoder context: how many seconds of audio the encoder sees per batch.

Whisper pads every input to 30 s, so for short utterances most of the encoder's work is
padding (KsponSpeech averages 5.6 s: about 80% padding). With `model.context: auto` a batch
is padded only to its longest utterance, rounded up to `model.context_step_s`, and the
encoder's position table is sliced to match, as whisper.cpp's `audio_ctx` does. `full` keeps
Whisper's 30 s, which is what faster-whisper and every other consumer of an export feed it.

This module is the one place that decides the context: the training collator and the
Transcriber both ask `context_samples`, and nothing else assumes 3000 frames.
"""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from transformers import WhisperForConditionalGeneration

ContextMode = Literal["full", "auto"]
# Whisper hears 16 kHz mono; every waveform the data path and the decoders hand on is at it.
SAMPLE_RATE = 16_000
# Whisper's hop (160 samples) times its second convolution's stride (2): the encoder takes an
# even number of mel frames, so every context is a multiple of 20 ms.
FRAME_PAIR_SAMPLES = 320


def context_samples(longest: int, mode: ContextMode, step_s: float, full: int) -> int:
    """Samples to pad a batch to, given its longest waveform (in samples).

    `full` is the model's whole window (480,000 samples for stock Whisper); `auto` the longest
    waveform rounded up to a multiple of `step_s` seconds, at most the full window. Rounding
    keeps the number of distinct shapes small and makes an utterance's context depend on its
    own length more than on its batch-mates'.
    """
    if mode == "full":
        return full
    if mode != "auto":
        raise ValueError(f"unknown context mode {mode!r}: use full or auto")
    pairs = max(1, round(step_s * SAMPLE_RATE / FRAME_PAIR_SAMPLES))
    step = pairs * FRAME_PAIR_SAMPLES
    return min(full, max(step, math.ceil(longest / step) * step))


def allow_short_context(model: WhisperForConditionalGeneration) -> None:
    """Let the model's encoder take fewer mel frames than its full context.

    transformers' Whisper encoder refuses any input that is not exactly
    `2 * max_source_positions` frames and adds the whole position table. For the length of one
    forward call this sets both to the input's length; the weights are untouched, so a model
    saved afterwards is a stock Whisper checkpoint. Idempotent. The patch mutates the shared
    config, so one lock per encoder serializes its forward calls: two threads decoding at
    different contexts (a server) would otherwise see each other's lengths.
    """
    encoder = model.get_encoder()
    if getattr(encoder, "_pefty_short_context", False):
        return
    full_forward = encoder.forward
    stride = encoder.conv1.stride[0] * encoder.conv2.stride[0]
    full_positions = encoder.embed_positions.num_embeddings
    lock = threading.Lock()

    def forward(input_features: Any, *args: Any, **kwargs: Any) -> Any:
        with lock:
            return short_forward(input_features, *args, **kwargs)

    def short_forward(input_features: Any, *args: Any, **kwargs: Any) -> Any:
        frames = input_features.shape[-1]
        positions = frames // stride
        if positions == full_positions:
            return full_forward(input_features, *args, **kwargs)
        if frames % stride or not 0 < positions < full_positions:
            raise ValueError(
                f"Whisper's encoder takes a multiple of {stride} mel frames up to "
                f"{full_positions * stride}; got {frames}"
            )
        config = encoder.config
        config.max_source_positions = positions
        encoder.embed_positions.num_embeddings = positions
        try:
            return full_forward(input_features, *args, **kwargs)
        finally:
            config.max_source_positions = full_positions
            encoder.embed_positions.num_embeddings = full_positions

    encoder.forward = forward
    encoder._pefty_short_context = True
