"""Benchmark `pefty serve` under concurrency, and long-form transcription per backend and path.

1. Serving: a real `pefty serve` process on a free loopback port; N sequential requests, then the
   same number again from N concurrent clients (several rounds); throughput, p50/p95 latency,
   the server's peak RSS and the error count. Target: 8 concurrent clients at least 1.5x the
   throughput of 8 sequential requests.
2. Long form: sentences stitched with pauses (and one long silence) into a 1-2 minute file,
   transcribed by every backend and path and by the old fixed 30 s windows: real-time factor,
   CER and the share of reference characters deleted. Target: CER no worse than the windows,
   deletions under 5%.

Real whisper-base from the offline packages; English espeak-ng speech by default (the base
model's Korean is near 100% CER zero-shot, which measures nothing). It is a measurement, not a
test: run it on a quiet machine.

    python scripts/bench_serve.py                       # both parts, whisper-base, English
    python scripts/bench_serve.py --part longform --language ko
"""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
import numpy as np
import soundfile

try:
    import pefty_whisper  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pefty_whisper.data.espeak import Voice, synthesize  # noqa: E402
from pefty_whisper.demo.base import ensure_offline_base  # noqa: E402
from pefty_whisper.inference import Transcriber, TranscriberOptions  # noqa: E402
from pefty_whisper.metrics import score_utterance  # noqa: E402
from pefty_whisper.whisper.model_dir import ModelDir  # noqa: E402

RATE = 16_000
SENTENCES = {
    "en": [
        "The meeting starts at three o'clock in the main hall.",
        "Please bring the quarterly report and your laptop.",
        "We will discuss the budget for the next year.",
        "The weather today is sunny with a light breeze.",
        "Our train leaves the station at half past seven.",
        "She ordered a cup of coffee and a slice of cake.",
        "The library closes early on Friday evenings.",
        "He repaired the old bicycle in his garage.",
        "Students must submit their homework by Monday.",
        "The museum has a new exhibition about ancient Egypt.",
        "Remember to turn off the lights before you leave.",
        "The children played football in the park all afternoon.",
    ],
    "ko": [
        "회의는 세 시에 본관에서 시작합니다",
        "분기 보고서와 노트북을 가져오세요",
        "내년 예산에 대해 이야기하겠습니다",
        "오늘 날씨는 맑고 바람이 약하게 붑니다",
        "기차는 일곱 시 반에 역을 떠납니다",
        "그녀는 커피 한 잔과 케이크를 주문했습니다",
        "도서관은 금요일 저녁에 일찍 닫습니다",
        "그는 차고에서 낡은 자전거를 고쳤습니다",
    ],
}
ESPEAK_VOICE = {"en": "en-us", "ko": "ko"}


def stitched(language: str, seed: int = 0) -> tuple[np.ndarray, str]:
    """Sentences with 0.3-1.5 s pauses and one 12 s silence, and the reference text."""
    rng = np.random.default_rng(seed)
    parts, texts = [], []
    sentences = SENTENCES[language]
    for i, text in enumerate(sentences):
        voice = Voice(
            ESPEAK_VOICE[language], int(rng.integers(140, 170)), int(rng.integers(40, 60))
        )
        parts.append(synthesize(text, voice))
        pause = 12.0 if i == len(sentences) // 2 else float(rng.uniform(0.3, 1.5))
        parts.append(np.zeros(int(pause * RATE), np.float32))
        texts.append(text)
    return np.concatenate(parts), " ".join(texts)


def scores(reference: str, hypothesis: str) -> dict[str, float]:
    chars = score_utterance(reference, hypothesis).chars
    return {
        "cer": round(100 * chars.errors / max(chars.reference_length, 1), 2),
        "deleted_pct": round(100 * chars.deletions / max(chars.reference_length, 1), 2),
    }


