"""Transcriber: load a Whisper model once (PyTorch, CTranslate2 or ONNX) and serve many calls.

One decode path for every backend: the same feature extractor, the same prompt
(`<|startoftranscript|><|ko|><|transcribe|><|notimestamps|>`, read from the model directory's
generation config, never from reference text), the same token suppression, the same maximum
number of new tokens and the same detokenizer. So a float32 export transcribes exactly as the
PyTorch model it came from, and evaluation, export checks, benchmarks and a server all decode alike.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from pefty_whisper.data.audio import SAMPLE_RATE, load_audio, probe_audio
from pefty_whisper.data.features import batch_features
from pefty_whisper.errors import ConfigError, DataError, ModelError
from pefty_whisper.inference.confidence import ScoredText
from pefty_whisper.inference.engine import Engine, LongformRequest, ModelFiles
from pefty_whisper.inference.longform import (
    FilePlan,
    decode_chunked,
    monotonic,
    plan_file,
    recover_speech,
    speech_regions,
    uncovered_speech,
    vad_available,
)
from pefty_whisper.inference.options import TranscriberOptions
from pefty_whisper.inference.results import DecodeTimings, TranscribeReport, Transcription
from pefty_whisper.whisper.context import ContextMode
from pefty_whisper.whisper.model_dir import BACKENDS, GENERATION_CONFIG, Backend, ModelDir
from pefty_whisper.whisper.processor import load_feature_extractor, load_tokenizer
from pefty_whisper.whisper.tokens import WhisperTokens

if TYPE_CHECKING:
    from pefty_whisper.config import Config
    from pefty_whisper.workspace import Workspace

__all__ = ["Transcriber", "transcribe_paths"]

logger = logging.getLogger(__name__)


class Transcriber:
    """Loads a model once and serves many calls, so a server can hold it."""

    def __init__(self, model_dir: Path, options: TranscriberOptions | None = None) -> None:
        self.model_dir = Path(model_dir)
        self.options = options = options or TranscriberOptions()
        _check_options(options)
        directory = ModelDir(self.model_dir)
        detected = directory.backend
        if options.backend not in ("auto", detected):
            raise ModelError(
                f"{self.model_dir} is a {detected} model directory, not {options.backend}: "
                f"use --backend {detected} (or auto)"
            )
        self.backend: Backend = detected
        self.timings = DecodeTimings()
        self.feature_extractor = load_feature_extractor(self.model_dir)
        self.tokenizer = load_tokenizer(self.model_dir)
        self.tokens = WhisperTokens.from_tokenizer(
            self.tokenizer,
            directory.json(GENERATION_CONFIG),
            language=options.language,
            max_target_positions=directory.max_target_positions(),
        )
        self.language: str | None = self.tokens.language
        self.files = ModelFiles(self.model_dir, self.tokens, self.tokenizer, self.feature_extractor)
        started = time.perf_counter()
        self._engine: Engine = _load_engine(detected, self.files, options)
        if options.longform == "sequential" and self._engine.sequential_decoder is None:
            raise ConfigError(
                f"decode.longform=sequential: the {detected} backend has no timestamp decoding; "
                "use chunked (or auto), or a ct2 or torch model"
            )
        self.context: ContextMode = options.context
        if self._engine.full_context_only and options.context != "full":
            logger.info("the %s encoder takes 30 s inputs only: full context", detected)
            self.context = "full"
        self._predicts_timestamps: bool | None = None
        self._told_no_words = False
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

    def transcribe_speech(
        self, audios: Sequence[np.ndarray], language: str | None = None
    ) -> list[str]:
        """As transcribe_batch, but "" for a waveform whose no-speech probability is above
        decode.no_speech_threshold: what recovery decodes, where the VAD may have heard a
        cough or a door (sequential decoding skips those by the same check)."""
        tokens = self.transcribe_tokens(audios, language=language, speech_only=True)
        return [self.detokenize(t) for t in tokens]

    def transcribe_tokens(
        self, audios: Sequence[np.ndarray], language: str | None = None, speech_only: bool = False
    ) -> list[list[int]]:
        """Generated token ids per waveform (no prompt, no end-of-text): for parity checks;
        `speech_only` gives none for a waveform the no-speech check finds silent."""
        waveforms = [self._check_waveform(audio, i) for i, audio in enumerate(audios)]
        tokens: list[list[int]] = []
        step = max(1, self.options.batch_size)
        for begin in range(0, len(waveforms), step):
            batch = waveforms[begin : begin + step]
            tokens.extend(self._decode_batch(batch, language, speech_only))
        return tokens

    def transcribe_scored(
        self, audios: Sequence[np.ndarray], language: str | None = None
    ) -> list[ScoredText]:
        """`transcribe_batch` with each row's mean log-probability and no-speech probability
        (confidence.py): what `pefty label` keeps or drops a pseudo-label by."""
        waveforms = [self._check_waveform(audio, i) for i, audio in enumerate(audios)]
        results: list[ScoredText] = []
        step = max(1, self.options.batch_size)
        for begin in range(0, len(waveforms), step):
            for row in self._decode_batch(waveforms[begin : begin + step], language, scored=True):
                text = self.detokenize(row.tokens)
                results.append(ScoredText(text, row.tokens, row.avg_logprob, row.no_speech_prob))
        return results

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
        word_timestamps: bool = False,
    ) -> list[Transcription]:
        """Waveforms of any length, long-form and batched together: what a server calls for the
        requests it has queued. `language` overrides the model's, `prompt` is Whisper's
        previous-text prompt and `temperature` the first of the fallback schedule (both for
        sequential decoding; chunked decoding is greedy without a prompt). `word_timestamps`
        times every word (Segment.words) on the sequential path; chunks have no words."""
        names = list(names) if names is not None else [f"audio {i}" for i in range(len(audios))]
        audios = [np.asarray(a, dtype=np.float32) for a in audios]
        if language is not None and self.tokens.multilingual:
            language = _checked_language(language, self.tokens)
        started = time.perf_counter()
        method = self.method(audios[0]) if audios else "chunked"
        if word_timestamps and method == "chunked" and not self._told_no_words:
            # Chunks are decoded without timestamps: there is nothing to time words against.
            logger.warning(
                "word timestamps come from sequential decoding; %s decodes chunked "
                "(decode.longform=%s): segments without words",
                self.model_dir,
                self.options.longform,
            )
            self._told_no_words = True
        window_s = self.window_samples / SAMPLE_RATE
        chunked = method == "chunked"
        # A model known not to predict timestamps learnt one utterance per example: it gets
        # each VAD region alone instead of regions joined into 30 s.
        join = self._predicts_timestamps is not False
        plans = [plan_file(a, self._use_vad(a, chunked), window_s, chunked, join) for a in audios]
        if method == "sequential":
            request = LongformRequest(language, prompt, temperature, word_timestamps)
            found = self._engine.decode_sequential(audios, plans, request)
            label = self._engine.sequential_decoder or ""
        else:
            if prompt or temperature:
                logger.debug("chunked decoding is greedy without a prompt: prompt ignored")
            found = decode_chunked(self.transcribe_batch, audios, plans, language)
            label = "30 s windows"
        found = [monotonic(s, len(a) / SAMPLE_RATE) for a, s in zip(audios, found, strict=True)]
        heard = plans
        if method == "sequential" and self.options.recover:
            heard = [self._heard(a, p, window_s) for a, p in zip(audios, plans, strict=True)]
            found = recover_speech(
                lambda pieces: self.transcribe_speech(pieces, language=language),
                audios,
                heard,
                found,
                window_s,
            )
        elapsed = time.perf_counter() - started
        total = sum(len(a) for a in audios) or 1
        results = []
        for name, audio, plan, speech, segments in zip(
            names, audios, plans, heard, found, strict=True
        ):
            vad = " + VAD" if plan.regions is not None and method == "sequential" else ""
            label_here = "VAD" if method == "chunked" and plan.regions is not None else label
            uncovered = uncovered_speech(speech.regions or (), segments)
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
        if self._engine.sequential_decoder is None or audio is None:
            return "chunked"
        if self._predicts_timestamps is None:
            self._predicts_timestamps = self._engine.predicts_timestamps(audio)
        return "sequential" if self._predicts_timestamps else "chunked"

    def _use_vad(self, audio: np.ndarray, chunked: bool) -> bool:
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

    def _heard(self, audio: np.ndarray, plan: FilePlan, window_s: float) -> FilePlan:
        """The plan with the VAD's speech regions where decoding went without them (a file of
        one window under decode.vad auto, decoded whole as the model was trained): a window
        that ends on a single timestamp loses the rest of a short file too, so recovery and
        the coverage check need what the VAD hears at any length."""
        if plan.regions is not None or self.options.vad == "never" or not vad_available():
            return plan
        return replace(plan, regions=tuple(speech_regions(audio, window_s)))

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self.files.detokenize(tokens)

    def prompt_ids(self, language: str | None = None) -> list[int]:
        """`<|startoftranscript|><|lang|><|task|><|notimestamps|>` as token ids."""
        return self.tokens.prompt(language)

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
        self,
        waveforms: Sequence[np.ndarray],
        language: str | None = None,
        speech_only: bool = False,
        scored: bool = False,
    ) -> list[Any]:
        """Token lists per waveform, or with `scored` the engine's Scored rows. With
        `speech_only` a row the model hears as no speech (decode.no_speech_threshold) decodes
        to nothing."""
        features = self.features(waveforms)
        started = time.perf_counter()
        encoded = self._engine.encode(features)
        self.timings.encoder_s += time.perf_counter() - started
        started = time.perf_counter()
        if language is not None and self.tokens.multilingual:
            prompts = [self.prompt_ids(language)] * len(waveforms)
        else:
            prompts = self._prompts(encoded, len(waveforms))
        max_new_tokens = self._max_new_tokens(len(prompts[0]))
        if scored:
            rows: list[Any] = self._engine.generate_scored(encoded, prompts, max_new_tokens)
            self.timings.decoder_s += time.perf_counter() - started
            return rows
        tokens = self._engine.generate(encoded, prompts, max_new_tokens)
        threshold = self.options.no_speech_threshold
        if speech_only and threshold is not None:
            silent = [p > threshold for p in self._engine.no_speech_probs(encoded)]
            tokens = [[] if quiet else row for row, quiet in zip(tokens, silent, strict=True)]
        self.timings.decoder_s += time.perf_counter() - started
        return tokens

    def _prompts(self, encoded: Any, batch: int) -> list[list[int]]:
        if self.language is not None or not self.tokens.multilingual:
            return [self.prompt_ids()] * batch
        # No language configured: detect it per utterance, as transformers' generate does.
        return [self.prompt_ids(language) for language in self._engine.detect_languages(encoded)]

    def _max_new_tokens(self, prompt_length: int) -> int:
        return self.tokens.max_new_tokens(self.options.max_new_tokens, prompt_length)

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


# The library each optional backend runs on, installed by the [export] extra.
_OPTIONAL_LIBRARY = {"ct2": "ctranslate2", "onnx": "onnxruntime"}


def _load_engine(backend: Backend, files: ModelFiles, options: TranscriberOptions) -> Engine:
    """The engine for `backend`; only that backend's library is imported."""
    library = _OPTIONAL_LIBRARY.get(backend)
    if library is not None and importlib.util.find_spec(library) is None:
        raise ModelError(
            f"{files.model_dir} is a {backend} model, which needs {library}: "
            "pip install 'pefty-whisper[export]'"
        )
    if backend == "ct2":
        from pefty_whisper.inference.ct2_backend import Ct2Engine

        return Ct2Engine(files, options)
    if backend == "onnx":
        from pefty_whisper.inference.onnx_backend import OnnxEngine

        return OnnxEngine(files, options)
    from pefty_whisper.inference.torch_backend import TorchEngine

    return TorchEngine(files, options)


