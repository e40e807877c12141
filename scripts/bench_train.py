"""Benchmark one training round: samples/s and peak memory of pefty's configurations against a
plain Hugging Face full fine-tune of the same Whisper, on the same data, batch, steps and seed.

Configurations (all with gradient checkpointing on, the toolkit's default):
  hf-full-ft   the Hugging Face blog recipe ("Fine-Tune Whisper For Multilingual ASR with
               Transformers"): every parameter trainable, fp32 (fp16 mixed precision on a GPU),
               Seq2SeqTrainer, lr 1e-5, no DeepSpeed
  8bit-zero2   `pefty train --quant 8bit --deepspeed zero2` (the toolkit's default recipe)
  8bit-nods    `pefty train --quant 8bit --deepspeed none`
  none-zero2   `pefty train --quant none --deepspeed zero2`
  none-nods    `pefty train --quant none --deepspeed none`
  8bit-zero2-auto  the default, with `-o model.context=auto`: each batch padded to its longest
               utterance (rounded up to 2 s) instead of 30 s, batches grouped by duration
  8bit-zero2-packed  the default data.packing: packed 30 s windows of several utterances
               with timestamps (data/packing.py), at the default shares; utterances/s counts
               what the windows carry, so it compares with the others' samples/s
The others train single utterances (`-o data.packing=false`), as before packing was the default.

Each configuration runs in a fresh Python process, so its peak memory is its own. With
--large-v3-gpu on a CUDA machine, whisper-large-v3's architecture (random weights, no hub) is
also trained for a few steps at batch 8 with --quant 8bit, for its peak GPU memory (the target
is under 12 GB, to fit an RTX 3060 12 GB).

Examples:
    python scripts/bench_train.py                                  # all configs, whisper-base
    python scripts/bench_train.py --configs hf-full-ft,8bit-zero2 --steps 2 --batch-size 2
    python scripts/bench_train.py --large-v3-gpu                   # on a CUDA machine
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

try:
    import pefty_whisper  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from _common import LAUNCHER_VARIABLES, fmt, machine_info, ratio  # noqa: E402
from _common import markdown_table as common_table  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from pefty_whisper.config import DataSection  # noqa: E402
from pefty_whisper.errors import PeftyError  # noqa: E402
from pefty_whisper.whisper.tokens import MAX_TARGET_POSITIONS  # noqa: E402
from pefty_whisper.workspace import RoundRecord, Workspace  # noqa: E402

BASELINE = "hf-full-ft"
# config name -> (quant, deepspeed, encoder context); the baseline is not a pefty run.
PEFTY_CONFIGS = {
    "8bit-zero2": ("8bit", "zero2", "full"),
    "8bit-nods": ("8bit", "none", "full"),
    "none-zero2": ("none", "zero2", "full"),
    "none-nods": ("none", "none", "full"),
    "8bit-zero2-auto": ("8bit", "zero2", "auto"),
    "8bit-zero2-packed": ("8bit", "zero2", "packed"),
}
ALL_CONFIGS = (BASELINE, *PEFTY_CONFIGS)
LARGE_V3 = "large-v3-8bit-zero2"
# The first step pays for one-off work (DeepSpeed's first step, allocator growth, loader
# start-up), so it is left out of samples/s.
WARMUP_STEPS = 1
# Peak memory is reached once the optimizer state exists, i.e. after the first step.
LARGE_V3_STEPS = 3
LARGE_V3_BATCH = 8
# whisper-large-v3's architecture; token ids, tokenizer and generation config come from the
# base model, which has the same special tokens up to large-v3's one extra language (<|yue|>).
LARGE_V3_ARCH: dict[str, Any] = {
    "vocab_size": 51866,
    "num_mel_bins": 128,
    "d_model": 1280,
    "encoder_layers": 32,
    "decoder_layers": 32,
    "encoder_attention_heads": 20,
    "decoder_attention_heads": 20,
    "encoder_ffn_dim": 5120,
    "decoder_ffn_dim": 5120,
    "max_source_positions": 1500,
    "max_target_positions": MAX_TARGET_POSITIONS,
}
GB = 1024**3
# ru_maxrss is in KiB on Linux and in bytes on macOS.
RSS_UNIT = 1 if sys.platform == "darwin" else 1024
# Variables a launcher sets; a child inheriting them would be set up as a distributed run.


@dataclass(frozen=True)
class RunSpec:
    """Everything a child process needs to run one configuration, passed as a JSON file."""

    name: str
    quant: str  # 8bit or none: the base's precision (the baseline trains a plain model)
    deepspeed: str
    # full (30 s, the baseline's), auto (see pefty_whisper/context.py), or packed (30 s windows)
    context: str
    base: str
    train_csv: str
    valid_csv: str
    run_dir: str
    steps: int
    batch_size: int
    seed: int

    @property
    def result_path(self) -> Path:
        return Path(self.run_dir) / "result.json"


class StepTimer(TrainerCallback):
    """Timestamps every optimizer step and reads the memory high-water marks after each.

    Attached the same way to the baseline and to pefty's trainer, so both are measured alike.
    Samples/s comes from these timestamps, not from the Trainer's `train_runtime`: that figure
    includes the first step, and for pefty the evaluation and checkpoint that transformers runs
    after the last step (it evaluates at the end whenever eval_strategy is "steps"), which the
    baseline never does. Memory is read at the end of the last step, before that evaluation.
    """

    def __init__(self) -> None:
        self.step_ends: list[float] = []
        self.trainable = 0
        self.total = 0
        self.peak_rss_gb = 0.0
        self.peak_cuda_allocated_gb: float | None = None
        self.peak_cuda_reserved_gb: float | None = None
        self.losses: list[float] = []

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        from pefty_whisper.train.model import count_parameters

        self.trainable, self.total = count_parameters(kwargs["model"])

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # GPU work is asynchronous: time the step, not its launch
            self.peak_cuda_allocated_gb = torch.cuda.max_memory_allocated() / GB
            self.peak_cuda_reserved_gb = torch.cuda.max_memory_reserved() / GB
        self.step_ends.append(time.perf_counter())
        # The process's own high-water mark: loader workers (the same in every config) are apart.
        self.peak_rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * RSS_UNIT / GB

    def on_log(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        logs = kwargs.get("logs") or {}
        if "loss" in logs:
            self.losses.append(float(logs["loss"]))

    def result(self, spec: RunSpec, precision: str) -> dict[str, Any]:
        timed = len(self.step_ends) - WARMUP_STEPS
        seconds = self.step_ends[-1] - self.step_ends[WARMUP_STEPS - 1] if timed > 0 else 0.0
        return {
            "config": spec.name,
            "quant": spec.quant,
            "deepspeed": spec.deepspeed,
            "context": spec.context,
            "precision": precision,
            "steps": len(self.step_ends),
            "timed_steps": max(timed, 0),
            "samples_per_s": timed * spec.batch_size / seconds if seconds > 0 else None,
            "seconds_per_step": seconds / timed if timed > 0 else None,
            "peak_rss_gb": self.peak_rss_gb,
            "peak_cuda_allocated_gb": self.peak_cuda_allocated_gb,
            "peak_cuda_reserved_gb": self.peak_cuda_reserved_gb,
            "trainable_params": self.trainable,
            "total_params": self.total,
            # Same data, order and seed everywhere: the first losses should nearly agree.
            "losses": self.losses,
        }


# -- children: one configuration per process -----------------------------------------------------


def run_pefty_child(spec: RunSpec) -> dict[str, Any]:
    """`pefty train`'s own path (its plan and RoundTrainer, in this process), with the step
    timer attached as a Trainer callback.

    Evaluation is pushed past the last step; the one pass left, at the end of training, is
    scored on 2 utterances after the last timestamp.
    """
    from pefty_whisper.errors import PeftyError
    from pefty_whisper.train import default_round_plan, train_round
    from pefty_whisper.train.model import compute_dtype
    from pefty_whisper.workspace import Workspace

    timer = StepTimer()
    overrides = {
        "train.max_steps": spec.steps,
        "train.batch_size": spec.batch_size,
        "train.seed": spec.seed,
        "train.gradient_checkpointing": "true",
        # No evaluation during the run; transformers still evaluates (and saves) once after the
        # last step, which the timer leaves out.
        "train.eval_steps": spec.steps + 1,
        "train.max_eval_samples": 2,
        "decode.batch_size": 2,
        "decode.max_new_tokens": 16,
        "train.logging_steps": 1,
        "model.context": "full" if spec.context == "packed" else spec.context,
        "data.packing": "true" if spec.context == "packed" else "false",
    }
    overrides |= {"model.quant": spec.quant, "train.deepspeed": spec.deepspeed}
    workspace = Workspace.at(spec.run_dir)
    try:
        config = workspace.load_config(None, [f"{k}={v}" for k, v in overrides.items()])
        plan = default_round_plan(
            workspace, config, 1, spec.base, spec.train_csv, spec.valid_csv, force=True
        )
        train_round(workspace, config, plan, callbacks=[timer])
    except PeftyError as exc:
        raise SystemExit(f"pefty train failed: {exc}") from None
    result = timer.result(spec, str(compute_dtype("auto")).removeprefix("torch."))
    record = RoundRecord.read(Path(spec.run_dir) / "adapters" / "round1")
    packing = record.packing if record is not None else None
    # A packed window carries several utterances: utterances/s is what compares across configs.
    per_example = packing["utterances"] / packing["windows"] if packing else 1.0
    result["utterances_per_example"] = round(per_example, 2)
    result["utterances_per_s"] = result["samples_per_s"] * per_example
    return result


def run_hf_child(spec: RunSpec) -> dict[str, Any]:
    """The Hugging Face blog's full fine-tune, on pefty's dataset and collator.

    Reusing SpeechDataset/SpeechCollator makes data loading identical in every configuration
    (the blog's `prepare_dataset` computes the same WhisperProcessor log-mel features and token
    ids, only ahead of time); the model computes its own loss, as in the blog.
    """
    from transformers import (
        Seq2SeqTrainer,
        Seq2SeqTrainingArguments,
        WhisperForConditionalGeneration,
    )

    from pefty_whisper.data.features import (
        SpeechCollator,
        SpeechDataset,
        filter_utterances,
        resolve_num_workers,
    )
    from pefty_whisper.data.manifest import read_manifest
    from pefty_whisper.whisper.processor import load_processor

    config = Workspace.at(spec.run_dir).load_config()
    processor = load_processor(Path(spec.base), config.model.language, config.model.task)
    utterances, _ = filter_utterances(
        read_manifest(spec.train_csv).utterances,
        processor,
        config.data.max_duration_s,
        config.train.max_label_tokens,
    )
    model = WhisperForConditionalGeneration.from_pretrained(spec.base)
    model.generation_config.language = config.model.language
    model.generation_config.task = config.model.task
    model.generation_config.forced_decoder_ids = None
    cuda = torch.cuda.is_available()
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(Path(spec.run_dir) / "logs")
    args = Seq2SeqTrainingArguments(
        output_dir=str(Path(spec.run_dir) / "checkpoints"),
        per_device_train_batch_size=spec.batch_size,
        gradient_accumulation_steps=1,
        learning_rate=1e-5,
        max_steps=spec.steps,
        gradient_checkpointing=True,
        fp16=cuda,
        eval_strategy="no",
        save_strategy="no",
        logging_steps=1,
        report_to=["tensorboard"],
        predict_with_generate=True,
        remove_unused_columns=False,
        label_names=["labels"],
        dataloader_num_workers=resolve_num_workers(config.data.num_workers),
        seed=spec.seed,
    )
    timer = StepTimer()
    trainer = Seq2SeqTrainer(
        model=model,
        args=args,
        train_dataset=SpeechDataset(utterances, processor),
        # The blog pads every input to 30 s.
        data_collator=SpeechCollator(
            feature_extractor=processor.feature_extractor,
            pad_token_id=processor.tokenizer.pad_token_id,
            context="full",
            context_step_s=config.model.context_step_s,
        ),
        processing_class=processor.feature_extractor,
        callbacks=[timer],
    )
    trainer.train()
    return timer.result(spec, "fp16 mixed" if cuda else "float32")


def run_child(spec_path: Path) -> None:
    spec = RunSpec(**json.loads(spec_path.read_text(encoding="utf-8")))
    result = run_hf_child(spec) if spec.name == BASELINE else run_pefty_child(spec)
    spec.result_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


# -- the parent: data, model, one child per configuration, report -------------------------------


def prepare_data(workdir: Path) -> tuple[Path, Path]:
    """The sample corpus through `pefty prepare kspon`, once: round 1's train and test CSVs."""
    from pefty_whisper.data.prepare import prepare_kspon
    from pefty_whisper.demo.pipeline import ensure_sample_corpus

    workspace = Workspace.at(workdir)
    train_csv = workspace.round_manifest(1, "train")
    valid_csv = workspace.round_manifest(1, "test")
    if not (train_csv.is_file() and valid_csv.is_file()):
        corpus = ensure_sample_corpus(workspace.root)
        prepare_kspon(corpus, workspace.data_dir, DataSection())
    return train_csv, valid_csv


