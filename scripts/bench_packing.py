"""Which training format makes the better model for real recordings: the quality half of the
packed-training benchmark (the throughput half is scripts/bench_train.py), with intervals.

Every format trains one round of LoRA on real whisper-base (8-bit, ZeRO-2, the defaults) from
the same base, on the same 320 sample-corpus utterances in corpus order, one pass, at the same
learning rate: single utterances in 40 steps of batch 8, packed windows in batches that carry
about as many utterances (about 7-10 per step, 31-43 steps). Each format trains once per seed
(`--seeds 3`: train.seed 0, 1, 2), since a CPU run is not reproducible and one run of a round
differs from the next by 1.5-2 points on 40 sentences. Then each merged model is evaluated on
eval_clean with `pefty evaluate`, every figure with its bootstrap 95% interval (EvalRecord):

  - torch at 30 s: per-utterance CER decoded without timestamps (`<|notimestamps|>`) and with
    them (`--timestamps`: the sequential long-form path, as packed windows train), long-form
    CER and deleted speech on the set stitched into recordings of up to 3 minutes (two of
    about 110 s for eval_clean's 40 sentences), and characters written on silence, noise, hum;
  - the same through a CTranslate2 int8 export (faster-whisper for the long-form and silence).

The report pools each format's seeds (per-utterance counts summed over seeds, resampled over
utterances) and compares every format with the first on the same utterances by a paired
bootstrap (evaluate/compare.py): better, worse or no clear difference, with the interval of the
difference, beside the spread between seeds.

Formats (name: what differs from the defaults):
  full          one utterance per example, padded to 30 s (the Hugging Face blog recipe)
  auto          one utterance per example, padded to the batch (model.context=auto)
  packed-s30    data.packing, single_share 0.3 (30% of utterances single, padded to 30 s)
  packed-u30    data.packing, single_share 0, untimed_share 0.3 (30% of windows untimed)
  packed-s10u30 data.packing, single_share 0.1, untimed_share 0.3
  packed-t100   data.packing, single_share 0, untimed_share 0 (every window with timestamps)

Run it on a quiet machine; on 2 CPU cores one round and its four evaluations take about 10
minutes, so the default (3 formats x 3 seeds) takes about 1.5 hours. Each pefty command's log is
in <workdir>/runs/<format>/seed<N>/<command>.log.

    python scripts/bench_packing.py                      # full, packed-u30, packed-s10u30 x 3
    python scripts/bench_packing.py --formats full,packed-s30 --seeds 5
    python scripts/bench_packing.py --seeds 1 --max-steps 2 --eval-limit 4 --utterances 16 \\
        --formats full,packed-u30        # a smoke run of every code path (minutes, no figures)
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
import yaml

try:
    import pefty_whisper  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import (  # noqa: E402
    SAMPLE_PARTS,
    UTTERANCES_PER_STEP,
    difference_text,
    packed_batch,
    paired_figures,
    pefty_logged,
    sample_corpus_train,
)
from _common import markdown_table as common_table  # noqa: E402

from pefty_whisper.data.manifest import read_manifest  # noqa: E402
from pefty_whisper.errors import PeftyError  # noqa: E402
from pefty_whisper.evaluate.compare import aligned  # noqa: E402
from pefty_whisper.evaluate.figures import SUBSET_PROTOCOL, DecodeCounts, read_counts  # noqa: E402
from pefty_whisper.files import package_versions  # noqa: E402
from pefty_whisper.intervals import bootstrap_rate  # noqa: E402
from pefty_whisper.metrics import ProtocolCounts  # noqa: E402
from pefty_whisper.workspace import CONFIG_FILE, EvalRecord, Workspace  # noqa: E402

EVAL_SET = "eval_clean"


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
    train = sample_corpus_train(workdir, utterances)
    workspace = Workspace.at(workdir)
    return train, workspace.round_manifest(1, "test"), workspace.manifest_path(EVAL_SET)


def batch_for(fmt: Format, run_dir: Path, base: Path, train: Path) -> tuple[int, int]:
    """(batch size, windows in one pass): a packed batch carries about UTTERANCES_PER_STEP
    utterances, from the plan the round itself will make."""
    if not fmt.packed:
        return UTTERANCES_PER_STEP, len(read_manifest(train).utterances)
    overrides = [f"{k}={str(v).lower()}" for k, v in fmt.overrides.items()]
    return packed_batch(run_dir / CONFIG_FILE, overrides, base, train)


def pefty(run_dir: Path, name: str, args: list[str]) -> float:
    """One `pefty` command in the run's workspace; its seconds. Output goes to <name>.log."""
    return pefty_logged(run_dir, run_dir / f"{name}.log", args)


