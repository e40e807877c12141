"""`pefty serve`: one Transcriber behind OpenAI's `POST /v1/audio/transcriptions` (FastAPI).

The model is loaded once. Requests are checked (size, audio, duration) in the event loop, then
queued for a single decode thread that owns the Transcriber: it takes what has queued up (at
most `serve.max_batch`) and decodes those of equal settings together, so concurrent requests
share batches, one model serves them all, and nothing the model mutates (the short-context
patch) is touched by two threads. uvicorn drains in-flight requests on SIGTERM. The page at /
(serve_page.py, web/) is a browser client of the same endpoint.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint's parameter types at run
# time, and they are imported inside create_app.
import asyncio
import importlib.util
import io
import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pefty_whisper.data.audio import resample
from pefty_whisper.errors import DataError, ModelError, PeftyError

if TYPE_CHECKING:
    from pefty_whisper.config import Config, ServeSection
    from pefty_whisper.inference import Transcriber, Transcription
    from pefty_whisper.serve_page import ServedModel
    from pefty_whisper.workspace import Workspace

__all__ = ["Batcher", "RESPONSE_FORMATS", "create_app", "decode_upload", "serve"]

logger = logging.getLogger(__name__)

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES = ("segment", "word")  # OpenAI's timestamp_granularities[] (verbose_json only)


class UploadError(Exception):
    """A request the server refuses, with its HTTP status and a one-line reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class _Job:
    audio: np.ndarray
    name: str
    settings: tuple[str | None, str | None, float, bool]  # language, prompt, temperature, words
    future: Future = field(default_factory=Future)


class Batcher:
    """The decode thread: queued requests decoded in batches by one Transcriber."""

    def __init__(self, transcriber: "Transcriber", max_batch: int, wait_s: float, max_queue: int):
        self.transcriber = transcriber
        self.max_batch = max_batch
        self.wait_s = wait_s
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=max_queue)
        self.batches: list[int] = []  # requests per decode call, for tests and benchmarks
        self._thread = threading.Thread(target=self._run, name="pefty-decode", daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def submit(
        self,
        audio: np.ndarray,
        name: str,
        language: str | None = None,
        prompt: str | None = None,
        temperature: float = 0.0,
        word_timestamps: bool = False,
    ) -> Future:
        settings = (language, prompt or None, float(temperature), bool(word_timestamps))
        job = _Job(audio, name, settings)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise UploadError(503, "server busy: too many queued requests, retry later") from None
        return job.future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=60)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs, stop = [first], False
            deadline = time.monotonic() + self.wait_s
            while len(jobs) < self.max_batch:
                try:
                    job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                jobs.append(job)
            self._decode(jobs)
            if stop:
                return

    def _decode(self, jobs: list[_Job]) -> None:
        groups: dict[tuple[str | None, str | None, float, bool], list[_Job]] = {}
        for job in jobs:
            groups.setdefault(job.settings, []).append(job)
        for (language, prompt, temperature, words), group in groups.items():
            self.batches.append(len(group))
            try:
                results = self.transcriber.transcribe_audios(
                    [j.audio for j in group],
                    [j.name for j in group],
                    language=language,
                    prompt=prompt,
                    temperature=temperature,
                    word_timestamps=words,
                )
            except Exception as exc:  # every request of the group learns why; the thread lives
                logger.exception("decoding %d request(s) failed", len(group))
                for job in group:
                    job.future.set_exception(exc)
                continue
            for job, result in zip(group, results, strict=True):
                job.future.set_result(result)


def decode_upload(data: bytes, filename: str, max_bytes: int, max_duration_s: float) -> np.ndarray:
    """The upload as a 16 kHz mono waveform, or an UploadError saying why not."""
    import soundfile

    if not data:
        raise UploadError(400, f"{filename}: the uploaded file is empty")
    if len(data) > max_bytes:
        raise UploadError(413, f"{filename}: {len(data) / 1e6:.1f} MB is over {_mb(max_bytes)}")
    try:
        info = soundfile.info(io.BytesIO(data))
        if info.frames / info.samplerate > max_duration_s:
            raise UploadError(
                413,
                f"{filename}: {info.frames / info.samplerate:.0f} s of audio is over the "
                f"server's limit of {max_duration_s:.0f} s",
            )
        audio, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError, TypeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UploadError(400, f"{filename}: not a readable audio file ({reason})") from exc
    if audio.shape[0] == 0:
        raise UploadError(400, f"{filename}: the audio holds no samples")
    mono = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    return resample(mono, rate)