def build_random_whisper(base_dir: Path, out_dir: Path, arch: dict[str, Any]) -> Path:
    """A Whisper of another size with random weights, loadable like any checkpoint (no hub).

    Memory depends on shapes, not on weight values, so random weights measure the real model.
    """
    from _common import random_whisper
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperProcessor,
    )

    if (out_dir / "config.json").is_file():
        return out_dir
    config = WhisperConfig.from_pretrained(base_dir)
    for key, value in arch.items():
        setattr(config, key, value)
    model = random_whisper(config).to(torch.float16)
    model.generation_config = GenerationConfig.from_pretrained(base_dir)
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    base_processor = WhisperProcessor.from_pretrained(base_dir)
    feature_extractor = WhisperFeatureExtractor(feature_size=config.num_mel_bins)
    WhisperProcessor(feature_extractor, base_processor.tokenizer).save_pretrained(partial)
    partial.rename(out_dir)  # a killed build never looks finished
    return out_dir


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES}
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def run_config(spec: RunSpec) -> dict[str, Any]:
    """One configuration in a fresh Python process; its log goes to <run_dir>/train.log."""
    run_dir = Path(spec.run_dir)
    shutil.rmtree(run_dir, ignore_errors=True)  # each run starts from an empty workspace
    run_dir.mkdir(parents=True)
    spec_path = run_dir / "spec.json"
    spec_path.write_text(json.dumps(asdict(spec), indent=2) + "\n", encoding="utf-8")
    log_path = run_dir / "train.log"
    click.echo(
        f"[bench] {spec.name}: {spec.steps} steps of batch {spec.batch_size}, log {log_path}"
    )
    started = time.time()
    with log_path.open("w", encoding="utf-8") as log:
        returncode = subprocess.call(
            [sys.executable, str(Path(__file__).resolve()), "--child", str(spec_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_env(),
        )
    wall = time.time() - started
    if returncode != 0 or not spec.result_path.is_file():
        tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
        click.echo(f"[bench] {spec.name}: FAILED (exit {returncode}); last lines of {log_path}:")
        click.echo("\n".join("    " + line for line in tail))
        return {"config": spec.name, "error": f"exit {returncode}", "wall_s": round(wall, 1)}
    result = json.loads(spec.result_path.read_text(encoding="utf-8"))
    result["wall_s"] = round(wall, 1)  # whole process: imports, loading, final validation too
    click.echo(
        f"[bench] {spec.name}: {fmt(result['samples_per_s'])} samples/s, "
        f"peak RSS {result['peak_rss_gb']:.2f} GB ({wall:.0f} s in all)"
    )
    return result


def markdown_table(results: list[dict[str, Any]]) -> str:
    """One row per configuration, ratios against the baseline (large-v3 has no baseline)."""
    baseline = next((r for r in results if r["config"] == BASELINE and "error" not in r), {})
    cuda = any(r.get("peak_cuda_allocated_gb") is not None for r in results)
    versus = f"vs {BASELINE}"
    header = ["config", "quant", "DeepSpeed", "context", "samples/s", "utterances/s", versus]
    header += ["peak RSS GB", versus]
    if cuda:
        header += ["peak CUDA GB", versus]
    header.append("trainable params")
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["config"], *(["failed"] + ["-"] * (len(header) - 2))])
            continue
        own = r["config"] != LARGE_V3
        cells = [
            r["config"],
            r["quant"],
            r["deepspeed"],
            r.get("context", "full"),
            fmt(r["samples_per_s"]),
            fmt(r.get("utterances_per_s", r["samples_per_s"])),
            ratio(r.get("utterances_per_s", r["samples_per_s"]), baseline.get("samples_per_s"))
            if own
            else "-",
            fmt(r["peak_rss_gb"]),
            ratio(r["peak_rss_gb"], baseline.get("peak_rss_gb")) if own else "-",
        ]
        if cuda:
            cells += [
                fmt(r.get("peak_cuda_allocated_gb")),
                ratio(r.get("peak_cuda_allocated_gb"), baseline.get("peak_cuda_allocated_gb"))
                if own
                else "-",
            ]
        cells.append(f"{r['trainable_params']:,d} of {r['total_params']:,d}")
        rows.append(cells)
    return common_table(header, rows)