def run_format(
    fmt: Format,
    seed: int,
    workdir: Path,
    base: Path,
    data: tuple[Path, Path, Path],
    settings: RunSettings,
) -> dict:
    """One round of `fmt` trained with train.seed `seed`, merged, and evaluated in every mode."""
    train, valid, eval_set = data
    run_dir = workdir / "runs" / fmt.name / f"seed{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    config = {"model": {"base": str(base)}, **ROUND_SETTINGS}
    (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
    batch, examples = batch_for(fmt, run_dir, base, train)
    steps = math.ceil(examples / batch)
    if settings.max_steps is not None:
        steps = min(steps, settings.max_steps)
    overrides = [f"{k}={str(v).lower()}" for k, v in fmt.overrides.items()]
    overrides += [f"train.batch_size={batch}", f"train.max_steps={steps}"]
    overrides += [f"train.eval_steps={steps + 1}", f"train.seed={seed}"]
    options = [arg for value in overrides for arg in ("-o", value)]
    click.echo(
        f"[bench] {fmt.name} seed {seed}: {examples} examples, {steps} steps of batch {batch}"
    )
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
    evaluate += ["--limit", str(settings.eval_limit)] if settings.eval_limit else []
    for backend in settings.backends:
        for timestamps in settings.decodes:
            mode = decode_mode(backend, timestamps)
            extra = ["--timestamps", "--no-longform"] if timestamps else []
            name = f"evaluate-{mode.replace('+', '-')}"
            seconds[name] = pefty(run_dir, name, [*evaluate, "--backend", backend, *extra])
    record = Workspace.at(run_dir).round_record(1)
    return {
        "format": fmt.name,
        "seed": seed,
        "summary": fmt.summary,
        "overrides": fmt.overrides,
        "batch_size": batch,
        "steps": steps,
        "packing": record.packing if record else None,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "run_dir": str(run_dir),
        "evaluations": read_evaluations(run_dir),
    }


@dataclass(frozen=True)
class RunSettings:
    backends: tuple[str, ...]  # torch, ct2
    decodes: tuple[bool, ...]  # without timestamps, with them
    max_steps: int | None  # a smoke run's cap on the steps of one pass
    eval_limit: int | None  # a smoke run's first N utterances of the set


def decode_mode(backend: str, timestamps: bool) -> str:
    """`torch`, `torch+timestamps`, `ct2`, `ct2+timestamps`: a report's key for one decode."""
    return f"{backend}+timestamps" if timestamps else backend


def read_evaluations(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Each decode mode's EvalRecord and per-utterance TSV of one run, by mode."""
    workspace = Workspace.at(run_dir)
    found = {}
    for label, path in workspace.eval_labels():
        if label.set_name != EVAL_SET:
            continue
        mode = decode_mode(label.backend or "torch", label.timestamps)
        found[mode] = {**EvalRecord.read(path).to_dict(), "tsv": str(workspace.eval_tsv(label))}
    return found


def pooled_counts(runs: list[dict[str, Any]], mode: str) -> DecodeCounts | None:
    """One format's per-utterance counts summed over its seeds (each seed's rows put in the
    first's order), so a bootstrap over utterances covers every seed's decode."""
    tables = [
        read_counts(Path(r["evaluations"][mode]["tsv"])) for r in runs if mode in r["evaluations"]
    ]
    if not tables:
        return None
    first = tables[0]
    counts = {}
    for protocol in (SUBSET_PROTOCOL, "dual"):
        if all(protocol in t.counts for t in tables):
            rows = [aligned(first, t).counts[protocol] for t in tables]
            counts[protocol] = ProtocolCounts(
                protocol,
                np.sum([r.errors for r in rows], axis=0),
                np.sum([r.reference_lengths for r in rows], axis=0),
            )
    return DecodeCounts(first.ids, first.references, first.durations, counts, first.path)


def summarize(results: list[dict[str, Any]], modes: list[str]) -> list[dict[str, Any]]:
    """Per format and decode mode: each seed's CER with its interval, the seeds pooled with
    theirs, the long-form and silence figures, and the paired difference from the first format
    (and, for a decode with timestamps, from the same format without them)."""
    by_format: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        by_format.setdefault(result["format"], []).append(result)
    names = list(by_format)
    pooled = {(n, m): pooled_counts(by_format[n], m) for n in names for m in modes}
    rows = []
    for name in names:
        runs = by_format[name]
        for mode in modes:
            counts = pooled[(name, mode)]
            if counts is None:
                continue
            records = [r["evaluations"][mode] for r in runs if mode in r["evaluations"]]
            kspon = counts.counts[SUBSET_PROTOCOL]
            interval = bootstrap_rate(kspon.errors, kspon.reference_lengths)
            wholes = [r["longform"] for r in records if r.get("longform")]
            row = {
                "format": name,
                "mode": mode,
                "seeds": [r["seed"] for r in runs if mode in r["evaluations"]],
                "per_seed": [_figure(r) for r in records],
                "pooled": {"rate": interval.value, "low": interval.low, "high": interval.high},
                "dual": _pooled_rate(counts, "dual"),
                "longform": [w["cer"] for w in wholes],
                "deleted": [w["deleted"] for w in wholes],
                "silence_chars": [sum((r.get("silence_chars") or {}).values()) for r in records],
                "utterances": counts.num_utterances,
                "steps": runs[0]["steps"],
                "batch_size": runs[0]["batch_size"],
            }
            baseline = pooled[(names[0], mode)]
            if name != names[0] and baseline is not None:
                row["vs_first"] = paired_figures(baseline, counts)
            untimed = pooled[(name, mode.removesuffix("+timestamps"))]
            if mode.endswith("+timestamps") and untimed is not None:
                row["vs_untimed"] = paired_figures(untimed, counts)
            rows.append(row)
    return rows


def _figure(record: dict[str, Any]) -> dict[str, float]:
    """A record's kspon CER with its interval (the interval is absent from old records)."""
    kspon = (record.get("protocols") or {}).get(SUBSET_PROTOCOL)
    if kspon is None:
        return {"rate": record["cer"], "low": record["cer"], "high": record["cer"]}
    return {"rate": kspon["rate"], "low": kspon["low"], "high": kspon["high"]}


def _pooled_rate(counts: DecodeCounts, protocol: str) -> float | None:
    column = counts.counts.get(protocol)
    return None if column is None else column.rate


def _seeds(values: list[float], digits: int = 1, suffix: str = "%") -> str:
    return " / ".join(f"{v:.{digits}f}{suffix}" for v in values) or "-"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    header = [
        "format",
        "decode",
        "steps x batch",
        "CER per seed (±95%)",
        "pooled CER [95%]",
        "vs the first format",
        "vs without timestamps",
        "long-form CER per seed",
        "deleted",
        "silence chars",
    ]
    cells = []
    for row in rows:
        per_seed = " / ".join(
            f"{f['rate']:.1f}% ±{(f['high'] - f['low']) / 2:.1f}" for f in row["per_seed"]
        )
        pooled = row["pooled"]
        cells.append(
            [
                row["format"],
                row["mode"],
                f"{row['steps']} x {row['batch_size']}",
                per_seed,
                f"{pooled['rate']:.1f}% [{pooled['low']:.1f}, {pooled['high']:.1f}]",
                difference_text(row.get("vs_first")),
                difference_text(row.get("vs_untimed")),
                _seeds(row["longform"]),
                _seeds(row["deleted"]),
                " / ".join(str(n) for n in row["silence_chars"]),
            ]
        )
    return common_table(header, cells)


@click.command(epilog="Example: python scripts/bench_packing.py --formats full,packed-u30")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("bench/packing"),
    show_default=True,
    help="Holds the base model, sample corpus, data/ and one runs/<format>/seed<N>/ workspace "
    "each.",
)
@click.option(
    "--formats",
    default="full,packed-u30,packed-s10u30",
    show_default=True,
    help=f"Comma-separated training formats, the first the baseline ({', '.join(FORMATS)}).",
)
@click.option(
    "--seeds",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Rounds per format, with train.seed 0..N-1.",
)
@click.option(
    "--utterances",
    type=click.IntRange(min=UTTERANCES_PER_STEP),
    default=SAMPLE_PARTS * 64,
    show_default=True,
    help="Training utterances, one pass, the same for every format.",
)
@click.option(
    "--backends",
    default="torch,ct2",
    show_default=True,
    help="Decode each model with these backends (torch, ct2).",
)
@click.option(
    "--timestamps",
    type=click.Choice(["both", "without", "with"]),
    default="both",
    show_default=True,
    help="Decode each utterance without timestamps, with them (--timestamps), or both.",
)
@click.option(
    "--max-steps",
    type=click.IntRange(min=1),
    default=None,
    help="Cap the steps of a round (a smoke run; the figures are then not the benchmark's).",
)
@click.option(
    "--eval-limit",
    type=click.IntRange(min=1),
    default=None,
    help="Evaluate only the first N utterances (a smoke run).",
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None)
def main(
    workdir: Path,
    formats: str,
    seeds: int,
    utterances: int,
    backends: str,
    timestamps: str,
    max_steps: int | None,
    eval_limit: int | None,
    out: Path | None,
) -> None:
    """Per-utterance (with and without timestamps), long-form and silence figures of models
    trained in each format, over several seeds, with intervals and paired comparisons."""
    names = [n.strip() for n in formats.split(",") if n.strip()]
    unknown = [n for n in names if n not in FORMATS]
    if unknown:
        raise click.BadParameter(
            f"unknown {', '.join(unknown)}; choose from {', '.join(FORMATS)}",
            param_hint="--formats",
        )
    chosen = tuple(b.strip() for b in backends.split(",") if b.strip())
    if not chosen or set(chosen) - {"torch", "ct2"}:
        raise click.BadParameter("torch, ct2 or both", param_hint="--backends")
    decodes = {"both": (False, True), "without": (False,), "with": (True,)}[timestamps]
    settings = RunSettings(chosen, decodes, max_steps, eval_limit)
    modes = [decode_mode(b, t) for b in chosen for t in decodes]
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
        for seed in range(seeds):
            results.append(run_format(FORMATS[name], seed, workdir, base, data, settings))
            click.echo(markdown_table(summarize(results[-1:], modes)))
    try:
        rows = summarize(results, modes)
    except PeftyError as exc:  # e.g. two runs decoded on different utterances
        raise click.ClickException(str(exc)) from None
    report = {
        "base": str(base),
        "train": str(data[0]),
        "utterances": utterances,
        "seeds": seeds,
        "settings": {"max_steps": max_steps, "eval_limit": eval_limit, "modes": modes},
        "versions": package_versions("torch", "transformers", "ctranslate2", "faster-whisper"),
        "summary": rows,
        "results": results,
    }
    out = out or workdir / "bench_packing.json"
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    click.echo("\n" + markdown_table(rows))
    click.echo(f"\nreport: {out}")


if __name__ == "__main__":
    main()
