"""Benchmark the training data path: manifest memory under loader workers, and feature throughput.

`memory`: a round-sized manifest (124,000 rows by default) read, filtered and wrapped the way
`pefty train` does it (read_manifest -> filter_utterances -> SpeechDataset), then a DataLoader
with 4 forked workers runs a full shuffled epoch through the dataset (audio read and labels
tokenized per item; the collate only counts, so the epoch takes seconds, not hours of log-mel).
Reported: the parent's RSS, and per worker its RSS and USS (its private pages: what forking
copied), from /proc/PID/smaps_rollup at the end of the epoch. `--code DIR` runs the same script
against another checkout (e.g. an exported older commit), side by side in one run.

`features`: windows/s one loader worker delivers (one CPU thread, as DataLoader workers run):
single KsponSpeech-length utterances at 30 s and at `model.context: auto`, and "packed-length"
audio (about 30 s made of concatenated utterances; the packing issue is not built yet, so this is
its stand-in), each with the log-mel computed in the worker (no GPU) or left to the GPU (the
worker decodes and pads only).

    python scripts/bench_data.py memory --rows 124000 --workers 4 --code /tmp/old --code .
    python scripts/bench_data.py features --seconds 20
"""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np

REPO = Path(__file__).resolve().parents[1]
SAMPLE_RATE = 16_000
SENTENCES = (
    "아 몬 소리야, 그건 또.",
    "나는 악습은 원래 없어진다 없어져야 된다고 생각하긴 했는데",
    "근데 그 약간 필요악으로 하나 정도쯤은 있어야 되거든.",
    "70% 정도 되는 거 같아",
    "그래서 어 우리 3G 쓸 때는",
    "오늘 날씨가 진짜 좋더라.",
    "내일 2시에 만나자",
    "A/S 맡겼는데 아직 안 왔어",
)


def _processor():
    from pefty_whisper.demo.weights import offline_base_tokenizer_dir
    from pefty_whisper.whisper.processor import build_processor

    return build_processor(offline_base_tokenizer_dir(), n_mels=80, language="korean")


