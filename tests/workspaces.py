"""Shared test helpers for workspaces: audio, manifests, a four-utterance round, subprocesses.

Imported by the training and rounds tests (`from workspaces import make_workspace`); not a test
module, so importing it runs no tests twice.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import numpy as np
import yaml

RATE = 16_000
SENTENCES = ["안녕하세요 반갑습니다", "오늘 날씨가 좋네요", "세 시에 만나요", "KBS 뉴스를 봤어요"]
FAST_TRAINING = {
    "train": {
        "max_steps": 8,
        "eval_steps": 4,
        "logging_steps": 1,
        "batch_size": 4,
        "learning_rate": 0.01,
        "warmup_steps": 0,
        "max_eval_samples": 4,
    },
    "decode": {"batch_size": 4, "max_new_tokens": 12},
    "data": {"num_workers": 0},
    "lora": {"r": 8, "alpha": 16},
}


def write_audio(path: Path, seed: int, seconds: float = 1.0) -> None:
    """A tone with noise as headerless 16 kHz int16 pcm, KsponSpeech's format."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(RATE * seconds)) / RATE
    tone = np.sin(2 * np.pi * (200 + 50 * seed) * t) + 0.1 * rng.standard_normal(len(t))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((6000 * tone).astype("<i2").tobytes())


def write_manifest(path: Path, rows: list[tuple[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "sentence"])
        writer.writerows(rows)


def make_workspace(root: Path, repeats: int = 1, extra_rows: tuple = ()) -> Path:
    """Four utterances (optionally repeated): one small batch the model can overfit."""
    audio = [root / "audio" / f"u{i}.pcm" for i in range(len(SENTENCES))]
    for i, path in enumerate(audio):
        write_audio(path, i)
    rows = [(str(p), s) for p, s in zip(audio, SENTENCES, strict=True)]
    write_manifest(
        root / "data" / "train_KsponSpeech_01_train.csv", rows * repeats + list(extra_rows)
    )
    write_manifest(root / "data" / "train_KsponSpeech_01_test.csv", rows)
    (root / "pefty.yaml").write_text(yaml.safe_dump(FAST_TRAINING), encoding="utf-8")
    return root


def logged(adapter_dir: Path, key: str) -> list[float]:
    """Every value of `key` in a round's log_history.json, in order."""
    history = json.loads((adapter_dir / "log_history.json").read_text())
    return [entry[key] for entry in history if key in entry]


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pefty_whisper.cli", *args]


def subprocess_env() -> dict[str, str]:
    """The environment of a `pefty` subprocess: offline, and no launcher's variables."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env
