"""Which augmentation to turn on by default: one round from the same base without and with each
transform of the `augment:` section and with their combination, scored on eval_clean, on
eval_clean under each evaluation condition, and on the demo's voice-shift set (eval_clean's
sentences in espeak-ng voices and at rates the rounds never train on), each figure with its 95%
bootstrap interval and the paired difference against the round without augmentation, beside
the training throughput each transform costs.

Every round trains LoRA on the same base (the offline whisper-base unless --base), 8-bit, ZeRO-2,
packed windows (the defaults), on the same sample-corpus utterances in corpus order, one pass,
at the demo's learning rate, in a fresh process with a step timer (pefty's own RoundTrainer,
callbacks=). Each merged model is evaluated with `pefty evaluate` (torch, 30 s, --no-longform).
Utterances/s is timed from the second step to the last, validation left out. The worker column
is what one loader worker's augmentation chain delivers (audio seconds per wall second, one
thread, on 5 s utterances at the transform's probabilities), as scripts/bench_augment_transforms.py
measures each transform alone.

Transforms (name: the augment: keys set):
  none       nothing (the baseline)
  spec       spec_augment (transformers' SpecAugment: time masks 0.05 x 10 frames)
  speed      speed_prob 1.0 over speed 0.9/1.0/1.1 (Kaldi/ESPnet; windows planned at 0.9)
  noise      noise_prob 0.5, white/pink/brown/hum/babble at 5-20 dB SNR
  telephone  telephone_prob 0.5 (300-3,400 Hz, 8 kHz mu-law)
  gain       gain_prob 0.5, -10 to +6 dB
  all        every one of the above at once

Run it on a quiet machine: on 2 CPU cores the full run (7 rounds of whisper-base over 320
utterances, 7 evaluations of 40 utterances each) takes about an hour and a half. Logs are in
<workdir>/runs/<transform>/*.log. The same command run again keeps every round, merge and
evaluation that finished with the same settings (remove runs/<transform>/ to redo one).

    python scripts/bench_augment.py
    python scripts/bench_augment.py --transforms none,telephone --conditions telephone
    python scripts/bench_augment.py --base tiny/ --utterances 16 --limit 4   # a smoke run
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import click
import yaml

try:
    import pefty_whisper  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import (  # noqa: E402
    SAMPLE_PARTS,
    fmt,
    markdown_table,
    packed_batch,
    pefty_logged,
    run_logged,
    sample_corpus_train,
)

from pefty_whisper.data.manifest import read_manifest  # noqa: E402
from pefty_whisper.errors import PeftyError  # noqa: E402
from pefty_whisper.files import package_versions  # noqa: E402
from pefty_whisper.intervals import bootstrap_rate, paired_bootstrap  # noqa: E402
from pefty_whisper.workspace import CONFIG_FILE, EvalLabel, RoundRecord, Workspace  # noqa: E402

EVAL_SET = "eval_clean"
BASELINE = "none"
VOICE_SHIFT = "voice shift"
WARMUP_STEPS = 1  # the first step loads and compiles: left out of the timing

_ALL = {
    "augment.spec_augment": "true",
    "augment.speed_prob": 1.0,
    "augment.noise_prob": 0.5,
    "augment.telephone_prob": 0.5,
    "augment.gain_prob": 0.5,
}
TRANSFORMS: dict[str, dict[str, Any]] = {
    "none": {},
    "spec": {"augment.spec_augment": "true"},
    "speed": {"augment.speed_prob": 1.0},
    "noise": {"augment.noise_prob": 0.5},
    "telephone": {"augment.telephone_prob": 0.5},
    "gain": {"augment.gain_prob": 0.5},
    "all": _ALL,
}
# Evaluation conditions (data/conditions.py): the channels and voices the transforms stand for,
# at strengths the training draws do not reach.
CONDITIONS = "telephone,noise-babble-10db,noise-pink-5db,speed-1.2,quiet-20db"

# The demo's round settings (pefty_whisper/demo/pipeline.py), validation pushed past the end.
ROUND_SETTINGS: dict[str, Any] = {
    "train": {
        "learning_rate": 1.0e-3,
        "warmup_steps": 2,
        "logging_steps": 5,
        "max_eval_samples": 4,
        "gradient_checkpointing": False,
    },
    "decode": {"batch_size": 8},
    "data": {"num_workers": 1},
}


# -- data ------------------------------------------------------------------------------------------


def prepare_data(workdir: Path, utterances: int) -> dict[str, Path]:
    """The sample corpus's parts joined in corpus order (train), part 1's test (validation),
    eval_clean and the voice-shift set, as CSVs."""
    from pefty_whisper.demo.pipeline import ensure_voice_shift_set

    train = sample_corpus_train(workdir, utterances)
    workspace = Workspace.at(workdir)
    return {
        "train": train,
        "valid": workspace.round_manifest(1, "test"),
        EVAL_SET: workspace.manifest_path(EVAL_SET),
        VOICE_SHIFT: ensure_voice_shift_set(workspace.root),
    }


def overrides_of(name: str) -> list[str]:
    return [f"{key}={value}" for key, value in TRANSFORMS[name].items()]


def batch_and_windows(run_dir: Path, base: Path, train: Path, name: str) -> tuple[int, int]:
    """(batch size, windows in one pass) from the plan the round itself makes (speed's windows
    hold fewer utterances: planned at 0.9)."""
    return packed_batch(run_dir / CONFIG_FILE, overrides_of(name), base, train)


# -- one round: a child process that trains with a step timer ------------------------------------


def run_child(spec_path: Path) -> None:
    """`pefty train`'s own path in this process, timed per optimizer step."""
    from transformers import TrainerCallback

    from pefty_whisper.train import default_round_plan, train_round

    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    step_ends: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            step_ends.append(time.perf_counter())

    workspace = Workspace.at(spec["run_dir"])
    config = workspace.load_config(None, spec["overrides"])
    plan = default_round_plan(
        workspace, config, 1, spec["base"], spec["train"], spec["valid"], force=True
    )
    train_round(workspace, config, plan, callbacks=[StepTimer()])
    timed = len(step_ends) - WARMUP_STEPS
    seconds = step_ends[-1] - step_ends[WARMUP_STEPS - 1] if timed > 0 else None
    result = {"steps": len(step_ends), "seconds_per_step": seconds / timed if seconds else None}
    (spec_path.parent / "result.json").write_text(json.dumps(result) + "\n", encoding="utf-8")


