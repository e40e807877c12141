"""Transcriber: load a Whisper model once (PyTorch, CTranslate2 or ONNX) and serve many calls.

One decode path for every backend: the same feature extractor, the same prompt
(`<|startoftranscript|><|ko|><|transcribe|><|notimestamps|>`, read from the model directory's
generation config, never from reference text), the same token suppression, the same maximum
number of new tokens and the same detokenizer. So a float32 export transcribes exactly as the
PyTorch model it came from, and evaluation, export checks, benchmarks and a server all decode alike.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from pefty_whisper.config import ModelSection
from pefty_whisper.context import ContextMode, allow_short_context
from pefty_whisper.data.audio import SAMPLE_RATE, load_audio
from pefty_whisper.data.features import batch_features
from pefty_whisper.errors import ConfigError, DataError, ModelError

if TYPE_CHECKING:
    from transformers import WhisperFeatureExtractor, WhisperTokenizer

logger = logging.getLogger(__name__)

Backend = Literal["torch", "ct2", "onnx"]
BACKENDS: tuple[Backend, ...] = ("torch", "ct2", "onnx")

SOT = "<|startoftranscript|>"
EOT = "<|endoftext|>"
NO_TIMESTAMPS = "<|notimestamps|>"
ONNX_ENCODER = "encoder_model.onnx"
ONNX_DECODER = "decoder_model.onnx"
ONNX_DECODER_WITH_PAST = "decoder_with_past_model.onnx"
# Whisper's text context when a directory does not say (all released models).
DEFAULT_MAX_TARGET_POSITIONS = 448

MODEL_DIR_HINT = (
    "a model directory holds a transformers checkpoint (config.json + *.safetensors), a "
    "CTranslate2 export (model.bin) or an ONNX export (encoder_model.onnx + decoder_model.onnx)"
)


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


@dataclass(frozen=True)
class Segment:
    start: float  # seconds from the start of the file
    end: float
    text: str


@dataclass(frozen=True)
class Transcription:
    path: str
    text: str
    segments: tuple[Segment, ...]
    duration_s: float
    seconds: float  # wall time spent on this file (its share of the batches it was decoded in)

    @property
    def real_time_factor(self) -> float:
        return self.seconds / self.duration_s if self.duration_s > 0 else 0.0


@dataclass
class DecodeTimings:
    """Accumulated seconds per stage, so a benchmark can say where the time goes."""

    encoder_s: float = 0.0
    decoder_s: float = 0.0
    features_s: float = 0.0

    @property
    def total_s(self) -> float:
        return self.encoder_s + self.decoder_s + self.features_s

    def reset(self) -> None:
        self.encoder_s = self.decoder_s = self.features_s = 0.0


# --------------------------------------------------------------------------------------------
# What a directory holds
# --------------------------------------------------------------------------------------------


def detect_backend(model_dir: Path) -> Backend:
    """The backend that can run `model_dir`, told apart by the files each format writes."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelError(f"{model_dir}: model directory not found")
    if (model_dir / "adapter_config.json").is_file():
        raise ModelError(f"{model_dir} holds a LoRA adapter, not a model: run `pefty merge` first")
    if (model_dir / "model.bin").is_file():
        return "ct2"
    if (model_dir / ONNX_ENCODER).is_file():
        return "onnx"
    if (model_dir / "config.json").is_file() and any(model_dir.glob("*.safetensors")):
        return "torch"
    raise ModelError(f"{model_dir} is not a Whisper model directory: {MODEL_DIR_HINT}")


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path} is not readable JSON: {exc}") from exc


@dataclass(frozen=True)
class DecodingSpec:
    """Everything about a directory's decoding that does not depend on the backend."""

    language: str | None  # language code ("ko"); None: detect per utterance
    task: str
    sot_token_id: int
    eos_token_id: int
    suppress_tokens: tuple[int, ...]
    begin_suppress_tokens: tuple[int, ...]
    max_target_positions: int
    multilingual: bool