def bench_longform(base: Path, work: Path, language: str, max_new_tokens: int) -> dict[str, Any]:
    from pefty_whisper.export import export_ct2

    audio, reference = stitched(language)
    path = work / f"stitched-{language}.wav"
    soundfile.write(path, audio, RATE, subtype="PCM_16")
    ct2 = work / "base-ct2-int8"
    if not ModelDir(ct2).is_ct2:
        export_ct2(base, ct2, "int8", force=True)
    options = TranscriberOptions(language=language, max_new_tokens=max_new_tokens, device="cpu")
    runs = [
        ("windows (old), ct2 int8", ct2, replace(options, longform="chunked", vad="never")),
        ("windows (old), torch fp32", base, replace(options, longform="chunked", vad="never")),
        ("sequential faster-whisper, ct2 int8", ct2, replace(options, longform="sequential")),
        ("chunked VAD, ct2 int8", ct2, replace(options, longform="chunked")),
        ("sequential transformers, torch fp32", base, replace(options, longform="sequential")),
        ("chunked VAD, torch fp32", base, replace(options, longform="chunked")),
    ]
    results = {"audio_s": round(len(audio) / RATE, 1), "language": language, "runs": []}
    for label, model_dir, run_options in runs:
        transcriber = Transcriber(model_dir, run_options)
        transcriber.transcribe_batch([audio[: 5 * RATE]])  # warm-up
        started = time.perf_counter()
        result = transcriber.transcribe_file(path)
        seconds = time.perf_counter() - started
        row = {
            "run": label,
            "method": result.method,
            "rtf": round(seconds / result.duration_s, 3),
            **scores(reference, result.text),
            "segments": len(result.segments),
            "uncovered": [list(s) for s in result.uncovered],
        }
        results["runs"].append(row)
        print(json.dumps(row, ensure_ascii=False), flush=True)
    return results


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def bench_serve(model: Path, work: Path, clients: int, rounds: int, overrides: list[str]):
    import httpx

    speech = synthesize(SENTENCES["en"][0], Voice("en-us", 150, 50))
    audio_path = work / "request.wav"
    soundfile.write(audio_path, speech, RATE, subtype="PCM_16")
    data = audio_path.read_bytes()
    port = free_port()
    command = [sys.executable, "-m", "pefty_whisper.cli", "serve", "--model", str(model)]
    command += ["--port", str(port), "--workdir", str(work)]
    for override in overrides:
        command += ["-o", override]
    log = (work / "serve.log").open("w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        errors = 0

        def one(_: int) -> float:
            nonlocal errors
            started = time.perf_counter()
            response = httpx.post(
                f"{url}/v1/audio/transcriptions",
                files={"file": ("request.wav", data)},
                data={"language": "en"},
                timeout=300,
            )
            if response.status_code != 200:
                errors += 1
            return time.perf_counter() - started

        one(0)  # warm-up
        started = time.perf_counter()
        sequential = [one(i) for i in range(clients)]
        sequential_s = time.perf_counter() - started
        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            concurrent = list(pool.map(one, range(clients * rounds)))
        concurrent_s = time.perf_counter() - started
        health = httpx.get(f"{url}/health", timeout=10).json()
        result = {
            "model": str(model),
            "overrides": overrides,
            "request_audio_s": round(len(speech) / RATE, 2),
            "sequential_rps": round(clients / sequential_s, 3),
            "concurrent_rps": round(clients * rounds / concurrent_s, 3),
            "throughput_ratio": round(
                (clients * rounds / concurrent_s) / (clients / sequential_s), 2
            ),
            "sequential_p50_s": round(float(np.percentile(sequential, 50)), 2),
            "concurrent_p50_s": round(float(np.percentile(concurrent, 50)), 2),
            "concurrent_p95_s": round(float(np.percentile(concurrent, 95)), 2),
            "largest_batch": health.get("largest_batch"),
            "peak_rss_mb": round(peak_rss_mb(server.pid)),
            "errors": errors,
        }
        print(json.dumps(result), flush=True)
        return result
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)
        log.close()


@click.command()
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("bench/serve"))
@click.option("--part", type=click.Choice(["all", "serve", "longform"]), default="all")
@click.option("--language", type=click.Choice(["en", "ko"]), default="en", show_default=True)
@click.option("--clients", type=int, default=8, show_default=True)
@click.option("--rounds", type=int, default=2, show_default=True)
@click.option("--max-new-tokens", type=int, default=96, show_default=True)
def bench(
    workdir: Path, part: str, language: str, clients: int, rounds: int, max_new_tokens: int
) -> None:
    """Serving throughput and long-form accuracy/speed on whisper-base (see the module doc)."""
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    base = ensure_offline_base(workdir)
    report: dict[str, Any] = {"machine": f"{platform.processor()} {os.cpu_count()} cores"}
    if part in ("all", "longform"):
        report["longform"] = bench_longform(base, workdir, language, max_new_tokens)
    if part in ("all", "serve"):
        ct2 = workdir / "base-ct2-int8"
        if not ModelDir(ct2).is_ct2:
            from pefty_whisper.export import export_ct2

            export_ct2(base, ct2, "int8", force=True)
        common = [f"decode.max_new_tokens={max_new_tokens}"]
        report["serve"] = [
            bench_serve(ct2.resolve(), workdir, clients, rounds, [*common]),
            bench_serve(
                ct2.resolve(), workdir, clients, rounds, [*common, "decode.longform=chunked"]
            ),
            bench_serve(base.resolve(), workdir, clients, rounds, [*common, "model.context=auto"]),
        ]
    (workdir / "bench_serve.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"written {workdir / 'bench_serve.json'}")


if __name__ == "__main__":
    bench()
