"""What the benchmarks and checks share: random Whisper checkpoints, Markdown tables, the machine.

The random-Whisper builder is the tests' too (tests/fixtures.py imports it), so a benchmark's
model and a test's model are built, randomised and saved the same way: through the package's
own `whisper_config` and `build_generation_config`, with the real tokenizer where one is given.
"""

from __future__ import annotations

import os
import platform
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration, WhisperProcessor

    from pefty_whisper.whisper.processor import WhisperDims


def random_whisper(
    config: WhisperConfig, seed: int = 0, randomize: bool = False, device: Any = None
) -> WhisperForConditionalGeneration:
    """A Whisper of `config`'s shapes with random weights (device "meta": no memory at all).

    Memory and speed depend on shapes, not on weight values, so random weights measure the real
    model; `randomize` gives every tensor distinct values (layer norms too, which init to 1 and
    0), so a tiny model moves its tokens and a test comparing weights notices any swap.
    """
    import torch
    from transformers import WhisperForConditionalGeneration

    torch.manual_seed(seed)
    with torch.device(device or "cpu"):
        model = WhisperForConditionalGeneration(config)
    if randomize:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in model.named_parameters():
                noise = torch.randn(param.shape, generator=generator) * 0.05
                noise = noise.to(param.device)
                param.copy_(noise + 1.0 if name.endswith("layer_norm.weight") else noise)
    return model


def save_random_whisper(
    out_dir: Path,
    dims: WhisperDims,
    processor: WhisperProcessor,
    seed: int = 0,
    randomize: bool = True,
    dtype: torch.dtype | None = None,
    device: Any = None,
) -> Path:
    """A random multilingual Whisper checkpoint that loads like a real one: weights, processor,
    a generation config for Korean transcription, and the preprocessor_config.json CTranslate2
    needs. Built in a sibling directory and renamed, so a killed build never looks finished."""
    from pefty_whisper.whisper.processor import (
        build_generation_config,
        whisper_config,
        write_preprocessor_config,
    )

    out_dir = Path(out_dir)
    config = whisper_config(dims, processor.tokenizer, tied=True)
    model = random_whisper(config, seed, randomize, device)
    model.generation_config = build_generation_config(
        processor.tokenizer,
        max_length=dims.max_target_positions,
        num_decoder_layers=dims.decoder_layers,
        num_decoder_heads=dims.decoder_attention_heads,
        language="korean",
        task="transcribe",
    )
    if dtype is not None:
        model = model.to(dtype)
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    processor.save_pretrained(partial)
    write_preprocessor_config(partial, processor.feature_extractor)
    if not out_dir.exists():
        partial.rename(out_dir)
        return out_dir
    for path in partial.iterdir():  # into a folder the caller made: its other files stay
        os.replace(path, out_dir / path.name)
    partial.rmdir()
    return out_dir


def whisper_dims(
    n_mels: int, d_model: int, layers: int, heads: int, vocab_size: int = 51865
) -> WhisperDims:
    """Whisper's shapes as the released sizes have them: ffn 4 x d_model, 1500 audio and
    448 text positions."""
    from pefty_whisper.whisper.processor import WhisperDims
    from pefty_whisper.whisper.tokens import MAX_TARGET_POSITIONS

    return WhisperDims(
        n_mels=n_mels,
        d_model=d_model,
        vocab_size=vocab_size,
        encoder_layers=layers,
        decoder_layers=layers,
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        encoder_ffn_dim=4 * d_model,
        decoder_ffn_dim=4 * d_model,
        max_source_positions=1500,
        max_target_positions=MAX_TARGET_POSITIONS,
    )


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub Markdown table; numbers are formatted by the caller (see fmt and ratio)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def ratio(value: float | None, reference: float | None) -> str:
    """`value` against the baseline's figure, as `1.23x`."""
    if value is None or not reference:
        return "n/a"
    return f"{value / reference:.2f}x"


def machine_info(*packages: str) -> dict[str, Any]:
    """What a figure was measured on: the CPUs and their load, the device, the versions of
    torch and of `packages`."""
    import torch

    from pefty_whisper.files import package_versions

    cuda = torch.cuda.is_available()
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "versions": package_versions(*packages),
    }


# -- round benchmarks: the sample corpus, the batch of a packed round, logged `pefty` commands --