def read_decoding_spec(
    model_dir: Path, tokenizer: WhisperTokenizer, language: str | None
) -> DecodingSpec:
    """Language, task and suppression from generation_config.json (all our exports carry it).

    A directory without one (a CTranslate2 model from elsewhere) decodes with the tokenizer's
    special tokens, no suppression here (CTranslate2 applies its own config.json lists) and
    per-utterance language detection unless a language is given.
    """
    from pefty_whisper.import_ct2 import language_code

    generation = _read_json(model_dir / "generation_config.json")
    vocab = tokenizer.get_vocab()
    multilingual = "<|en|>" in vocab
    chosen = language if language is not None else generation.get("language")
    code = language_code(chosen) if chosen and multilingual else None
    if code is not None and f"<|{code}|>" not in vocab:
        raise ModelError(f"{model_dir}: this Whisper tokenizer has no <|{code}|> language token")
    if language is not None and not multilingual:
        logger.warning("%s is an English-only Whisper: ignoring language=%s", model_dir, language)
    return DecodingSpec(
        language=code,
        task=generation.get("task") or "transcribe",
        sot_token_id=int(generation.get("decoder_start_token_id", vocab[SOT])),
        eos_token_id=int(generation.get("eos_token_id", vocab[EOT])),
        suppress_tokens=tuple(generation.get("suppress_tokens") or ()),
        begin_suppress_tokens=tuple(generation.get("begin_suppress_tokens") or ()),
        max_target_positions=_max_target_positions(model_dir),
        multilingual=multilingual,
    )


def _max_target_positions(model_dir: Path) -> int:
    config = _read_json(model_dir / "config.json")
    if "max_target_positions" in config:
        return int(config["max_target_positions"])
    if (model_dir / "model.bin").is_file():  # a CTranslate2 config.json does not say: ask the index
        from pefty_whisper.import_ct2 import Ct2ModelFile

        model = Ct2ModelFile(model_dir / "model.bin")
        if "decoder/position_encodings/encodings" in model:
            return model.shape("decoder/position_encodings/encodings")[0]
    return DEFAULT_MAX_TARGET_POSITIONS


def load_tokenizer(model_dir: Path) -> WhisperTokenizer:
    """The directory's tokenizer; a bare CTranslate2 dir (tokenizer.json only) is rebuilt."""
    if (model_dir / "tokenizer_config.json").is_file():
        from transformers import WhisperTokenizer

        return WhisperTokenizer.from_pretrained(model_dir)
    from pefty_whisper.import_ct2 import build_tokenizer

    return build_tokenizer(model_dir)


def load_feature_extractor(model_dir: Path) -> WhisperFeatureExtractor:
    """preprocessor_config.json (what CTranslate2 and faster-whisper read), else the processor's.

    The mel filters follow the model: a processor saved for another model size (80 vs 128
    mels) is rebuilt at the model's `num_mel_bins`, with a warning.
    """
    from transformers import WhisperFeatureExtractor

    processor_config = _read_json(model_dir / "processor_config.json")
    if (model_dir / "preprocessor_config.json").is_file():
        path = model_dir / "preprocessor_config.json"
        extractor = WhisperFeatureExtractor.from_json_file(str(path))
    elif "feature_extractor" in processor_config:
        extractor = WhisperFeatureExtractor(**processor_config["feature_extractor"])
    elif (model_dir / "model.bin").is_file():
        from pefty_whisper.import_ct2 import build_feature_extractor

        return build_feature_extractor(model_dir)  # checked against model.bin's conv1 there
    else:
        raise ModelError(f"{model_dir}: no preprocessor_config.json, so no feature settings")
    from pefty_whisper.model import with_mel_bins

    n_mels = _read_json(model_dir / "config.json").get("num_mel_bins")
    return with_mel_bins(extractor, n_mels, model_dir)


# --------------------------------------------------------------------------------------------
# Backends: encode features, then greedy/beam decode from per-row prompts
# --------------------------------------------------------------------------------------------


class _Engine(Protocol):
    model: Any  # the loaded model object(s); the same object for the Transcriber's lifetime

    def encode(self, features: np.ndarray) -> Any: ...

    def generate(
        self, encoded: Any, prompts: list[list[int]], max_new_tokens: int
    ) -> list[list[int]]: ...


def _resolve_device(device: str, backend: Backend) -> str:
    if device != "auto":
        return device
    if backend == "ct2":
        import ctranslate2

        return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    if backend == "onnx":
        import onnxruntime

        available = onnxruntime.get_available_providers()
        return "cuda" if "CUDAExecutionProvider" in available else "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _until_eos(tokens: Sequence[int], eos: int) -> list[int]:
    """Generated tokens without the end-of-text token and the padding after it."""
    tokens = [int(t) for t in tokens]
    return tokens[: tokens.index(eos)] if eos in tokens else tokens


