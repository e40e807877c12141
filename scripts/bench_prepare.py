"""Benchmark `pefty prepare kspon` at KsponSpeech size: generate the tree, then time the command.

The generated tree has the real layout (KsponSpeech_01..05/KsponSpeech_0001..0623/*.pcm,
KsponSpeech_eval/eval_{clean,other}/, scripts/{train,dev,eval_clean,eval_other}.trn) and lines in
ETRI notation. Every pcm file is its own inode with a first data block of real bytes (what
prepare's probe reads) and a sparse tail up to a realistic size (what its stat reports), so a run
after `drop_caches` pays the inode and data-block reads a real corpus costs; only the audio past
the first 4 KB is a hole, which the probe never reads. The per-utterance CP949 .txt files are not
written: with .trn scripts present, prepare never opens them.

Each run is `pefty prepare kspon` in a fresh process (as a user types it); wall time and that
process's own peak RSS are reported, with the load average, for a warm and a cold page cache
(cold: `sync; echo 3 > /proc/sys/vm/drop_caches`, which needs root). `--code DIR` runs another
checkout of the package side by side (e.g. an exported older commit) for ratios in one run.

    python scripts/bench_prepare.py generate --root /tmp/kspon_full
    python scripts/bench_prepare.py generate --root /tmp/kspon_100k --lines 100000
    python scripts/bench_prepare.py run --root /tmp/kspon_100k --cache warm --cache cold
    python scripts/bench_prepare.py run --root /tmp/kspon_100k --code /tmp/old_checkout
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

# The official distribution: 620,000 training lines in five parts of 124,000 (the last part
# ends at folder 0620), 2,545 dev lines in folders 0621-0623, and two eval sets of 3,000.
FILES_PER_FOLDER = 1000
PART_LINES = 124_000
DEV_LINES = 2_545
EVAL_LINES = 3_000
TOTAL_LINES = 5 * PART_LINES + DEV_LINES + 2 * EVAL_LINES  # 628,545
FIRST_BLOCK = 4096
SAMPLE_RATE = 16_000

# Fragments in ETRI notation (duals, noise tags, fillers, repetitions), joined per line.
FRAGMENTS = (
    "아/ 몬 소리야, 그건 또.",
    "나는 악습은 원래 없어진다+ 없어져야 된다고 생각하긴 했는데",
    "근데 그/ 약간 필요악으로 하나 정도쯤은 있어야 되거든.",
    "(70%)/(칠십 퍼센트) 정도 되는 거 같아",
    "그래서 어/ 우리 (3G)/(쓰리 쥐) 쓸 때는",
    "b/ 오늘 날씨가 진짜 좋더라.",
    "l/ 야 그거 완전 웃겼어",
    "n/ 내일 (2시)/(두 시)에 만나자",
    "음/ 그/ 그게 뭐였지?",
    "(A/S)/(에이 에스) 맡겼는데 아직 안 왔어",
    "o/ 어 잠깐만 전화 좀 받을게",
    "우리 엄마가+ 엄마가 그러는데",
    "*그거 진짜 #무슨 말인지 모르겠어.",
    "(1시)/(한 시) 반쯤에 도착할 것 같아",
    "u/ 그래 알았어",
    "학교 끝나고 도서관 가서 공부했어",
    "지금 배고파서 뭐 좀 먹어야겠다",
    "(KBS)/(케이비에스) 뉴스 봤어?",
)


def _line_text(rng: random.Random) -> str:
    return " ".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 2)))


def _layout(lines: int) -> dict[str, list[str]]:
    """Relative pcm paths per script; `lines` below the full size takes each script's share."""
    scale = min(1.0, lines / TOTAL_LINES)
    train = []
    for part in range(1, 6):
        first = (part - 1) * PART_LINES + 1
        train += [_train_path(n) for n in range(first, first + round(PART_LINES * scale))]
    dev_first = 5 * PART_LINES + 1
    dev = [_train_path(n) for n in range(dev_first, dev_first + round(DEV_LINES * scale))]
    count = round(EVAL_LINES * scale)
    return {
        "train": train,
        "dev": dev,
        "eval_clean": [
            f"KsponSpeech_eval/eval_clean/KsponSpeech_E{n:05d}.pcm" for n in range(1, count + 1)
        ],
        "eval_other": [
            f"KsponSpeech_eval/eval_other/KsponSpeech_E{n:05d}.pcm"
            for n in range(EVAL_LINES + 1, EVAL_LINES + count + 1)
        ],
    }