def pefty(run_dir: Path, name: str, args: list[str]) -> float:
    return pefty_logged(run_dir, run_dir / f"{name}.log", args)


def run_transform(
    name: str, workdir: Path, base: Path, data: dict[str, Path], conditions: list[str], limit: int
) -> dict[str, Any]:
    """One transform's round, merge and evaluations. Each step whose output exists from an
    earlier run with the same settings is kept, so a killed benchmark continues where it
    stopped; other settings start the transform's folder afresh."""
    run_dir = workdir / "runs" / name
    settings = {"base": str(base), "train": str(data["train"]), "overrides": TRANSFORMS[name]}
    settings |= {"conditions": conditions, "limit": limit, "round": ROUND_SETTINGS}
    settings_path = run_dir / "bench_settings.json"
    if run_dir.exists() and (
        not settings_path.is_file() or json.loads(settings_path.read_text()) != settings
    ):
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    settings_path.write_text(json.dumps(settings) + "\n", encoding="utf-8")
    workspace_settings = {"model": {"base": str(base)}, **ROUND_SETTINGS}
    (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(workspace_settings, sort_keys=False))
    batch, _ = batch_and_windows(run_dir, base, data["train"], BASELINE)
    _, own_windows = batch_and_windows(run_dir, base, data["train"], name)
    steps = math.ceil(own_windows / batch)  # one pass over the utterances
    overrides = overrides_of(name) + [f"train.batch_size={batch}", f"train.max_steps={steps}"]
    overrides += [f"train.eval_steps={steps + 1}"]
    spec = {
        "run_dir": str(run_dir),
        "base": str(base),
        "train": str(data["train"]),
        "valid": str(data["valid"]),
        "overrides": overrides,
    }
    spec_path = run_dir / "spec.json"
    spec_path.write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    click.echo(f"[bench] {name}: {own_windows} windows, {steps} steps of batch {batch}")
    workspace = Workspace.at(run_dir)
    seconds: dict[str, float] = {}
    if not (run_dir / "result.json").is_file():
        child = [sys.executable, __file__, "--child", str(spec_path)]
        seconds["train"] = run_logged(run_dir / "train.log", child, "train")
    if not workspace.merge_finished(1):
        seconds["merge"] = pefty(run_dir, "merge", ["merge", "--round", "1", "--force"])
    evaluate = ["evaluate", "--model", "merged/round1", "--backend", "torch", "--no-longform"]
    evaluate += ["-o", "model.context=full"] + (["--limit", str(limit)] if limit else [])
    started = time.perf_counter()
    for log, set_key, condition in (
        ("evaluate", EVAL_SET, None),
        *((f"evaluate-{c}", EVAL_SET, c) for c in conditions),
        ("evaluate-voice-shift", VOICE_SHIFT, None),
    ):
        if not workspace.eval_json(eval_label(data[set_key], limit, condition)).is_file():
            args = [*evaluate, "--set", str(data[set_key])]
            pefty(run_dir, log, args + (["--condition", condition] if condition else []))
    seconds["evaluate"] = time.perf_counter() - started
    timing = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))
    record = RoundRecord.read(run_dir / "adapters" / "round1")
    packing = (record.packing if record else None) or {}
    per_window = packing["utterances"] / packing["windows"] if packing else None
    per_step = timing["seconds_per_step"]
    return {
        "transform": name,
        "overrides": TRANSFORMS[name],
        "batch_size": batch,
        "steps": timing["steps"],
        "utterances_per_window": per_window,
        "utterances_per_s": batch * per_window / per_step if per_step and per_window else None,
        "augment": record.augment if record else None,
        "seconds_this_run": {k: round(v, 1) for k, v in seconds.items()},
        "counts": read_counts(run_dir, data, conditions),
    }