def _write_corpus(folder: Path, files: int, seed: int = 0) -> list[Path]:
    """Real pcm bytes (noise) of KsponSpeech-like lengths: 2-8 s, about 4.5 s on average."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(files):
        seconds = float(rng.uniform(2.0, 8.0))
        samples = (2000 * rng.standard_normal(int(seconds * SAMPLE_RATE))).astype("<i2")
        path = folder / f"KsponSpeech_{i:06d}.pcm"
        path.write_bytes(samples.tobytes())
        paths.append(path)
    return paths


def _write_manifest(path: Path, audio: list[Path], rows: int) -> None:
    """`rows` rows over the audio files (repeated), distinct ids, KsponSpeech-length text."""
    rng = random.Random(0)
    seconds = {file: file.stat().st_size / 2 / SAMPLE_RATE for file in audio}
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("path", "sentence", "duration", "id", "raw"))
        for i in range(rows):
            file = audio[i % len(audio)]
            text = " ".join(rng.choice(SENTENCES) for _ in range(rng.randint(1, 2)))
            raw = text.replace("70%", "(70%)/(칠십 퍼센트)")
            writer.writerow((file, text, f"{seconds[file]:.3f}", f"KsponSpeech_{i:06d}", raw))


@click.group()
def main() -> None:
    """Benchmarks of the training data path (see the module docstring)."""


@main.command()
@click.option("--rows", type=int, default=124_000, show_default=True)
@click.option("--workers", type=int, default=4, show_default=True)
@click.option("--code", type=click.Path(path_type=Path, exists=True), multiple=True)
@click.option("--workdir", type=click.Path(path_type=Path), default=None)
def memory(rows: int, workers: int, code: tuple[Path, ...], workdir: Path | None) -> None:
    """Parent and worker memory over one epoch of a `rows`-row manifest, per checkout."""
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        folder = workdir or Path(tmp)
        audio = _write_corpus(folder / "audio", 200)
        manifest = folder / "manifest.csv"
        _write_manifest(manifest, audio, rows)
        for checkout in code or (REPO,):
            env = dict(os.environ, PYTHONPATH=str(Path(checkout).resolve()), HF_HUB_OFFLINE="1")
            command = [sys.executable, __file__, "memory-child", str(manifest), str(workers)]
            done = subprocess.run(
                command, env=env, cwd=folder, capture_output=True, text=True, check=False
            )
            if done.returncode != 0:
                raise click.ClickException(done.stderr[-3000:])
            result = json.loads(done.stdout.strip().splitlines()[-1])
            result["code"] = str(checkout)
            click.echo(json.dumps(result))


def _memory_kb(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        fields[name] = int(value.split()[0])
    private = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return {"rss": fields["Rss"], "pss": fields["Pss"], "uss": private}


@main.command("memory-child", hidden=True)
@click.argument("manifest", type=click.Path(path_type=Path))
@click.argument("workers", type=int)
def memory_child(manifest: Path, workers: int) -> None:
    import torch

    from pefty_whisper.data.features import SpeechDataset, filter_utterances
    from pefty_whisper.data.manifest import read_manifest
    from pefty_whisper.whisper.tokens import MAX_TARGET_POSITIONS

    processor = _processor()
    started = time.perf_counter()
    utterances = read_manifest(manifest).utterances
    kept, _ = filter_utterances(utterances, processor, 30.0, MAX_TARGET_POSITIONS)
    dataset = SpeechDataset(kept, processor)
    del utterances, kept
    load_s = time.perf_counter() - started
    parent_before = _memory_kb(os.getpid())
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=64,
        shuffle=True,
        num_workers=workers,
        persistent_workers=True,
        collate_fn=lambda items: sum(item is not None for item in items),
    )
    iterator = iter(loader)
    started = time.perf_counter()
    seen = sum(iterator)
    epoch_s = time.perf_counter() - started
    pids = [w.pid for w in iterator._workers]  # the loader's own worker processes
    per_worker = [_memory_kb(pid) for pid in pids]
    parent = _memory_kb(os.getpid())
    result = {
        "rows": len(dataset),
        "seen": seen,
        "workers": workers,
        "load_s": round(load_s, 1),
        "epoch_s": round(epoch_s, 1),
        "parent_rss_mb_before_fork": round(parent_before["rss"] / 1024),
        "parent_rss_mb": round(parent["rss"] / 1024),
        "worker_rss_mb": [round(m["rss"] / 1024) for m in per_worker],
        "worker_uss_mb": [round(m["uss"] / 1024) for m in per_worker],
        "tree_pss_mb": round((parent["pss"] + sum(m["pss"] for m in per_worker)) / 1024),
        "loadavg": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }
    del iterator
    print(json.dumps(result))


@main.command()
@click.option("--seconds", type=float, default=20.0, show_default=True, help="Per measurement.")
@click.option("--batch-size", type=int, default=16, show_default=True)
def features(seconds: float, batch_size: int) -> None:
    """Windows/s of one worker (one thread), per input kind and where the log-mel is computed."""
    import torch

    from pefty_whisper.data.audio import load_audio
    from pefty_whisper.data.features import SpeechCollator, label_ids

    torch.set_num_threads(1)  # what a DataLoader worker runs with
    processor = _processor()
    pad = processor.tokenizer.pad_token_id
    fe = processor.feature_extractor
    with tempfile.TemporaryDirectory(prefix="bench_features_") as tmp:
        audio = _write_corpus(Path(tmp), 240)
        rng = random.Random(0)

        def single() -> dict:
            path = rng.choice(audio)
            text = rng.choice(SENTENCES)
            return {"audio": load_audio(path), "labels": label_ids(processor, text)}

        def packed() -> dict:
            # Consecutive utterances joined with short silences up to 30 s: the packing stand-in.
            pieces, total, labels = [], 0, []
            start = rng.randrange(len(audio))
            for offset in range(len(audio)):
                clip = load_audio(audio[(start + offset) % len(audio)])
                gap = np.zeros(int(rng.uniform(0.1, 0.8) * SAMPLE_RATE), dtype=np.float32)
                if total + len(gap) + len(clip) > 30 * SAMPLE_RATE:
                    break
                pieces += [gap, clip]
                total += len(gap) + len(clip)
                labels += processor.tokenizer(rng.choice(SENTENCES), add_special_tokens=False)[
                    "input_ids"
                ]
            return {"audio": np.concatenate(pieces), "labels": [1, *labels[:440], 2]}

        runs = (
            ("single utterance, 30 s context", single, "full", False),
            ("single utterance, context auto", single, "auto", False),
            ("packed-length (~30 s), 30 s context", packed, "full", False),
            ("single utterance, log-mel on GPU", single, "full", True),
            ("packed-length (~30 s), log-mel on GPU", packed, "full", True),
        )
        for label, make, context, on_gpu in runs:
            collator = SpeechCollator(fe, pad, context, 2.0, waveforms=on_gpu)
            windows, audio_s, started = 0, 0.0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                items = [make() for _ in range(batch_size)]
                collator(items)
                windows += len(items)
                audio_s += sum(len(i["audio"]) for i in items) / SAMPLE_RATE
            elapsed = time.perf_counter() - started
            click.echo(
                json.dumps(
                    {
                        "input": label,
                        "windows_per_s": round(windows / elapsed, 1),
                        "audio_s_per_window": round(audio_s / windows, 1),
                        "loadavg": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
                    },
                    ensure_ascii=False,
                )
            )


if __name__ == "__main__":
    main()
