"""Which training format makes the better model for real recordings: the quality half of the
packed-training benchmark (the throughput half is scripts/bench_train.py).

Every format trains one round of LoRA on real whisper-base (8-bit, ZeRO-2, the defaults) from
the same base, on the same 320 sample-corpus utterances in corpus order, one pass, at the same
learning rate: single utterances in 40 steps of batch 8, packed windows in batches that carry
about as many utterances (about 7-10 per step, 31-43 steps). Then each merged model is
evaluated on eval_clean with `pefty evaluate`:

  - torch at 30 s: per-utterance CER without timestamps, long-form CER and deleted speech on
    the set stitched into recordings of up to 3 minutes (two of about 110 s for eval_clean's 40
    sentences; transformers' sequential long-form generate),
    and characters written on generated silence, noise and hum;
  - the same through a CTranslate2 int8 export (faster-whisper for the long-form and silence).

Formats (name: what differs from the defaults):
  full          one utterance per example, padded to 30 s (the Hugging Face blog recipe)
  auto          one utterance per example, padded to the batch (model.context=auto)
  packed-s30    data.packing, single_share 0.3 (30% of utterances single, padded to 30 s)
  packed-u30    data.packing, single_share 0, untimed_share 0.3 (30% of windows untimed)
  packed-s10u30 data.packing, single_share 0.1, untimed_share 0.3
  packed-t100   data.packing, single_share 0, untimed_share 0 (every window with timestamps)

Run it on a quiet machine; on 2 CPU cores it takes about 40 minutes. Each pefty command's log
is in <workdir>/runs/<format>/<command>.log.

    python scripts/bench_packing.py
    python scripts/bench_packing.py --formats auto,packed-u30 --utterances 160
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import yaml

try:
    import pefty_whisper  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import markdown_table as common_table  # noqa: E402

from pefty_whisper.config import DataSection, load_config  # noqa: E402
from pefty_whisper.data.manifest import read_manifest, write_manifest  # noqa: E402
from pefty_whisper.errors import PeftyError  # noqa: E402
from pefty_whisper.files import package_versions  # noqa: E402
from pefty_whisper.workspace import CONFIG_FILE, EvalRecord, Workspace  # noqa: E402

EVAL_SET = "eval_clean"
PARTS = 5  # the sample corpus's five parts: 5 x 64 training utterances
UTTERANCES_PER_STEP = 8  # a batch of 8 single utterances; packed batches carry about as many


@dataclass(frozen=True)
class Format:
    name: str
    overrides: dict[str, Any]
    summary: str

    @property
    def packed(self) -> bool:
        return bool(self.overrides.get("data.packing"))


FORMATS = {
    f.name: f
    for f in (
        Format(
            "full",
            {"data.packing": False, "model.context": "full"},
            "single utterances at 30 s",
        ),
        Format(
            "auto",
            {"data.packing": False, "model.context": "auto"},
            "single utterances padded to the batch",
        ),
        Format(
            "packed-s30",
            {"data.packing": True, "data.single_share": 0.3, "data.untimed_share": 0.0},
            "packed, 30% of utterances single",
        ),
        Format(
            "packed-u30",
            {"data.packing": True, "data.single_share": 0.0, "data.untimed_share": 0.3},
            "packed, 30% of windows untimed",
        ),
        Format(
            "packed-s10u30",
            {"data.packing": True, "data.single_share": 0.1, "data.untimed_share": 0.3},
            "packed, 10% of utterances single, 30% of windows untimed",
        ),
        Format(
            "packed-t100",
            {"data.packing": True, "data.single_share": 0.0, "data.untimed_share": 0.0},
            "packed, every window timed",
        ),
    )
}

# The demo's round settings (pefty_whisper/demo/pipeline.py), with no validation during the
# run: the evaluations afterwards are the figures.
ROUND_SETTINGS: dict[str, Any] = {
    "train": {
        "learning_rate": 1.0e-3,
        "warmup_steps": 2,
        "logging_steps": 5,
        "max_eval_samples": 8,
        "gradient_checkpointing": False,
    },
    "decode": {"batch_size": 8},
    "data": {"num_workers": 1},
}


def prepare_data(workdir: Path, utterances: int) -> tuple[Path, Path, Path]:
    """The sample corpus's parts joined in corpus order (train), part 1's test (validation) and
    eval_clean, as CSVs with absolute audio paths."""
    from pefty_whisper.data.prepare import prepare_kspon
    from pefty_whisper.demo.pipeline import ensure_sample_corpus

    workspace = Workspace.at(workdir)
    if not workspace.manifest_path(EVAL_SET).is_file():
        prepare_kspon(ensure_sample_corpus(workspace.root), workspace.data_dir, DataSection())
    rows = []
    for part in range(1, PARTS + 1):
        rows += read_manifest(workspace.round_manifest(part, "train")).utterances
    if utterances > len(rows):
        raise click.BadParameter(f"the sample corpus has {len(rows)}", param_hint="--utterances")
    train = workspace.data_dir / f"bench_train_{utterances}.csv"
    write_manifest(train, rows[:utterances])
    return train, workspace.round_manifest(1, "test"), workspace.manifest_path(EVAL_SET)


def batch_for(fmt: Format, run_dir: Path, base: Path, train: Path) -> tuple[int, int]:
    """(batch size, windows in one pass): a packed batch carries about UTTERANCES_PER_STEP
    utterances, from the plan the round itself will make."""
    if not fmt.packed:
        return UTTERANCES_PER_STEP, len(read_manifest(train).utterances)
    from pefty_whisper.data.packing import packed_training_set
    from pefty_whisper.whisper.processor import load_processor

    overrides = [f"{k}={str(v).lower()}" for k, v in fmt.overrides.items()]
    config = load_config(run_dir / CONFIG_FILE, overrides)
    processor = load_processor(base, config.model.language, config.model.task)
    dataset = packed_training_set(read_manifest(train).utterances, processor.tokenizer, config)
    per_window = dataset.plan.utterances / len(dataset.plan.windows)
    return max(1, round(UTTERANCES_PER_STEP / per_window)), len(dataset.plan.windows)


def pefty(run_dir: Path, name: str, args: list[str]) -> float:
    """One `pefty` command in the run's workspace; its seconds. Output goes to <name>.log."""
    log = run_dir / f"{name}.log"
    started = time.perf_counter()
    with log.open("w", encoding="utf-8") as out:
        code = subprocess.call(
            [sys.executable, "-m", "pefty_whisper.cli", *args, "--workdir", str(run_dir)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    if code != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-12:]
        raise click.ClickException(f"pefty {name} failed (exit {code}), {log}:\n" + "\n".join(tail))
    return time.perf_counter() - started


def run_format(fmt: Format, workdir: Path, base: Path, data: tuple[Path, Path, Path]) -> dict:
    train, valid, eval_set = data
    run_dir = workdir / "runs" / fmt.name
    run_dir.mkdir(parents=True, exist_ok=True)
    settings = {"model": {"base": str(base)}, **ROUND_SETTINGS}
    (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(settings, sort_keys=False))
    batch, examples = batch_for(fmt, run_dir, base, train)
    steps = math.ceil(examples / batch)
    overrides = [f"{k}={str(v).lower()}" for k, v in fmt.overrides.items()]
    overrides += [f"train.batch_size={batch}", f"train.max_steps={steps}"]
    overrides += [f"train.eval_steps={steps + 1}"]
    options = [arg for value in overrides for arg in ("-o", value)]
    click.echo(f"[bench] {fmt.name}: {examples} examples, {steps} steps of batch {batch}")
    seconds = {
        "train": pefty(
            run_dir,
            "train",
            ["train", "--round", "1", "--base", str(base), "--train", str(train)]
            + ["--valid", str(valid), "--force", *options],
        )
    }
    seconds["merge"] = pefty(run_dir, "merge", ["merge", "--round", "1", "--force"])
    # Every model is decoded at 30 s, what faster-whisper and every export consumer feed it.
    evaluate = ["evaluate", "--set", str(eval_set), "--model", "merged/round1"]
    evaluate += ["-o", "model.context=full"]
    seconds["evaluate_torch"] = pefty(run_dir, "evaluate-torch", [*evaluate, "--backend", "torch"])
    seconds["evaluate_ct2"] = pefty(run_dir, "evaluate-ct2", [*evaluate, "--backend", "ct2"])
    record = Workspace.at(run_dir).round_record(1)
    return {
        "format": fmt.name,
        "summary": fmt.summary,
        "overrides": fmt.overrides,
        "batch_size": batch,
        "steps": steps,
        "packing": record.packing if record else None,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "evaluations": {e["backend"]: e for e in read_evaluations(run_dir)},
    }


def read_evaluations(run_dir: Path) -> list[dict[str, Any]]:
    labels = Workspace.at(run_dir).eval_labels()
    return [EvalRecord.read(path).to_dict() for label, path in labels if label.set_name == EVAL_SET]


def _cells(evaluation: dict[str, Any] | None) -> list[str]:
    if evaluation is None:
        return ["-"] * 5
    whole = evaluation.get("longform") or {}
    silence = evaluation.get("silence_chars") or {}
    ratio = whole.get("cer", 0.0) / evaluation["cer"] if evaluation["cer"] else float("nan")
    return [
        f"{evaluation['cer']:.1f}%",
        f"{whole.get('cer', float('nan')):.1f}%",
        f"{ratio:.2f}x",
        f"{whole.get('deleted', float('nan')):.1f}%",
        str(sum(silence.values())),
    ]


def markdown_table(results: list[dict[str, Any]]) -> str:
    header = ["format", "steps x batch", "utterances / example"]
    for backend in ("torch", "ct2"):
        header += [
            f"{backend} CER at 30 s",
            f"{backend} long-form CER",
            "vs per-utterance",
            "deleted",
            "silence chars",
        ]
    rows = []
    for r in results:
        packing = r["packing"] or {}
        per_example = packing["utterances"] / packing["windows"] if packing else 1.0
        cells = [r["format"], f"{r['steps']} x {r['batch_size']}", f"{per_example:.2f}"]
        for backend in ("torch", "ct2"):
            cells += _cells(r["evaluations"].get(backend))
        rows.append(cells)
    return common_table(header, rows)


@click.command(epilog="Example: python scripts/bench_packing.py --formats auto,packed-u30")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("bench/packing"),
    show_default=True,
    help="Holds the base model, sample corpus, data/ and one runs/<format>/ workspace each.",
)
@click.option(
    "--formats",
    default=",".join(FORMATS),
    show_default=True,
    help="Comma-separated training formats, in this order.",
)
@click.option(
    "--utterances",
    type=click.IntRange(min=UTTERANCES_PER_STEP),
    default=PARTS * 64,
    show_default=True,
    help="Training utterances, one pass, the same for every format.",
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None)
def main(workdir: Path, formats: str, utterances: int, out: Path | None) -> None:
    """Per-utterance, long-form and silence figures of models trained in each format."""
    names = [n.strip() for n in formats.split(",") if n.strip()]
    unknown = [n for n in names if n not in FORMATS]
    if unknown:
        raise click.BadParameter(
            f"unknown {', '.join(unknown)}; choose from {', '.join(FORMATS)}",
            param_hint="--formats",
        )
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        from pefty_whisper.demo.base import ensure_offline_base

        click.echo("[bench] offline whisper-base (imported and checked on the first run only)")
        base = ensure_offline_base(workdir).resolve()
        data = prepare_data(workdir, utterances)
    except PeftyError as exc:
        raise click.ClickException(str(exc)) from None
    results = []
    for name in names:
        results.append(run_format(FORMATS[name], workdir, base, data))
        click.echo(markdown_table(results[-1:]))
    report = {
        "base": str(base),
        "train": str(data[0]),
        "utterances": utterances,
        "versions": package_versions("torch", "transformers", "ctranslate2", "faster-whisper"),
        "results": results,
    }
    out = out or workdir / "bench_packing.json"
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    click.echo("\n" + markdown_table(results))
    click.echo(f"\nreport: {out}")


if __name__ == "__main__":
    main()