def eval_label(manifest: Path, limit: int, condition: str | None) -> EvalLabel:
    """Where `pefty evaluate` keeps merged/round1's evaluation of `manifest`."""
    size = len(read_manifest(manifest).utterances)
    first = limit if limit and limit < size else None
    return EvalLabel("round1", manifest.stem, first=first, condition=condition)


def read_counts(
    run_dir: Path, data: dict[str, Path], conditions: list[str]
) -> dict[str, dict[str, list[int]]]:
    """Per column (eval_clean, eval_clean@<condition>, voice shift): each utterance's character
    errors and reference characters, from the evaluations' TSVs."""
    columns = {column_name(c) for c in (None, *conditions)}
    counts = {}
    workspace = Workspace.at(run_dir)
    for label, _ in workspace.eval_labels():
        if label.language or label.backend:
            continue
        if label.set_name == data[VOICE_SHIFT].stem and label.condition is None:
            column = VOICE_SHIFT
        elif label.set_name == data[EVAL_SET].stem and label.column in columns:
            column = label.column
        else:
            continue
        with workspace.eval_tsv(label).open(encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        counts[column] = {
            "errors": [int(r["char_errors"]) for r in rows],
            "lengths": [int(r["reference_chars"]) for r in rows],
        }
    return counts


# -- the figures ---------------------------------------------------------------------------------


def worker_rates(names: list[str], seconds: float = 5.0, utterances: int = 20) -> dict[str, float]:
    """Audio seconds per wall second of each transform's chain in one thread (a loader worker),
    over utterances drawn as in training. Imported here, last: that script pins numpy to one
    thread for the processes started after it."""
    from bench_augment_transforms import measure, speech_like

    from pefty_whisper.config import load_config
    from pefty_whisper.data.augment import Augmenter

    audios = [speech_like(seconds, seed) for seed in range(8)]
    others = [speech_like(3.0, seed) for seed in range(100, 104)]
    rates = {}
    for name in names:
        augmenter = Augmenter(load_config(None, overrides_of(name)).augment)
        if not augmenter.active:
            continue

        def run(index: int, augmenter: Augmenter = augmenter) -> object:
            return augmenter(audios[index % len(audios)], index, others=others)

        rates[name] = measure(run, utterances, seconds)
    return rates


def column_name(condition: str | None) -> str:
    """eval_clean, or eval_clean@telephone: the rounds table's column (EvalLabel's naming)."""
    return EvalLabel("", EVAL_SET, condition=condition).column


def columns_of(conditions: list[str]) -> list[str]:
    return [column_name(None), *(column_name(c) for c in conditions), VOICE_SHIFT]


def figures_table(results: list[dict[str, Any]], conditions: list[str], rates: dict) -> str:
    """CER per column with its interval, throughput against the baseline."""
    base = next((r for r in results if r["transform"] == BASELINE), None)
    columns = columns_of(conditions)
    header = ["transform", "steps x batch", "utt/s", "vs none", "worker audio s/s"]
    header += [f"{c} CER" for c in columns]
    rows = []
    for r in results:
        cells = [r["transform"], f"{r['steps']} x {r['batch_size']}", fmt(r["utterances_per_s"])]
        cells.append(_ratio(r["utterances_per_s"], base and base["utterances_per_s"]))
        cells.append(f"{rates[r['transform']]:,.0f}" if r["transform"] in rates else "-")
        for column in columns:
            counts = r["counts"].get(column)
            rate = counts and bootstrap_rate(counts["errors"], counts["lengths"], seed=0)
            cells.append(rate.format() if rate else "-")
        rows.append(cells)
    return markdown_table(header, rows)


def paired_table(results: list[dict[str, Any]], conditions: list[str]) -> str:
    """Each transform against the baseline on the same utterances: the relative change of CER
    and the paired bootstrap difference in points with its verdict."""
    base = next((r for r in results if r["transform"] == BASELINE), None)
    if base is None:
        return "(no baseline run: --transforms without none)"
    columns = columns_of(conditions)
    rows = []
    for r in results:
        if r is base:
            continue
        cells = [r["transform"]]
        for column in columns:
            a, b = base["counts"].get(column), r["counts"].get(column)
            if not a or not b or a["lengths"] != b["lengths"]:
                cells.append("-")
                continue
            pair = paired_bootstrap(a["errors"], b["errors"], a["lengths"], seed=0)
            relative = 100 * pair.difference / pair.rate_a if pair.rate_a else float("nan")
            cells.append(f"{relative:+.0f}% ({pair.format()})")
        rows.append(cells)
    return markdown_table(["vs none", *columns], rows)


def _ratio(value: float | None, reference: float | None) -> str:
    return f"{value / reference:.2f}x" if value and reference else "n/a"


@click.command(epilog="Example: python scripts/bench_augment.py --transforms none,telephone")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("bench/augment"),
    show_default=True,
    help="Holds the base model, sample corpus, data/, the voice-shift set, runs/<transform>/.",
)
@click.option("--transforms", default=",".join(TRANSFORMS), show_default=True)
@click.option("--conditions", default=CONDITIONS, show_default=True)
@click.option(
    "--utterances",
    type=click.IntRange(min=4),
    default=SAMPLE_PARTS * 64,
    show_default=True,
    help="Training utterances, one pass, the same for every transform.",
)
@click.option(
    "--base",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="A Whisper checkpoint to start from (default: the offline whisper-base).",
)
@click.option("--limit", type=int, default=0, help="Evaluate the first N utterances only.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--child", type=click.Path(exists=True, path_type=Path), default=None, hidden=True)
def main(
    workdir: Path,
    transforms: str,
    conditions: str,
    utterances: int,
    base: Path | None,
    limit: int,
    out: Path | None,
    child: Path | None,
) -> None:
    """CER with intervals on eval_clean, each condition and the voice shift, per transform."""
    if child is not None:
        return run_child(child)
    names = [n.strip() for n in transforms.split(",") if n.strip()]
    unknown = [n for n in names if n not in TRANSFORMS]
    if unknown:
        raise click.BadParameter(
            f"unknown {', '.join(unknown)}; choose from {', '.join(TRANSFORMS)}",
            param_hint="--transforms",
        )
    chosen = [c.strip() for c in conditions.split(",") if c.strip()]
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        from pefty_whisper.data.conditions import parse_condition

        for condition in chosen:
            parse_condition(condition)  # a typo fails before an hour of rounds
        if base is None:
            from pefty_whisper.demo.base import ensure_offline_base

            click.echo("[bench] offline whisper-base (imported and checked on the first run only)")
            base = ensure_offline_base(workdir)
        base = base.resolve()
        data = prepare_data(workdir, utterances)
    except PeftyError as exc:
        raise click.ClickException(str(exc)) from None
    results = []
    for name in names:
        results.append(run_transform(name, workdir, base, data, chosen, limit))
        click.echo(figures_table(results[-1:], chosen, {}))
    rates = worker_rates(names)
    report = {
        "base": str(base),
        "train": str(data["train"]),
        "utterances": utterances,
        "limit": limit,
        "conditions": chosen,
        "worker_audio_s_per_s": rates,
        "versions": package_versions("torch", "transformers", "numpy", "soxr"),
        "results": results,
    }
    out = out or workdir / "bench_augment.json"
    out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    click.echo("\n" + figures_table(results, chosen, rates))
    click.echo("\n" + paired_table(results, chosen))
    click.echo(f"\nreport: {out}")


if __name__ == "__main__":
    main()
