"""`pefty serve` through real HTTP: a uvicorn process on a free loopback port, the `openai` client.

A tiny random Whisper is served; its text is nonsense, so the checks are that the server returns
what `pefty transcribe` writes, speaks every response format, refuses bad uploads with a 4xx and
a reason while staying healthy, batches concurrent requests, and drains on SIGTERM.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner
from fixtures import save_tiny_whisper

from pefty_whisper.cli import main

pytest.importorskip("fastapi", reason="pip install 'pefty-whisper[serve]'")
pytest.importorskip("uvicorn", reason="pip install 'pefty-whisper[serve]'")
openai = pytest.importorskip("openai", reason="pip install 'pefty-whisper[dev]'")
httpx = pytest.importorskip("httpx", reason="pip install 'pefty-whisper[dev]'")

RATE = 16_000
CONFIG = """\
decode:
  max_new_tokens: 8
  batch_size: 8
  # A random model fails every check, and the fallback would sample: keep decoding greedy.
  compression_ratio_threshold: null
  log_prob_threshold: null
serve:
  max_upload_mb: 1
  max_duration_s: 20
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A `pefty serve` subprocess; always terminated by the fixture that starts it."""

    def __init__(self, workdir: Path, *overrides: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "pefty_whisper.cli", "serve", "--model", "merged/tiny"]
        command += ["--port", str(self.port), "--workdir", str(workdir)]
        for override in overrides:
            command += ["-o", override]
        self.log = (workdir / f"serve-{self.port}.log").open("w+")
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pefty serve exited early:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"pefty serve did not come up in 90 s:\n{self.output()}")

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key="x", timeout=60, max_retries=0)

    def health(self) -> dict:
        response = httpx.get(f"{self.url}/health", timeout=10)
        assert response.status_code == 200
        return response.json()

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.log.close()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not __import__("shutil").which("espeak-ng"):
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    from pefty_whisper.data.espeak import Voice, synthesize

    work = tmp_path_factory.mktemp("serve")
    save_tiny_whisper(work / "merged" / "tiny", seed=2)
    (work / "pefty.yaml").write_text(CONFIG, encoding="utf-8")
    speech = synthesize("안녕하세요 오늘은 날씨가 좋습니다", Voice("ko", 150, 50))
    soundfile.write(work / "hello.wav", speech, RATE, subtype="PCM_16")
    return work


@pytest.fixture(scope="module")
def server(workspace: Path) -> Iterator[Server]:
    running = Server(workspace)
    try:
        yield running
    finally:
        running.stop()


def wav_bytes(seconds: float, amplitude: float = 0.0) -> bytes:
    buffer = io.BytesIO()
    samples = amplitude * np.sin(np.arange(int(seconds * RATE)) / 10).astype(np.float32)
    soundfile.write(buffer, samples, RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def test_openai_client_gets_what_pefty_transcribe_writes(server: Server, workspace: Path):
    cli = CliRunner().invoke(
        main,
        [
            "transcribe",
            str(workspace / "hello.wav"),
            "--model",
            "merged/tiny",
            "--workdir",
            str(workspace),
            "--format",
            "json",
        ],
    )
    assert cli.exit_code == 0, cli.output
    (expected,) = json.loads(cli.stdout)
    assert expected["text"]
    with (workspace / "hello.wav").open("rb") as audio:
        result = server.client().audio.transcriptions.create(model="whisper-1", file=audio)
    assert result.text == expected["text"]


def test_srt_vtt_text_and_verbose_json(server: Server, workspace: Path):
    client = server.client()
    audio = (workspace / "hello.wav").read_bytes()
    srt = client.audio.transcriptions.create(
        model="x", file=("hello.wav", audio), response_format="srt"
    )
    assert srt.startswith("1\n00:00:00,") and " --> 00:00:0" in srt
    vtt = client.audio.transcriptions.create(
        model="x", file=("hello.wav", audio), response_format="vtt"
    )
    assert vtt.startswith("WEBVTT")
    text = client.audio.transcriptions.create(
        model="x", file=("hello.wav", audio), response_format="text", language="ko"
    )
    verbose = client.audio.transcriptions.create(
        model="x", file=("hello.wav", audio), response_format="verbose_json", temperature=0.0
    )
    assert verbose.language == "korean" and verbose.text == text.strip()
    assert verbose.duration == pytest.approx(soundfile.info(workspace / "hello.wav").duration, 0.01)
    assert verbose.segments and 0 <= verbose.segments[0].start < verbose.segments[0].end
    assert verbose.segments[-1].end <= verbose.duration + 1e-3


def test_word_granularity_gives_the_words_pefty_transcribe_times(workspace: Path):
    # Words are timed on the sequential path, which --word-timestamps takes: serve the same way.
    server = Server(workspace, "decode.longform=sequential")
    try:
        _words_match_the_cli(server, workspace)
    finally:
        server.stop()


def _words_match_the_cli(server: Server, workspace: Path) -> None:
    cli = CliRunner().invoke(
        main,
        ["transcribe", str(workspace / "hello.wav"), "--model", "merged/tiny", "--format", "json"]
        + ["--word-timestamps", "--workdir", str(workspace)],
    )
    assert cli.exit_code == 0, cli.output
    expected = [w for s in json.loads(cli.stdout)[0]["segments"] for w in s["words"]]
    assert expected
    audio = (workspace / "hello.wav").read_bytes()
    verbose = server.client().audio.transcriptions.create(
        model="x",
        file=("hello.wav", audio),
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    assert [(w.word, w.start, w.end) for w in verbose.words] == [
        (w["word"].strip(), w["start"], w["end"]) for w in expected
    ]
    assert verbose.segments
    assert all(0 <= w.start <= w.end <= verbose.duration for w in verbose.words)
    words_only = server.client().audio.transcriptions.create(
        model="x",
        file=("hello.wav", audio),
        response_format="verbose_json",
        timestamp_granularities=["word"],
    )
    assert words_only.words and not getattr(words_only, "segments", None)
    with pytest.raises(openai.BadRequestError, match="needs response_format=verbose_json"):
        server.client().audio.transcriptions.create(
            model="x", file=("hello.wav", audio), timestamp_granularities=["word"]
        )


@pytest.mark.parametrize(
    ("upload", "status", "reason"),
    [
        (("notes.wav", b"this is not audio at all"), 400, "not a readable audio file"),
        (("empty.wav", b""), 400, "empty"),
        (("big.wav", wav_bytes(40.0)), 413, "MB is over the server's limit of 1 MB"),
        (("long.flac", None), 413, "over the server's limit of 20 s"),
    ],
)
def test_bad_uploads_get_a_4xx_with_a_reason_and_the_server_stays_up(
    server: Server, workspace: Path, upload: tuple, status: int, reason: str
):
    name, data = upload
    if data is None:  # 25 s of FLAC silence: small in bytes, too long in time
        buffer = io.BytesIO()
        soundfile.write(buffer, np.zeros(25 * RATE, np.int16), RATE, format="FLAC")
        data = buffer.getvalue()
        assert len(data) < 1_000_000
    response = httpx.post(
        f"{server.url}/v1/audio/transcriptions",
        files={"file": (name, data)},
        data={"model": "whisper-1"},
        timeout=30,
    )
    assert response.status_code == status, response.text
    assert reason in response.json()["error"]["message"]
    assert server.health()["status"] == "ok"
    with pytest.raises(openai.BadRequestError, match="response_format"):
        server.client().audio.transcriptions.create(
            model="x", file=("a.wav", wav_bytes(1.0, 0.1)), response_format="mp3"
        )
    ok = server.client().audio.transcriptions.create(
        model="x", file=("hello.wav", (workspace / "hello.wav").read_bytes())
    )
    assert ok.text


def test_concurrent_requests_all_succeed_in_shared_batches(server: Server, workspace: Path):
    audio = (workspace / "hello.wav").read_bytes()
    client = server.client()
    expected = client.audio.transcriptions.create(model="x", file=("a.wav", audio)).text

    def one(i: int) -> str:
        return client.audio.transcriptions.create(model="x", file=(f"{i}.wav", audio)).text

    with ThreadPoolExecutor(8) as pool:
        texts = list(pool.map(one, range(16)))
    assert texts == [expected] * 16  # batch-mates do not change a request's text
    assert server.health()["largest_batch"] > 1


def test_sigterm_finishes_the_request_in_flight_and_exits_0(workspace: Path):
    server = Server(workspace, "serve.batch_wait_ms=1500")  # the request waits in the queue
    try:
        answer: dict = {}

        def request() -> None:
            response = httpx.post(
                f"{server.url}/v1/audio/transcriptions",
                files={"file": ("hello.wav", (workspace / "hello.wav").read_bytes())},
                timeout=60,
            )
            answer["status"], answer["body"] = response.status_code, response.json()

        thread = threading.Thread(target=request)
        thread.start()
        time.sleep(0.7)
        server.process.send_signal(signal.SIGTERM)
        thread.join(timeout=60)
        assert server.process.wait(timeout=60) == 0, server.output()
        assert answer.get("status") == 200 and answer["body"]["text"], answer
    finally:
        server.stop()