SAMPLE_PARTS = 5  # the sample corpus's five parts: 5 x 64 training utterances
# A batch of 8 single utterances; a packed batch carries about as many (the round benchmarks
# compare formats and transforms at the same utterances per optimizer step).
UTTERANCES_PER_STEP = 8
# Set by a launcher around the benchmark; a child `pefty` must start its own process group.
LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def sample_corpus_train(workdir: Path, utterances: int) -> Path:
    """The sample corpus prepared in `workdir` (made on the first call) and its parts' training
    rows joined in corpus order, the first `utterances` of them, as data/bench_train_N.csv."""
    import click

    from pefty_whisper.config import DataSection
    from pefty_whisper.data.manifest import read_manifest, write_manifest
    from pefty_whisper.data.prepare import prepare_kspon
    from pefty_whisper.demo.pipeline import ensure_sample_corpus
    from pefty_whisper.workspace import Workspace

    workspace = Workspace.at(workdir)
    if not workspace.manifest_path("eval_clean").is_file():
        prepare_kspon(ensure_sample_corpus(workspace.root), workspace.data_dir, DataSection())
    rows = []
    for part in range(1, SAMPLE_PARTS + 1):
        rows += read_manifest(workspace.round_manifest(part, "train")).utterances
    if utterances > len(rows):
        raise click.BadParameter(f"the sample corpus has {len(rows)}", param_hint="--utterances")
    train = workspace.data_dir / f"bench_train_{utterances}.csv"
    write_manifest(train, rows[:utterances])
    return train


def packed_batch(
    config_file: Path, overrides: list[str], base: Path, train: Path
) -> tuple[int, int]:
    """(batch size, windows in one pass) of a packed round, from the plan the round itself
    makes: the batch carries about UTTERANCES_PER_STEP utterances."""
    from pefty_whisper.config import load_config
    from pefty_whisper.data.manifest import read_manifest
    from pefty_whisper.data.packing import packed_training_set
    from pefty_whisper.whisper.processor import load_processor

    config = load_config(config_file, overrides)
    processor = load_processor(base, config.model.language, config.model.task)
    dataset = packed_training_set(read_manifest(train).utterances, processor.tokenizer, config)
    per_window = dataset.plan.utterances / len(dataset.plan.windows)
    return max(1, round(UTTERANCES_PER_STEP / per_window)), len(dataset.plan.windows)


def run_logged(log: Path, argv: list[str], what: str) -> float:
    """One command with its output in `log`, outside any launcher's process group; its
    seconds. A failure raises with the log's last lines."""
    import subprocess
    import time

    import click

    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES}
    env.setdefault("HF_HUB_OFFLINE", "1")
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with log.open("w", encoding="utf-8") as out:
        code = subprocess.call(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    if code != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-12:]
        raise click.ClickException(f"{what} failed (exit {code}), {log}:\n" + "\n".join(tail))
    return time.perf_counter() - started


def pefty_logged(workdir: Path, log: Path, args: list[str]) -> float:
    """`pefty ARGS --workdir WORKDIR` with its output in `log`; its seconds."""
    import sys

    argv = [sys.executable, "-m", "pefty_whisper.cli", *args, "--workdir", str(workdir)]
    return run_logged(log, argv, f"pefty {args[0]}")


def paired_figures(a: Any, b: Any) -> dict[str, Any]:
    """B - A in CER points on the same utterances (kspon protocol), with the interval of the
    difference and its verdict; `a` and `b` are evaluate/figures.DecodeCounts."""
    from pefty_whisper.evaluate.compare import paired_counts
    from pefty_whisper.evaluate.figures import SUBSET_PROTOCOL

    comparison = paired_counts(a, b, (SUBSET_PROTOCOL,))[SUBSET_PROTOCOL]
    return {
        "difference": comparison.difference,
        "low": comparison.low,
        "high": comparison.high,
        "verdict": comparison.verdict,
    }


def difference_text(paired: dict[str, Any] | None) -> str:
    """`+1.4 [-0.5, +3.4] no clear difference` for a table cell; `-` where nothing was paired."""
    if paired is None:
        return "-"
    return (
        f"{paired['difference']:+.1f} [{paired['low']:+.1f}, {paired['high']:+.1f}] "
        f"{paired['verdict']}"
    )