class _TorchEngine:
    def __init__(self, model_dir: Path, options: TranscriberOptions, spec: DecodingSpec) -> None:
        import torch
        from transformers import WhisperForConditionalGeneration

        self.device = _resolve_device(options.device, "torch")
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

    def generate(
        self, encoded: Any, prompts: list[list[int]], max_new_tokens: int
    ) -> list[list[int]]:
        import copy

        import torch

        config = copy.deepcopy(self.model.generation_config)  # generate() edits the one it gets
        # Whisper's generate adds the prompt length to max_length, so this allows exactly
        # max_new_tokens new tokens; setting max_new_tokens itself warns on every call that it
        # overrides the checkpoint's max_length.
        config.max_new_tokens = None
        config.max_length = max_new_tokens
        config.num_beams = self.beam_size
        config.do_sample = False
        config.return_timestamps = False
        if self.spec.multilingual:
            # The prompt is the generation config's language and task, as in training (None:
            # generate() detects the language); no decoder_input_ids, which would teacher-force.
            config.language = self.spec.language
            config.task = self.spec.task
        with torch.inference_mode():
            output = self.model.generate(encoder_outputs=encoded, generation_config=config)
        # transformers 5 returns the new tokens only (no prompt), padded with end-of-text.
        sequences = output.sequences if hasattr(output, "sequences") else output
        return [_until_eos(row, self.spec.eos_token_id) for row in sequences.tolist()]


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


class _Ct2Engine:
    def __init__(self, model_dir: Path, options: TranscriberOptions, spec: DecodingSpec) -> None:
        import ctranslate2

        self.device = _resolve_device(options.device, "ct2")
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


class _OnnxEngine:
    """onnxruntime sessions for the Optimum layout, with the greedy loop transformers runs."""

    def __init__(self, model_dir: Path, options: TranscriberOptions, spec: DecodingSpec) -> None:
        import onnxruntime

        if options.beam_size != 1:
            raise ConfigError(
                f"beam_size {options.beam_size}: the onnx backend decodes greedily only; "
                "use beam_size 1, or the ct2 or torch backend for beam search"
            )
        for name in (ONNX_ENCODER, ONNX_DECODER):
            if not (model_dir / name).is_file():
                raise ModelError(f"{model_dir} has no {name}: not a complete ONNX export")
        self.device = _resolve_device(options.device, "onnx")
        providers = ["CPUExecutionProvider"]
        if self.device.startswith("cuda"):
            providers.insert(0, "CUDAExecutionProvider")

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
        self.spec = spec
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

    def detect_languages(self, encoded: np.ndarray, language_ids: Sequence[int]) -> list[int]:
        sot = np.full((encoded.shape[0], 1), self.spec.sot_token_id, dtype=np.int64)
        scores = self.logits(encoded, sot)[:, -1, :][:, list(language_ids)]
        return [int(language_ids[i]) for i in scores.argmax(axis=-1)]

    def generate(
        self, encoded: np.ndarray, prompts: list[list[int]], max_new_tokens: int
    ) -> list[list[int]]:
        eos = self.spec.eos_token_id
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
        return [_until_eos(row, eos) for row in tokens.tolist()]

    def _pick(self, logits: np.ndarray, first: bool) -> np.ndarray:
        # The logits processors transformers' Whisper generate applies in greedy decoding:
        # suppress_tokens always, begin_suppress_tokens at the first generated position.
        scores = logits.astype(np.float32, copy=True)
        if self.spec.suppress_tokens:
            scores[:, list(self.spec.suppress_tokens)] = -np.inf
        if first and self.spec.begin_suppress_tokens:
            scores[:, list(self.spec.begin_suppress_tokens)] = -np.inf
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


# --------------------------------------------------------------------------------------------
# The Transcriber
# --------------------------------------------------------------------------------------------


@dataclass
class _Window:
    """One <= 30 s piece of a file, decoded in a batch with pieces of other files."""

    file_index: int
    start_s: float
    end_s: float
    audio: np.ndarray
    text: str = field(default="")