def _check_options(options: TranscriberOptions) -> None:
    if options.backend not in ("auto", *BACKENDS):
        raise ConfigError(f"unknown backend {options.backend!r}: use auto, torch, ct2 or onnx")
    if options.batch_size < 1 or options.beam_size < 1 or options.max_new_tokens < 1:
        raise ConfigError(
            "batch_size, beam_size and max_new_tokens must be at least 1 "
            f"(got {options.batch_size}, {options.beam_size}, {options.max_new_tokens})"
        )


def _checked_language(language: str, tokens: WhisperTokens) -> str:
    from pefty_whisper.whisper.tokens import language_code

    code = language_code(language)
    if code not in tokens.languages:
        raise DataError(f"language {language!r}: this model has no <|{code}|> token")
    return code


def _clock(seconds: float) -> str:
    minutes, secs = divmod(seconds, 60)
    return f"{int(minutes)}:{secs:05.2f}"


def transcribe_paths(
    workspace: Workspace,
    config: Config,
    model: str,
    paths: Sequence[str | Path],
    backend: Literal["auto", "torch", "ct2", "onnx"] = "auto",
    word_timestamps: bool = False,
) -> TranscribeReport:
    """Files decoded by a workspace's model with the config's decoding settings: what
    `pefty transcribe` runs, so it decodes as evaluation and the export probe do;
    `word_timestamps` times every word too."""
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
    model_dir = ModelDir.resolve(model, workspace.root).path
    transcriber = Transcriber(model_dir, TranscriberOptions.from_config(config, backend))
    request = {"word_timestamps": True} if word_timestamps else {}
    results = transcriber.transcribe_files(readable, **request) if readable else []
    return TranscribeReport(transcriber.backend, tuple(results), tuple(failures))