@click.command(epilog="Example: python scripts/bench_train.py --configs hf-full-ft,8bit-zero2")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("bench/train"),
    show_default=True,
    help="Holds the base model, sample corpus, data/ and one runs/<config>/ per configuration.",
)
@click.option("--steps", type=click.IntRange(min=WARMUP_STEPS + 1), default=8, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option(
    "--configs",
    default=",".join(ALL_CONFIGS),
    show_default=True,
    help="Comma-separated configurations to run, in this order.",
)
@click.option(
    "--model",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="A transformers Whisper directory (default: the offline whisper-base, imported once "
    "into the workdir as `pefty demo` does).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="JSON report (default: <workdir>/bench_train.json).",
)
@click.option(
    "--large-v3-gpu",
    is_flag=True,
    help=f"With CUDA: also the peak GPU memory of whisper-large-v3 (random weights) at batch "
    f"{LARGE_V3_BATCH} with --quant 8bit --deepspeed zero2.",
)
@click.option("--child", type=click.Path(path_type=Path), default=None, hidden=True)
def main(
    workdir: Path,
    steps: int,
    batch_size: int,
    seed: int,
    configs: str,
    model: Path | None,
    out: Path | None,
    large_v3_gpu: bool,
    child: Path | None,
) -> None:
    """Samples/s and peak memory of one training round, pefty's configs vs a full fine-tune."""
    if child is not None:
        run_child(child)
        return
    names = [c.strip() for c in configs.split(",") if c.strip()]
    unknown = [n for n in names if n not in ALL_CONFIGS]
    if unknown:
        raise click.BadParameter(
            f"unknown {', '.join(unknown)}; choose from {', '.join(ALL_CONFIGS)}",
            param_hint="--configs",
        )
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        if model is None:
            from pefty_whisper.demo.base import ensure_offline_base

            click.echo("[bench] offline whisper-base (imported and checked on the first run only)")
            model = ensure_offline_base(workdir)
        train_csv, valid_csv = prepare_data(workdir)
    except PeftyError as exc:
        raise click.ClickException(str(exc)) from None
    model = model.resolve()

    def spec(name: str, setup: tuple[str, str, str], base: Path, steps: int, batch: int) -> RunSpec:
        quant, deepspeed, context = setup
        return RunSpec(
            name=name,
            quant=quant,
            deepspeed=deepspeed,
            context=context,
            base=str(base),
            train_csv=str(train_csv),
            valid_csv=str(valid_csv),
            run_dir=str(workdir / "runs" / name),
            steps=steps,
            batch_size=batch,
            seed=seed,
        )

    results = []
    for name in names:
        setup = PEFTY_CONFIGS.get(name, ("none", "none", "full"))
        results.append(run_config(spec(name, setup, model, steps, batch_size)))
    if large_v3_gpu and not torch.cuda.is_available():
        click.echo("[bench] --large-v3-gpu skipped: no CUDA GPU here")
    elif large_v3_gpu:
        click.echo("[bench] building whisper-large-v3 with random weights (first run only)")
        large_dir = workdir / "base" / "whisper-large-v3-random"
        large = build_random_whisper(model, large_dir, LARGE_V3_ARCH)
        large_spec = spec(
            LARGE_V3, PEFTY_CONFIGS["8bit-zero2"], large, LARGE_V3_STEPS, LARGE_V3_BATCH
        )
        results.append(run_config(large_spec))

    report = {
        "machine": machine_info("bitsandbytes", "deepspeed", "accelerate"),
        "model": str(model),
        "data": str(train_csv),
        "steps": steps,
        "batch_size": batch_size,
        "seed": seed,
        "warmup_steps_excluded": WARMUP_STEPS,
        "gradient_checkpointing": True,
        "results": results,
    }
    out = out or workdir / "bench_train.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    info = report["machine"]
    click.echo("")
    click.echo(
        f"{Path(model).name}, {steps} steps of batch {batch_size} (first {WARMUP_STEPS} not "
        f"timed), gradient checkpointing on; {info['device']}, {info['cpu_count']} CPUs, "
        f"torch {info['versions'].get('torch')}"
    )
    click.echo(markdown_table(results))
    click.echo(f"\nreport: {out}")
    if any("error" in r for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
