"""The PyTorch engine: a transformers checkpoint, decoded by transformers' Whisper `generate`."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pefty_whisper.context import allow_short_context
from pefty_whisper.errors import ConfigError
from pefty_whisper.inference.engine import until_eos

if TYPE_CHECKING:
    from transformers import GenerationConfig

    from pefty_whisper.inference import TranscriberOptions
    from pefty_whisper.inference.model_dir import DecodingSpec

__all__ = ["TorchEngine"]

logger = logging.getLogger(__name__)


class TorchEngine:
    def __init__(self, model_dir: Path, options: TranscriberOptions, spec: DecodingSpec) -> None:
        import torch
        from transformers import WhisperForConditionalGeneration

        self.device = _device(options.device)
        dtype = _torch_dtype(options.compute_type, self.device)
        if options.num_threads > 0:
            torch.set_num_threads(options.num_threads)  # process-wide: torch has no per-model knob
        self.model = WhisperForConditionalGeneration.from_pretrained(model_dir, dtype=dtype)
        self.model.to(self.device).eval()
        allow_short_context(self.model)
        self.dtype = dtype
        self.spec = spec
        self.beam_size = options.beam_size

    def encode(self, features: np.ndarray) -> Any:
        import torch

        inputs = torch.from_numpy(features).to(self.device, self.dtype)
        with torch.inference_mode():
            return self.model.model.encoder(inputs)

    def detect_languages(self, encoded: Any) -> list[str]:
        # transformers' own detection (one decoder step on SOT, argmax over lang_to_id) is what
        # generate() runs when it gets no language, so passing its answer on to generate()
        # decodes exactly the tokens generate() would have found by itself.
        import torch

        config = copy.deepcopy(self.model.generation_config)
        if not getattr(config, "lang_to_id", None):
            config.lang_to_id = {f"<|{code}|>": i for code, i in self.spec.languages.items()}
        with torch.inference_mode():
            ids = self.model.detect_language(encoder_outputs=encoded, generation_config=config)
        codes = {i: token[2:-2] for token, i in config.lang_to_id.items()}
        return [codes[int(i)] for i in ids.tolist()]

    def generate(
        self, encoded: Any, prompts: list[list[int]], max_new_tokens: int
    ) -> list[list[int]]:
        import torch

        config = self._generation_config(max_new_tokens)
        if self.spec.multilingual:
            # The prompt is the generation config's language and task, as in training; no
            # decoder_input_ids, which would teacher-force. Without a configured language the
            # prompts carry the languages detect_languages found, one per row.
            config.language = self._prompt_languages(config, prompts) or self.spec.language
            config.task = self.spec.task
        with torch.inference_mode():
            output = self.model.generate(encoder_outputs=encoded, generation_config=config)
        # transformers 5 returns the new tokens only (no prompt), padded with end-of-text.
        sequences = output.sequences if hasattr(output, "sequences") else output
        return [until_eos(row, self.spec.eos_token_id) for row in sequences.tolist()]

    def _generation_config(self, max_new_tokens: int) -> GenerationConfig:
        config = copy.deepcopy(self.model.generation_config)  # generate() edits the one it gets
        # Whisper's generate adds the prompt length to max_length, so this allows exactly
        # max_new_tokens new tokens; setting max_new_tokens itself warns on every call that it
        # overrides the checkpoint's max_length.
        config.max_new_tokens = None
        config.max_length = max_new_tokens
        config.num_beams = self.beam_size
        config.do_sample = False
        config.return_timestamps = False
        return config

    def _prompt_languages(
        self, config: GenerationConfig, prompts: list[list[int]]
    ) -> str | list[str] | None:
        if not getattr(config, "lang_to_id", None):
            return None  # generate() cannot take languages without lang_to_id: it decides
        codes = {i: code for code, i in self.spec.languages.items()}
        languages = [codes[prompt[1]] for prompt in prompts]
        # One language for the batch is what generate() gets from the config: the same call.
        return languages[0] if len(set(languages)) == 1 else languages


def _device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _torch_dtype(compute_type: str, device: str) -> Any:
    import torch

    if compute_type == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    if compute_type in ("float32", "float16", "bfloat16"):
        return getattr(torch, compute_type)
    raise ConfigError(
        f"compute_type {compute_type!r} does not apply to the torch backend: "
        "use auto, float32, float16 or bfloat16"
    )
