"""Transcriber: load a Whisper model once (PyTorch, CTranslate2 or ONNX) and serve many calls.

One decode path for every backend: the same feature extractor, the same prompt
(`<|startoftranscript|><|ko|><|transcribe|><|notimestamps|>`, read from the model directory's
generation config, never from reference text), the same token suppression, the same maximum
number of new tokens and the same detokenizer. So a float32 export transcribes exactly as the
PyTorch model it came from, and evaluation, export checks, benchmarks and a server all decode alike.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from pefty_whisper.config import DecodeSection, ModelSection
from pefty_whisper.context import ContextMode
from pefty_whisper.data.audio import SAMPLE_RATE, load_audio, probe_audio
from pefty_whisper.data.features import batch_features
from pefty_whisper.errors import ConfigError, DataError, ModelError
from pefty_whisper.inference.engine import Engine, load_engine
from pefty_whisper.inference.model_dir import (
    BACKENDS,
    Backend,
    detect_backend,
    load_feature_extractor,
    load_tokenizer,
    read_decoding_spec,
    resolve_model_path,
)
from pefty_whisper.whisper_files import NO_TIMESTAMPS

if TYPE_CHECKING:
    from pefty_whisper.config import Config
    from pefty_whisper.workspace import Workspace

__all__ = [
    "BACKENDS",
    "Backend",
    "DecodeTimings",
    "Segment",
    "Transcriber",
    "TranscriberOptions",
    "TranscribeReport",
    "Transcription",
    "detect_backend",
    "transcribe_paths",
]

logger = logging.getLogger(__name__)


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
        )


@dataclass(frozen=True)
class Segment:
    start: float  # seconds from the start of the file
    end: float
    text: str
    # What sequential decoding reports (faster-whisper); None where the path does not know.
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    compression_ratio: float | None = None
    temperature: float | None = None


@dataclass(frozen=True)
class Transcription:
    path: str
    text: str
    segments: tuple[Segment, ...]
    duration_s: float
    seconds: float  # wall time spent on this file (its share of the batches it was decoded in)
    language: str | None = None
    backend: str = ""
    # The decode path taken: "sequential (faster-whisper)", "sequential (transformers)",
    # "chunked (VAD)", "chunked (30 s windows)".
    method: str = ""
    # VAD speech that no segment covers, (start, end) in seconds: a dropped sentence.
    uncovered: tuple[tuple[float, float], ...] = ()

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
# The Transcriber
# --------------------------------------------------------------------------------------------


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
        if detected == "onnx" and options.longform == "sequential":
            raise ConfigError(
                "decode.longform=sequential: the onnx backend has no timestamp decoding; "
                "use chunked (or auto), or a ct2 or torch model"
            )
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
        self._engine: Engine = load_engine(detected, self.model_dir, options, self.spec)
        self._vocab = self.tokenizer.get_vocab()
        self._predicts_timestamps: bool | None = None
        logger.info(
            "loaded %s (%s, %s, language %s) in %.1f s",
            self.model_dir,
            detected,
            self._engine.device,
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

    @property
    def engine(self) -> Engine:
        return self._engine

    def transcribe_batch(
        self, audios: Sequence[np.ndarray], language: str | None = None
    ) -> list[str]:
        """Texts for waveforms of at most one window each (16 kHz float32), in batches."""
        return [self.detokenize(t) for t in self.transcribe_tokens(audios, language=language)]

    def transcribe_tokens(
        self, audios: Sequence[np.ndarray], language: str | None = None
    ) -> list[list[int]]:
        """Generated token ids per waveform (no prompt, no end-of-text): for parity checks."""
        waveforms = [self._check_waveform(audio, i) for i, audio in enumerate(audios)]
        tokens: list[list[int]] = []
        step = max(1, self.options.batch_size)
        for begin in range(0, len(waveforms), step):
            tokens.extend(self._decode_batch(waveforms[begin : begin + step], language))
        return tokens

    def transcribe_file(self, path: str | Path, **request: Any) -> Transcription:
        """One file of any length, decoded long-form (see longform.py)."""
        return self.transcribe_files([path], **request)[0]

    def transcribe_files(
        self,
        paths: Sequence[str | Path],
        progress: Callable[[int], None] | None = None,
        **request: Any,
    ) -> list[Transcription]:
        """Files of any length, long-form, in groups of about a batch of files; `progress(n)`
        gets files finished. `request`: language, prompt, temperature (transcribe_audios)."""
        results: list[Transcription] = []
        step = max(1, self.options.batch_size)
        for begin in range(0, len(paths), step):
            group = [str(p) for p in paths[begin : begin + step]]
            audios = [load_audio(p) for p in group]
            results.extend(self.transcribe_audios(audios, group, **request))
            if progress is not None:
                progress(len(group))
        return results

    def transcribe_audios(
        self,
        audios: Sequence[np.ndarray],
        names: Sequence[str] | None = None,
        language: str | None = None,
        prompt: str | None = None,
        temperature: float = 0.0,
    ) -> list[Transcription]:
        """Waveforms of any length, long-form and batched together: what a server calls for the
        requests it has queued. `language` overrides the model's, `prompt` is Whisper's
        previous-text prompt and `temperature` the first of the fallback schedule (both for
        sequential decoding; chunked decoding is greedy without a prompt)."""
        from pefty_whisper.inference import longform

        names = list(names) if names is not None else [f"audio {i}" for i in range(len(audios))]
        audios = [np.asarray(a, dtype=np.float32) for a in audios]
        if language is not None and self.spec.multilingual:
            language = _checked_language(language, self._vocab)
        started = time.perf_counter()
        method = self.method(audios[0]) if audios else "chunked"
        window_s = self.window_samples / SAMPLE_RATE
        chunked = method == "chunked"
        # A model known not to predict timestamps learnt one utterance per example: it gets
        # each VAD region alone instead of regions joined into 30 s.
        join = self._predicts_timestamps is not False
        plans = [
            longform.plan_file(a, self._use_vad(a, chunked), window_s, chunked, join)
            for a in audios
        ]
        if method == "sequential":
            found = longform.decode_sequential(self, audios, plans, language, prompt, temperature)
            label = "faster-whisper" if self.backend == "ct2" else "transformers"
        else:
            if prompt or temperature:
                logger.debug("chunked decoding is greedy without a prompt: prompt ignored")
            found = longform.decode_chunked(self, audios, plans, language)
            label = "30 s windows"
        elapsed = time.perf_counter() - started
        total = sum(len(a) for a in audios) or 1
        results = []
        for name, audio, plan, segments in zip(names, audios, plans, found, strict=True):
            segments = longform.monotonic(segments, len(audio) / SAMPLE_RATE)
            vad = " + VAD" if plan.regions is not None and method == "sequential" else ""
            label_here = "VAD" if method == "chunked" and plan.regions is not None else label
            uncovered = longform.uncovered_speech(plan.regions or (), segments)
            for start, end in uncovered:
                logger.warning(
                    "%s: speech at %s-%s that no segment covers (a dropped sentence?)",
                    name,
                    _clock(start),
                    _clock(end),
                )
            results.append(
                Transcription(
                    path=name,
                    text=" ".join(s.text for s in segments),
                    segments=tuple(segments),
                    duration_s=len(audio) / SAMPLE_RATE,
                    seconds=elapsed * len(audio) / total,
                    language=language or self.language,
                    backend=self.backend,
                    method=f"{method} ({label_here}{vad})",
                    uncovered=tuple(uncovered),
                )
            )
        return results

    def method(self, audio: np.ndarray | None = None) -> Literal["sequential", "chunked"]:
        """The long-form path: decode.longform, or for auto what the backend and model allow
        (a torch model is asked once, on the first audio, whether it predicts timestamps)."""
        if self.options.longform != "auto":
            return self.options.longform
        if self.backend == "ct2":
            return "sequential"
        if self.backend == "onnx" or audio is None:
            return "chunked"
        if self._predicts_timestamps is None:
            from pefty_whisper.inference.longform import predicts_timestamps

            self._predicts_timestamps = predicts_timestamps(self, audio)
        return "sequential" if self._predicts_timestamps else "chunked"

    def _use_vad(self, audio: np.ndarray, chunked: bool) -> bool:
        from pefty_whisper.inference.longform import vad_available

        if self.options.vad == "never":
            return False
        # Sequential decoding has the no-speech check for a short file; chunked decoding has
        # none, so VAD is its guard against decoding silence at any length.
        if self.options.vad == "auto" and not chunked and len(audio) <= self.window_samples:
            return False
        if not vad_available():
            if self.options.vad == "always":
                raise ModelError(
                    "decode.vad=always needs faster-whisper: pip install faster-whisper"
                )
            logger.warning("faster-whisper is not installed: no VAD, fixed 30 s windows")
            return False
        return True

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

    def _decode_batch(
        self, waveforms: Sequence[np.ndarray], language: str | None = None
    ) -> list[list[int]]:
        features = self.features(waveforms)
        started = time.perf_counter()
        encoded = self._engine.encode(features)
        self.timings.encoder_s += time.perf_counter() - started
        started = time.perf_counter()
        if language is not None and self.spec.multilingual:
            prompts = [self.prompt_ids(language)] * len(waveforms)
        else:
            prompts = self._prompts(encoded, len(waveforms))
        tokens = self._engine.generate(encoded, prompts, self._max_new_tokens(len(prompts[0])))
        self.timings.decoder_s += time.perf_counter() - started
        return tokens

    def _prompts(self, encoded: Any, batch: int) -> list[list[int]]:
        if self.language is not None or not self.spec.multilingual:
            return [self.prompt_ids()] * batch
        # No language configured: detect it per utterance, as transformers' generate does.
        return [self.prompt_ids(language) for language in self._engine.detect_languages(encoded)]

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


def _check_options(options: TranscriberOptions) -> None:
    if options.backend not in ("auto", *BACKENDS):
        raise ConfigError(f"unknown backend {options.backend!r}: use auto, torch, ct2 or onnx")
    if options.batch_size < 1 or options.beam_size < 1 or options.max_new_tokens < 1:
        raise ConfigError(
            "batch_size, beam_size and max_new_tokens must be at least 1 "
            f"(got {options.batch_size}, {options.beam_size}, {options.max_new_tokens})"
        )


def _checked_language(language: str, vocab: dict[str, int]) -> str:
    from pefty_whisper.whisper_files import language_code

    code = language_code(language)
    if f"<|{code}|>" not in vocab:
        raise DataError(f"language {language!r}: this model has no <|{code}|> token")
    return code


def _clock(seconds: float) -> str:
    minutes, secs = divmod(seconds, 60)
    return f"{int(minutes)}:{secs:05.2f}"


@dataclass(frozen=True)
class TranscribeReport:
    """What `pefty transcribe` decoded, and how fast."""

    backend: Backend
    transcriptions: tuple[Transcription, ...]
    # Files that could not be read, with the reason: the others are transcribed anyway.
    failures: tuple[tuple[str, str], ...] = ()

    @property
    def audio_seconds(self) -> float:
        return sum(t.duration_s for t in self.transcriptions)

    @property
    def seconds(self) -> float:
        return sum(t.seconds for t in self.transcriptions)

    @property
    def real_time_factor(self) -> float:
        return self.seconds / max(self.audio_seconds, 1e-9)


def transcribe_paths(
    workspace: Workspace,
    config: Config,
    model: str,
    paths: Sequence[str | Path],
    backend: Literal["auto", "torch", "ct2", "onnx"] = "auto",
) -> TranscribeReport:
    """Files decoded by a workspace's model with the config's decoding settings: what
    `pefty transcribe` runs, so it decodes as evaluation and the export probe do."""
    readable, failures = [], []
    for path in paths:
        # One unreadable file among many must not cost the others their transcripts: check
        # each before the model loads (headers only), decode the rest, report the bad ones.
        try:
            probe_audio(path)
            readable.append(path)
        except DataError as exc:
            logger.error("%s", exc)
            failures.append((str(path), str(exc).removeprefix(f"{path}: ")))
    model_dir = resolve_model_path(workspace.root, model)
    transcriber = Transcriber(model_dir, TranscriberOptions.from_config(config, backend))
    results = transcriber.transcribe_files(readable) if readable else []
    return TranscribeReport(transcriber.backend, tuple(results), tuple(failures))