def _mb(size: int) -> str:
    return f"the server's limit of {size / 1e6:.0f} MB"


def openai_response(
    result: "Transcription",
    response_format: str,
    task: str,
    granularities: tuple[str, ...] = ("segment",),
) -> Any:
    """The body OpenAI's API returns for each response_format; verbose_json has `segments`
    and, asked for with timestamp_granularities[]=word, `words`."""
    from pefty_whisper.inference.formats import to_srt, to_vtt

    if response_format == "text":
        return result.text
    if response_format == "srt":
        return to_srt([result])
    if response_format == "vtt":
        return to_vtt([result])
    if response_format == "json":
        return {"text": result.text}
    body: dict[str, Any] = {
        "task": task,
        "language": _language_name(result.language),
        "duration": round(result.duration_s, 3),
        "text": result.text,
    }
    if "word" in granularities:
        body["words"] = [
            {"word": w.text.strip(), "start": w.start, "end": w.end}
            for s in result.segments
            for w in s.words
        ]
    if "segment" in granularities or not granularities:
        body["segments"] = [
            {
                "id": i,
                "seek": round(s.start * 100),  # in 10 ms frames, as OpenAI reports it
                "start": s.start,
                "end": s.end,
                "text": s.text,
                "tokens": [],
                "temperature": s.temperature or 0.0,
                "avg_logprob": s.avg_logprob or 0.0,
                "compression_ratio": s.compression_ratio or 0.0,
                "no_speech_prob": s.no_speech_prob or 0.0,
            }
            for i, s in enumerate(result.segments)
        ]
    return body


def _check_granularities(granularities: list[str], response_format: str) -> None:
    unknown = [g for g in granularities if g not in GRANULARITIES]
    if unknown:
        raise UploadError(
            400, f"timestamp_granularities[] {unknown[0]!r}: use {' or '.join(GRANULARITIES)}"
        )
    if granularities and response_format != "verbose_json":
        raise UploadError(
            400, "timestamp_granularities[] needs response_format=verbose_json, as in OpenAI's API"
        )


def _language_name(code: str | None) -> str:
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    return LANGUAGES.get(code or "", code or "")