def _train_path(number: int) -> str:
    folder = (number - 1) // FILES_PER_FOLDER + 1
    part = min(5, (folder - 1) // (PART_LINES // FILES_PER_FOLDER) + 1)
    return f"KsponSpeech_0{part}/KsponSpeech_{folder:04d}/KsponSpeech_{number:06d}.pcm"


def _pcm_size(rng: random.Random) -> int:
    """KsponSpeech-like durations (median about 4.5 s, 0.3-20 s); a few odd byte counts."""
    seconds = min(20.0, max(0.3, rng.lognormvariate(1.5, 0.6)))
    size = 2 * int(seconds * SAMPLE_RATE)
    return size + 1 if rng.random() < 0.001 else size


@click.group()
def main() -> None:
    """Generate a KsponSpeech-layout tree and benchmark `pefty prepare kspon` on it."""


@main.command()
@click.option("--root", type=click.Path(path_type=Path), required=True)
@click.option("--lines", type=int, default=TOTAL_LINES, show_default=True)
@click.option("--seed", type=int, default=0)
def generate(root: Path, lines: int, seed: int) -> None:
    """Write the tree: one file per script line, in script order (as an unpacked archive)."""
    if root.exists() and any(root.iterdir()):
        raise click.ClickException(f"{root} is not empty: remove it first")
    rng = random.Random(seed)
    block = random.Random(seed).randbytes(FIRST_BLOCK)
    started = time.perf_counter()
    made: set[str] = set()
    written = 0
    (root / "scripts").mkdir(parents=True)
    for script, paths in _layout(lines).items():
        with (root / "scripts" / f"{script}.trn").open("w", encoding="utf-8") as trn:
            for rel in paths:
                folder = rel.rpartition("/")[0]
                if folder not in made:
                    (root / folder).mkdir(parents=True, exist_ok=True)
                    made.add(folder)
                fd = os.open(root / rel, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                try:
                    os.write(fd, block)
                    os.ftruncate(fd, _pcm_size(rng))
                finally:
                    os.close(fd)
                trn.write(f"{rel} :: {_line_text(rng)}\n")
                written += 1
    os.sync()
    seconds = time.perf_counter() - started
    click.echo(
        json.dumps(
            {"root": str(root), "lines": written, "generate_s": round(seconds, 1)}, indent=None
        )
    )


@main.command()
@click.option("--root", type=click.Path(path_type=Path, exists=True), required=True)
@click.option("--cache", type=click.Choice(["warm", "cold"]), multiple=True, default=["warm"])
@click.option("--code", type=click.Path(path_type=Path, exists=True), multiple=True)
@click.option("--repeat", type=int, default=1, show_default=True)
def run(root: Path, cache: tuple[str, ...], code: tuple[Path, ...], repeat: int) -> None:
    """Time `pefty prepare kspon` (one JSON line per run); each --code checkout side by side."""
    checkouts = list(code) or [Path(__file__).resolve().parents[1]]
    for _ in range(repeat):
        for mode in cache:
            for checkout in checkouts:
                click.echo(json.dumps(_run_once(root, mode, checkout)))


def _run_once(root: Path, cache: str, checkout: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_prepare_") as out:
        if cache == "warm":
            # One untimed pass warms the cache the way a second run by the user would find it.
            _prepare(root, Path(out) / "warmup", checkout)
        else:
            subprocess.run(["sync"], check=True)
            Path("/proc/sys/vm/drop_caches").write_text("3\n")
        load = Path("/proc/loadavg").read_text().split()[:3]
        seconds, peak_kb, lines = _prepare(root, Path(out) / "data", checkout)
    return {
        "code": str(checkout),
        "cache": cache,
        "lines_written": lines,
        "wall_s": round(seconds, 1),
        "peak_rss_mb": round(peak_kb / 1024),
        "loadavg_before": " ".join(load),
        "loadavg_after": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


def _prepare(root: Path, out: Path, checkout: Path) -> tuple[float, int, int]:
    env = dict(os.environ, PYTHONPATH=str(checkout), HF_HUB_OFFLINE="1")
    command = [sys.executable, "-m", "pefty_whisper.cli", "prepare", "kspon"]
    command += ["--root", str(root), "--out", str(out), "--workdir", str(out.parent)]
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=out.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    output = process.stdout.read() if process.stdout else b""
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise click.ClickException(f"prepare failed:\n{output.decode(errors='replace')[-2000:]}")
    lines = sum(max(0, len(p.read_bytes().splitlines()) - 1) for p in out.glob("*.csv"))
    return seconds, usage.ru_maxrss, lines


if __name__ == "__main__":
    main()