class Transcriber:
    """Loads a model once and serves many calls, so a server can hold it."""

    def __init__(self, model_dir: Path, options: TranscriberOptions = TranscriberOptions()) -> None:
        self.model_dir = Path(model_dir)
        self.options = options
        _check_options(options)
        detected = detect_backend(self.model_dir)
        if options.backend not in ("auto", detected):
            raise ModelError(
                f"{self.model_dir} is a {detected} model directory, not {options.backend}: "
                f"use --backend {detected} (or auto)"
            )
        self.backend: Backend = detected
        self.context: ContextMode = options.context
        if detected == "onnx" and options.context != "full":
            logger.info("the ONNX encoder takes 30 s inputs only: decoding at the full context")
            self.context = "full"
        self.timings = DecodeTimings()
        self.feature_extractor = load_feature_extractor(self.model_dir)
        self.tokenizer = load_tokenizer(self.model_dir)
        self.spec = read_decoding_spec(self.model_dir, self.tokenizer, options.language)
        self.language: str | None = self.spec.language
        started = time.perf_counter()
        engines = {"torch": _TorchEngine, "ct2": _Ct2Engine, "onnx": _OnnxEngine}
        self._engine: _Engine = engines[detected](self.model_dir, options, self.spec)
        self._vocab = self.tokenizer.get_vocab()
        logger.info(
            "loaded %s (%s, %s, language %s) in %.1f s",
            self.model_dir,
            detected,
            getattr(self._engine, "device", "cpu"),
            self.language or "detected",
            time.perf_counter() - started,
        )

    @property
    def model(self) -> Any:
        """The loaded model object(s): a server holds this Transcriber, not a path."""
        return self._engine.model

    @property
    def window_samples(self) -> int:
        """The context one decode sees (30 s for stock Whisper): the feature extractor decides."""
        return int(self.feature_extractor.n_samples)

    # ---- public calls ------------------------------------------------------------------------

    def transcribe_batch(self, audios: Sequence[np.ndarray]) -> list[str]:
        """Texts for waveforms of at most one window each (16 kHz float32), in batches."""
        return [self.detokenize(tokens) for tokens in self.transcribe_tokens(audios)]

    def transcribe_tokens(self, audios: Sequence[np.ndarray]) -> list[list[int]]:
        """Generated token ids per waveform (no prompt, no end-of-text): for parity checks."""
        waveforms = [self._check_waveform(audio, i) for i, audio in enumerate(audios)]
        tokens: list[list[int]] = []
        step = max(1, self.options.batch_size)
        for begin in range(0, len(waveforms), step):
            tokens.extend(self._decode_batch(waveforms[begin : begin + step]))
        return tokens

    def transcribe_file(self, path: str | Path) -> Transcription:
        """One file of any length: consecutive windows decoded in batches, a segment per window."""
        return self.transcribe_files([path])[0]

    def transcribe_files(
        self, paths: Sequence[str | Path], progress: Callable[[int], None] | None = None
    ) -> list[Transcription]:
        """Many files, their windows batched together; `progress(n)` gets files finished."""
        results: list[Transcription] = []
        pending: list[tuple[int, Path, float, list[_Window]]] = []
        queued = 0
        for index, path in enumerate(paths):
            audio = load_audio(path)
            windows = self._split(index, audio)
            pending.append((index, Path(path), len(audio) / SAMPLE_RATE, windows))
            queued += len(windows)
            if queued >= self.options.batch_size:
                results.extend(self._finish(pending, progress))
                pending, queued = [], 0
        if pending:
            results.extend(self._finish(pending, progress))
        return results

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self.tokenizer.decode(list(tokens), skip_special_tokens=True).strip()

    def prompt_ids(self, language: str | None = None) -> list[int]:
        """`<|startoftranscript|><|lang|><|task|><|notimestamps|>` as token ids."""
        ids = [self.spec.sot_token_id]
        language = language or self.language
        if self.spec.multilingual:
            if language is None:
                raise ModelError(f"{self.model_dir}: no language to build a prompt with")
            ids += [self._vocab[f"<|{language}|>"], self._vocab[f"<|{self.spec.task}|>"]]
        ids.append(self._vocab[NO_TIMESTAMPS])
        return ids

    def features(self, audios: Sequence[np.ndarray]) -> np.ndarray:
        """Log-mel features of a batch, padded to its context (see context.py)."""
        started = time.perf_counter()
        features = batch_features(
            self.feature_extractor, audios, self.context, self.options.context_step_s
        )
        self.timings.features_s += time.perf_counter() - started
        return features

    # ---- internals ---------------------------------------------------------------------------

    def _decode_batch(self, waveforms: Sequence[np.ndarray]) -> list[list[int]]:
        features = self.features(waveforms)
        started = time.perf_counter()
        encoded = self._engine.encode(features)
        self.timings.encoder_s += time.perf_counter() - started
        started = time.perf_counter()
        prompts = self._prompts(encoded, len(waveforms))
        tokens = self._engine.generate(encoded, prompts, self._max_new_tokens(len(prompts[0])))
        self.timings.decoder_s += time.perf_counter() - started
        return tokens

    def _prompts(self, encoded: Any, batch: int) -> list[list[int]]:
        if self.language is not None or not self.spec.multilingual:
            return [self.prompt_ids()] * batch
        # No language configured: detect it per utterance, as transformers' generate does.
        if isinstance(self._engine, _Ct2Engine):
            found = [ranked[0][0] for ranked in self._engine.model.detect_language(encoded)]
            languages = [token[2:-2] for token in found]
        elif isinstance(self._engine, _OnnxEngine):
            ids = self._engine.detect_languages(encoded, self._language_ids())
            languages = [self.tokenizer.convert_ids_to_tokens(i)[2:-2] for i in ids]
        else:  # torch: generate() detects; the prompt here only sets the length
            return [self.prompt_ids("en")] * batch
        return [self.prompt_ids(language) for language in languages]

    def _language_ids(self) -> list[int]:
        from pefty_whisper.import_ct2 import whisper_language_ids

        return whisper_language_ids(self.tokenizer)

    def _max_new_tokens(self, prompt_length: int) -> int:
        # Every backend fails past the decoder's position table; transformers raises, CTranslate2
        # errors out, so cap here.
        room = self.spec.max_target_positions - prompt_length
        if self.options.max_new_tokens > room:
            logger.debug("max_new_tokens %d capped at %d", self.options.max_new_tokens, room)
        return max(1, min(self.options.max_new_tokens, room))

    def _check_waveform(self, audio: np.ndarray, index: int) -> np.ndarray:
        waveform = np.asarray(audio, dtype=np.float32)
        if waveform.ndim != 1:
            raise DataError(f"audio {index}: expected a mono waveform, got shape {waveform.shape}")
        if len(waveform) > self.window_samples:
            raise DataError(
                f"audio {index}: {len(waveform) / SAMPLE_RATE:.1f} s is longer than the model's "
                f"{self.window_samples / SAMPLE_RATE:.0f} s context: use transcribe_file"
            )
        return waveform

    def _split(self, file_index: int, audio: np.ndarray) -> list[_Window]:
        size = self.window_samples
        count = max(1, math.ceil(len(audio) / size))
        windows = []
        for i in range(count):
            piece = audio[i * size : (i + 1) * size]
            windows.append(
                _Window(
                    file_index, i * size / SAMPLE_RATE, (i * size + len(piece)) / SAMPLE_RATE, piece
                )
            )
        return windows

    def _finish(
        self,
        pending: list[tuple[int, Path, float, list[_Window]]],
        progress: Callable[[int], None] | None,
    ) -> list[Transcription]:
        windows = [w for _, _, _, file_windows in pending for w in file_windows]
        started = time.perf_counter()
        texts = self.transcribe_batch([w.audio for w in windows])
        elapsed = time.perf_counter() - started
        for window, text in zip(windows, texts, strict=True):
            window.text = text
        results = []
        for _, path, duration, file_windows in pending:
            segments = tuple(Segment(w.start_s, w.end_s, w.text) for w in file_windows)
            results.append(
                Transcription(
                    path=str(path),
                    text=" ".join(s.text for s in segments if s.text),
                    segments=segments,
                    duration_s=duration,
                    # Each file's share of the batch time, by the windows it contributed.
                    seconds=elapsed * len(file_windows) / len(windows),
                )
            )
        if progress is not None:
            progress(len(pending))
        return results


def _check_options(options: TranscriberOptions) -> None:
    if options.backend not in ("auto", *BACKENDS):
        raise ConfigError(f"unknown backend {options.backend!r}: use auto, torch, ct2 or onnx")
    if options.batch_size < 1 or options.beam_size < 1 or options.max_new_tokens < 1:
        raise ConfigError(
            "batch_size, beam_size and max_new_tokens must be at least 1 "
            f"(got {options.batch_size}, {options.beam_size}, {options.max_new_tokens})"
        )