def create_app(
    transcriber: "Transcriber",
    settings: "ServeSection",
    model_name: str,
    about: "ServedModel | None" = None,
) -> Any:
    """The FastAPI application around one Transcriber (tests build it without uvicorn);
    `about`: the round and eval figure the page at / shows (serve_page.describe_model)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, File, Form, Request, UploadFile
    from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
    from fastapi.staticfiles import StaticFiles

    from pefty_whisper.serve_page import PAGE_DIR, ServedModel

    max_bytes = int(settings.max_upload_mb * 1e6)
    state: dict[str, Batcher] = {}

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        state["batcher"] = Batcher(
            transcriber, settings.max_batch, settings.batch_wait_ms / 1000, settings.max_queue
        )
        app.state.batcher = state["batcher"]
        yield
        state["batcher"].close()  # after uvicorn has drained the in-flight requests
        logger.info("decode thread stopped")

    app = FastAPI(title="pefty-whisper", lifespan=lifespan)

    def error(status: int, message: str) -> JSONResponse:
        kind = "invalid_request_error" if status < 500 else "server_error"
        return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status)

    @app.middleware("http")
    async def refuse_large_bodies(request: Request, call_next: Any) -> Any:
        # Before the form is parsed: FastAPI would otherwise spool the whole upload to disk.
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes + 64 * 1024:  # + the form's own bytes
            return error(413, f"{int(declared) / 1e6:.1f} MB is over {_mb(max_bytes)}")
        return await call_next(request)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        batcher = state.get("batcher")
        return {
            "status": "ok",
            "model": model_name,
            "backend": transcriber.backend,
            "queued": batcher.queued if batcher else 0,
            # The most requests one decode call has taken: concurrency became batches.
            "largest_batch": max(batcher.batches, default=0) if batcher else 0,
        }

    about = about or ServedModel(model_name, transcriber.backend)

    @app.get("/", include_in_schema=False)
    async def page() -> Any:
        return FileResponse(PAGE_DIR / "index.html", media_type="text/html; charset=utf-8")

    app.mount("/web", StaticFiles(directory=PAGE_DIR), name="web")  # the page's CSS and JS

    @app.get("/v1/pefty/model")
    async def served_model() -> dict[str, Any]:
        return about.to_dict()

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model_name, "object": "model"}]}

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(
        file: UploadFile = File(...),  # noqa: B008 (FastAPI's way to declare a form part)
        model: str | None = Form(None),  # noqa: B008 (accepted: one model is served)
        language: str | None = Form(None),  # noqa: B008
        prompt: str | None = Form(None),  # noqa: B008
        response_format: str = Form("json"),  # noqa: B008
        temperature: float = Form(0.0),  # noqa: B008
        granularities: list[str] = Form([], alias="timestamp_granularities[]"),  # noqa: B008
    ) -> Any:
        name = file.filename or "upload"
        try:
            if response_format not in RESPONSE_FORMATS:
                raise UploadError(
                    400, f"response_format {response_format!r}: use {', '.join(RESPONSE_FORMATS)}"
                )
            _check_granularities(granularities, response_format)
            if not 0.0 <= temperature <= 1.0:
                raise UploadError(400, f"temperature {temperature}: use a value from 0 to 1")
            data = await file.read(max_bytes + 1)
            audio = decode_upload(data, name, max_bytes, settings.max_duration_s)
            words = "word" in granularities
            future = state["batcher"].submit(
                audio, name, language or None, prompt, temperature, words
            )
            result = await asyncio.wrap_future(future)
        except UploadError as exc:
            logger.info("refused %s: %s", name, exc)
            return error(exc.status, str(exc))
        except (DataError, ModelError) as exc:  # a bad language or similar request value
            return error(400, str(exc))
        except Exception as exc:
            logger.exception("request %s failed", name)
            return error(500, f"decoding failed: {type(exc).__name__}: {exc}")
        body = openai_response(
            result, response_format, transcriber.tokens.task, tuple(granularities)
        )
        if isinstance(body, str):
            return PlainTextResponse(body)
        return body

    return app


def serve(
    workspace: "Workspace",
    config: "Config",
    model: str,
    host: str | None = None,
    port: int | None = None,
    backend: str = "auto",
) -> None:
    """Load the model once and serve it until SIGTERM or Ctrl-C (in-flight requests finish)."""
    from pefty_whisper.inference import Transcriber, TranscriberOptions
    from pefty_whisper.serve_page import describe_model
    from pefty_whisper.whisper.model_dir import ModelDir

    for library in ("fastapi", "uvicorn", "multipart"):
        if importlib.util.find_spec(library) is None:
            raise PeftyError("pefty serve needs its extra: pip install 'pefty-whisper[serve]'")
    settings = config.serve
    model_dir = ModelDir.resolve(model, workspace.root).path
    transcriber = Transcriber(model_dir, TranscriberOptions.from_config(config, backend))
    name = _model_name(model_dir)
    about = describe_model(workspace, config, model, model_dir, name, transcriber.backend)
    app = create_app(transcriber, settings, name, about)
    host, port = host or settings.host, port if port is not None else settings.port
    if host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("listening on %s: the server has no authentication", host)
    logger.info("serving %s on http://%s:%d/v1 (POST /v1/audio/transcriptions)", model, host, port)
    logger.info("the page: http://%s:%d/", host, port)
    import signal

    import uvicorn

    # uvicorn drains the in-flight requests on SIGTERM, restores this handler and raises the
    # signal again: a requested stop then exits 0, not "killed by SIGTERM".
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=300)


def _exit_cleanly(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def _model_name(model_dir: Path) -> str:
    return Path(model_dir).name
