"""The PyTorch engine: a transformers checkpoint, decoded by transformers' Whisper `generate`,
long recordings by its sequential long-form generate."""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from pefty_whisper.data.audio import SAMPLE_RATE
from pefty_whisper.errors import ConfigError
from pefty_whisper.inference.confidence import Scored, row_confidence
from pefty_whisper.inference.engine import LongformRequest, ModelFiles
from pefty_whisper.inference.longform import FilePlan, fallback, temperatures
from pefty_whisper.inference.results import Segment
from pefty_whisper.whisper.context import allow_short_context

if TYPE_CHECKING:
    from transformers import GenerationConfig

    from pefty_whisper.inference.options import TranscriberOptions

__all__ = ["TorchEngine"]

logger = logging.getLogger(__name__)

_TIME_PRECISION = 0.02  # seconds per timestamp token


class TorchEngine:
    sequential_decoder = "transformers"
    full_context_only = False

    def __init__(self, files: ModelFiles, options: TranscriberOptions) -> None:
        import torch
        from transformers import WhisperForConditionalGeneration

        self.device = _device(options.device)
        dtype = _torch_dtype(options.compute_type, self.device)
        if options.num_threads > 0:
            torch.set_num_threads(options.num_threads)  # process-wide: torch has no per-model knob
        self.model = WhisperForConditionalGeneration.from_pretrained(files.model_dir, dtype=dtype)
        self.model.to(self.device).eval()
        allow_short_context(self.model)
        self.dtype = dtype
        self.files = files
        self.tokens = files.tokens
        self.options = options

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

        config = self._with_languages(copy.deepcopy(self.model.generation_config))
        with torch.inference_mode():
            ids = self.model.detect_language(encoder_outputs=encoded, generation_config=config)
        codes = {i: token[2:-2] for token, i in config.lang_to_id.items()}
        return [codes[int(i)] for i in ids.tolist()]

    def generate(
        self, encoded: Any, prompts: list[list[int]], max_new_tokens: int
    ) -> list[list[int]]:
        import torch

        config = self._generation_config(max_new_tokens)
        if self.tokens.multilingual:
            # The prompt is the generation config's language and task, as in training; no
            # decoder_input_ids, which would teacher-force. Without a configured language the
            # prompts carry the languages detect_languages found, one per row.
            config.language = self._prompt_languages(prompts) or self.tokens.language
            config.task = self.tokens.task
        with torch.inference_mode():
            output = self.model.generate(encoder_outputs=encoded, generation_config=config)
        # transformers 5 returns the new tokens only (no prompt), padded with end-of-text.
        sequences = output.sequences if hasattr(output, "sequences") else output
        return [self.tokens.until_eos(row) for row in sequences.tolist()]

    def generate_scored(
        self, encoded: Any, prompts: list[list[int]], max_new_tokens: int
    ) -> list[Scored]:
        # One teacher-forced pass over what generate() chose scores it: cheaper than asking
        # generate() for every step's scores, and the same figures under beam search.
        import torch

        generated = self.generate(encoded, prompts, max_new_tokens)
        rows = [prompt + tokens for prompt, tokens in zip(prompts, generated, strict=True)]
        longest = max(len(row) for row in rows)
        ids = torch.full((len(rows), longest), self.tokens.eot, dtype=torch.long)
        mask = torch.zeros((len(rows), longest), dtype=torch.long)  # right padding: unread
        for index, row in enumerate(rows):
            ids[index, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[index, : len(row)] = 1
        with torch.inference_mode():
            logits = self.model(
                encoder_outputs=encoded,
                decoder_input_ids=ids.to(self.device),
                decoder_attention_mask=mask.to(self.device),
            )
        return [
            row_confidence(
                logits.logits[index, : len(row)].float().cpu().numpy(),
                len(prompt),
                tokens,
                self.tokens,
                ended=len(tokens) < max_new_tokens,
            )
            for index, (row, prompt, tokens) in enumerate(
                zip(rows, prompts, generated, strict=True)
            )
        ]

    def no_speech_probs(self, encoded: Any) -> list[float]:
        import torch

        hidden = encoded.last_hidden_state
        if self.tokens.no_speech is None:
            return [0.0] * hidden.shape[0]
        sot = torch.full((hidden.shape[0], 1), self.tokens.sot, device=self.device)
        with torch.inference_mode():
            state = self.model.model.decoder(input_ids=sot, encoder_hidden_states=hidden)
            logits = self.model.proj_out(state.last_hidden_state[:, -1]).float()
        return torch.softmax(logits, dim=-1)[:, self.tokens.no_speech].tolist()

    def _generation_config(self, max_new_tokens: int) -> GenerationConfig:
        config = self._with_languages(copy.deepcopy(self.model.generation_config))
        # Whisper's generate adds the prompt length to max_length, so this allows exactly
        # max_new_tokens new tokens; setting max_new_tokens itself warns on every call that it
        # overrides the checkpoint's max_length.
        config.max_new_tokens = None
        config.max_length = max_new_tokens
        config.num_beams = self.options.beam_size
        config.do_sample = False
        config.return_timestamps = False
        return config

    def _with_languages(self, config: GenerationConfig) -> GenerationConfig:
        # generate() reads languages only from lang_to_id: give it the token table's, which a
        # checkpoint without the table still has (read from its vocabulary).
        if not getattr(config, "lang_to_id", None) and self.tokens.multilingual:
            config.lang_to_id = {f"<|{code}|>": i for code, i in self.tokens.languages.items()}
        return config

    def _prompt_languages(self, prompts: list[list[int]]) -> str | list[str] | None:
        codes = {i: code for code, i in self.tokens.languages.items()}
        languages = [codes[prompt[1]] for prompt in prompts]
        # One language for the batch is what generate() gets from the config: the same call.
        return languages[0] if len(set(languages)) == 1 else languages

    # -- long recordings ----------------------------------------------------------------------

    def predicts_timestamps(self, audio: np.ndarray) -> bool:
        return self.timestamp_margin(audio) > 0

    def timestamp_margin(self, audio: np.ndarray) -> float:
        """log p(any timestamp) - log p(<|notimestamps|>) for the first token after the prompt."""
        import torch

        extractor = self.files.feature_extractor
        window = audio[: int(extractor.n_samples)]
        features = extractor(window, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
        prefix = self.tokens.prefix()
        no_timestamps = self.tokens.no_timestamps
        with torch.inference_mode():
            logits = (
                self.model(
                    input_features=features.to(self.device, self.dtype),
                    decoder_input_ids=torch.tensor([prefix], device=self.device),
                )
                .logits[0, -1]
                .float()
            )
        logprobs = torch.log_softmax(logits, dim=-1)
        timestamp = torch.logsumexp(logprobs[self.tokens.first_timestamp :], dim=-1)
        margin = float(timestamp - logprobs[no_timestamps])
        logger.info(
            "%s %s timestamps (log p: timestamps %.2f, <|notimestamps|> %.2f)",
            self.files.model_dir,
            "predicts" if margin > 0 else "does not predict",
            float(timestamp),
            float(logprobs[no_timestamps]),
        )
        return margin

    def decode_sequential(
        self, audios: Sequence[np.ndarray], plans: Sequence[FilePlan], request: LongformRequest
    ) -> list[list[Segment]]:
        """transformers' sequential long-form generate on the whole files, batched; with VAD,
        on the speech regions joined (as faster-whisper's vad_filter does), times mapped back."""
        import torch

        options, extractor = self.options, self.files.feature_extractor
        inputs, maps = [], []
        for audio, plan in zip(audios, plans, strict=True):
            joined, speech_map = _speech_only(audio, plan)
            inputs.append(joined)
            maps.append(speech_map)
        keep = [i for i, x in enumerate(inputs) if len(x) > 0]
        results: list[list[Segment]] = [[] for _ in audios]
        if not keep:
            return results
        batch = [inputs[i] for i in keep]
        features = extractor(
            batch,
            sampling_rate=SAMPLE_RATE,
            return_tensors="pt",
            truncation=False,
            padding="longest",
            return_attention_mask=True,
        )
        if features.input_features.shape[-1] < extractor.nb_max_frames:
            # Short files: one 30 s window each, as the model was trained.
            features = extractor(
                batch, sampling_rate=SAMPLE_RATE, return_tensors="pt", return_attention_mask=True
            )
        config = self._with_languages(copy.deepcopy(self.model.generation_config))
        config.max_length = None
        config.max_new_tokens = min(options.max_new_tokens, self.tokens.max_target_positions // 2)
        config.num_beams = options.beam_size
        config.return_timestamps = True
        if self.tokens.multilingual:
            config.language = request.language or self.tokens.language
            config.task = self.tokens.task
        kwargs: dict[str, Any] = {}
        if request.prompt:
            ids = self.files.tokenizer.get_prompt_ids(request.prompt, return_tensors="pt")
            kwargs["prompt_ids"] = ids.to(self.device)
        temps = _fallback_schedule(temperatures(request.temperature, fallback(options)))
        with torch.inference_mode():
            output = self.model.generate(
                features.input_features.to(self.device, self.dtype),
                attention_mask=features.attention_mask.to(self.device),
                generation_config=config,
                return_segments=True,
                condition_on_prev_tokens=options.condition_on_previous_text,
                compression_ratio_threshold=options.compression_ratio_threshold,
                logprob_threshold=options.log_prob_threshold,
                # transformers' no-speech check needs the log-probability one (it fails without).
                no_speech_threshold=options.no_speech_threshold
                if options.log_prob_threshold is not None
                else None,
                temperature=temps if len(temps) > 1 else temps[0],
                do_sample=False,
                **kwargs,
            )
        for row, index in enumerate(keep):
            found = []
            for segment in _hf_segments(output, row):
                text = self.files.detokenize(segment["tokens"].tolist())
                if text:
                    start, end = float(segment["start"]), float(segment["end"])
                    found.append((segment, Segment(start, end, text)))
            if request.word_timestamps:
                language = request.language or self.tokens.language
                timed = self._with_words(inputs[index], found, language)
            else:
                timed = [plain for _, plain in found]
            joined_s = len(inputs[index]) / SAMPLE_RATE
            results[index] = [_original_times(s, maps[index], joined_s) for s in timed]
        return results

    def _with_words(
        self, audio: np.ndarray, found: list[tuple[dict[str, Any], Segment]], language: str | None
    ) -> list[Segment]:
        """Each 30 s window's segments timed word by word (alignment.py), by one forced pass
        over the window's text tokens; transformers' segments of one window share its result."""

        from pefty_whisper.inference.alignment import (
            alignment_heads,
            timed_words,
            torch_token_times,
        )

        extractor, tokens = self.files.feature_extractor, self.tokens
        config = self.model.config
        heads = alignment_heads(
            self.model.generation_config, config.decoder_layers, config.decoder_attention_heads
        )
        windows: dict[int, list[tuple[dict[str, Any], Segment]]] = {}
        for segment, plain in found:
            windows.setdefault(id(segment["result"]), []).append((segment, plain))
        out = []
        for members in windows.values():
            first_tokens = members[0][0]["tokens"].tolist()
            offset = members[0][1].start
            if first_tokens and first_tokens[0] >= tokens.first_timestamp:
                offset -= (first_tokens[0] - tokens.first_timestamp) * _TIME_PRECISION
            begin = max(0, round(offset * SAMPLE_RATE))
            window = audio[begin : begin + int(extractor.n_samples)]
            features = extractor(window, sampling_rate=SAMPLE_RATE, return_tensors="pt")
            texts = [[t for t in s["tokens"].tolist() if t < tokens.eot] for s, _ in members]
            timed = torch_token_times(
                self.model,
                features.input_features.to(self.device, self.dtype),
                len(window) // extractor.hop_length,
                tokens.prompt(language),
                [t for text in texts for t in text],
                tokens.eot,
                heads,
            )
            per_segment, used = [], 0
            for text in texts:
                per_segment.append(timed[used : used + len(text)])
                used += len(text)
            segments = [plain for _, plain in members]
            out += timed_words(
                self.files.tokenizer, segments, per_segment, language, begin / SAMPLE_RATE
            )
        return out


def _fallback_schedule(temps: tuple[float, ...]) -> tuple[float, ...]:
    """The fallback temperatures, ending where they began.

    Where a window fails its guards (compression ratio, log-probability) at every temperature,
    transformers keeps the last one's output (generation_whisper.generate_with_fallback writes
    each temperature's over the previous one), a sample at 1.0; faster-whisper keeps the one
    with the best average log-probability (transcribe.generate_with_fallback), in practice the
    greedy one. A sample at 1.0 of a fine-tuned model often stops after a sentence with a single
    timestamp, and on that ending both libraries seek to the end of the window (the same rule in
    _retrieve_segment and _split_segments_by_timestamps): the rest of the window is lost.
    Repeating the first temperature last makes transformers' own loop keep that decode, as
    faster-whisper would. (On issue 21's long round it changed nothing: no window failed at every
    temperature there; the windows that ended early did so greedily, and recovery fills them.)
    """
    return (*temps, temps[0]) if len(temps) > 1 else temps


def _original_times(segment: Segment, speech_map: Any, joined_s: float) -> Segment:
    """A segment (and its words) timed in the joined VAD speech, mapped back to the file."""

    def back(start: float, end: float) -> tuple[float, float]:
        if speech_map is None:
            return round(start, 3), round(end, 3)
        start, end = min(start, joined_s), min(end, joined_s)
        original = (
            speech_map.get_original_time(start),
            speech_map.get_original_time(end, is_end=True),
        )
        return round(original[0], 3), round(original[1], 3)

    start, end = back(segment.start, segment.end)
    words = tuple(
        replace(w, **dict(zip(("start", "end"), back(w.start, w.end), strict=True)))
        for w in segment.words
    )
    return replace(segment, start=start, end=end, words=words)


def _speech_only(audio: np.ndarray, plan: FilePlan) -> tuple[np.ndarray, Any]:
    """The file's VAD speech joined (or the whole file without VAD), and the map back."""
    if plan.regions is None:
        return audio, None
    # Regions exist only where the VAD ran, i.e. where faster-whisper (an extra) is installed.
    from faster_whisper.vad import SpeechTimestampsMap

    samples = [
        {"start": round(s * SAMPLE_RATE), "end": round(e * SAMPLE_RATE)} for s, e in plan.regions
    ]
    joined = [audio[c["start"] : c["end"]] for c in samples]
    if not joined:
        return np.zeros(0, np.float32), None
    return np.concatenate(joined), SpeechTimestampsMap(samples, SAMPLE_RATE)


def _hf_segments(output: Any, row: int) -> list[dict[str, Any]]:
    if isinstance(output, dict) and "segments" in output:
        return list(output["segments"][row])
    return []


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
