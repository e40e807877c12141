"""After a long round, does any backend or long-form path drop speech the VAD heard? (issue 21)

A round of many packed steps on one part of the sample corpus (150 steps of batch 2 on part 3's
64 utterances, learning rate 5e-4: about 20 passes, the round in which transformers' long-form
decoding of the merged model deleted 16% of the speech while faster-whisper's deleted 1.9%).
The round is trained, merged and exported (CTranslate2 int8, ONNX) with the real `pefty`
commands; then the evaluation set, stitched into recordings of up to 3 minutes exactly as
`pefty evaluate` stitches it, is decoded whole by every backend and path:

  torch sequential   transformers' long-form generate (+ VAD), recovery off and on, and off
                     with transformers' own fallback schedule (the issue's path)
  torch chunked      VAD chunks without timestamps (recovery does not apply)
  ct2 sequential     faster-whisper's transcribe on the int8 export (+ VAD), recovery off and on
  onnx chunked       VAD chunks on the ONNX export (--no-onnx skips its export)

and each gets long-form CER (spaces removed) and the shares of reference characters deleted and
inserted. "Recovery" is `decode.recover` (longform.recover_speech): VAD speech no segment covers,
decoded again on its own. The round is reused on a second run (--retrain trains it again).

Run it on a quiet machine; on 2 CPU cores the 150 steps take about 1.5 hours:

    python scripts/bench_longform_round.py
    python scripts/bench_longform_round.py --steps 2 --eval-limit 8 --no-onnx    # a smoke run
    python scripts/bench_longform_round.py --train-only    # the round alone, decoded later
    python scripts/bench_longform_round.py --base demo/merged/round2     # the issue's round 3
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import click
import yaml

try:
    import pefty_whisper  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import machine_info, markdown_table, pefty_logged  # noqa: E402

from pefty_whisper.config import DataSection, load_config  # noqa: E402
from pefty_whisper.data.manifest import read_manifest  # noqa: E402
from pefty_whisper.errors import PeftyError  # noqa: E402
from pefty_whisper.workspace import CONFIG_FILE, Workspace  # noqa: E402

ROUND = 1  # the round's index in the bench workspace (its data part is --part)


@dataclass(frozen=True)
class DecodePath:
    """One decode path of the table: which model, backend and long-form settings."""

    backend: str  # torch, ct2, onnx
    longform: str  # sequential or chunked
    recover: bool
    # transformers' own fallback schedule, which keeps the 1.0 sample of a window failing at
    # every temperature (torch_backend._fallback_schedule says why pefty ends on greedy)
    upstream_fallback: bool = False


PATHS = (
    DecodePath("torch", "sequential", False, upstream_fallback=True),
    DecodePath("torch", "sequential", False),
    DecodePath("torch", "sequential", True),
    DecodePath("torch", "chunked", True),
    DecodePath("ct2", "sequential", False),
    DecodePath("ct2", "sequential", True),
    DecodePath("onnx", "chunked", True),
)


def pefty(workdir: Path, name: str, args: list[str]) -> float:
    """One `pefty` command in the bench workspace; its seconds. Output goes to logs/<name>.log."""
    return pefty_logged(workdir, workdir / "logs" / f"{name}.log", args)


def write_config(workdir: Path, base: Path, steps: int, learning_rate: float, batch: int) -> None:
    """The demo's round settings (demo/pipeline.py), with the long round's steps and rate, no
    validation during the run (the long-form figures afterwards are the point)."""
    from pefty_whisper.demo.pipeline import demo_config

    settings = demo_config(str(base))
    settings["train"].update(
        batch_size=batch,
        learning_rate=learning_rate,
        max_steps=steps,
        eval_steps=steps + 1,
        logging_steps=max(1, steps // 15),
    )
    (workdir / CONFIG_FILE).write_text(yaml.safe_dump(settings, sort_keys=False))


def train_round(workdir: Path, base: Path, part: int, retrain: bool, onnx: bool) -> dict:
    """Train, merge and export the round unless its exports are there; the seconds taken."""
    workspace = Workspace.at(workdir)
    seconds: dict[str, float] = {}
    merged = workspace.merged_dir(ROUND)
    if retrain or not (merged / "config.json").is_file():
        train = workspace.round_manifest(part, "train")
        valid = workspace.round_manifest(part, "test")
        seconds["train"] = pefty(
            workdir,
            "train",
            ["train", "--round", str(ROUND), "--base", str(base), "--train", str(train)]
            + ["--valid", str(valid), "--force"],
        )
        seconds["merge"] = pefty(workdir, "merge", ["merge", "--round", str(ROUND), "--force"])
        retrain = True
    for fmt, quantization in [("ct2", "int8")] + ([("onnx", "float32")] if onnx else []):
        out = exports(workdir)[fmt]
        if retrain or not out.is_dir():
            args = ["export", "--model", str(merged), "--format", fmt, "--out", str(out)]
            args += ["--force"] + (["--quantization", quantization] if fmt == "ct2" else [])
            seconds[f"export_{fmt}"] = pefty(workdir, f"export-{fmt}", args)
    return {k: round(v, 1) for k, v in seconds.items()}


def exports(workdir: Path) -> dict[str, Path]:
    return {
        "torch": Workspace.at(workdir).merged_dir(ROUND),
        "ct2": workdir / "exports" / "round1-ct2-int8",
        "onnx": workdir / "exports" / "round1-onnx",
    }


def decode_paths(workdir: Path, eval_set: str, limit: int | None, onnx: bool) -> list[dict]:
    """Long-form CER and deleted share of every path, on the set stitched as evaluate does."""
    from pefty_whisper.evaluate.longform import score_longform, stitch_recordings
    from pefty_whisper.inference import Transcriber, TranscriberOptions

    workspace = Workspace.at(workdir)
    config = load_config(workdir / CONFIG_FILE)
    utterances = read_manifest(workspace.manifest_path(eval_set)).utterances[:limit]
    recordings = stitch_recordings(utterances, seed=config.train.seed)
    click.echo(
        f"[bench] {len(utterances)} {eval_set} utterances stitched into {len(recordings)} "
        f"recording(s), {sum(len(r.audio) for r in recordings) / 16000:.0f} s"
    )
    rows = []
    for path in PATHS:
        if path.backend == "onnx" and not onnx:
            continue
        defaults = TranscriberOptions.from_config(config, path.backend)  # type: ignore[arg-type]
        options = replace(defaults, longform=path.longform, recover=path.recover)
        transcriber = Transcriber(exports(workdir)[path.backend], options)
        seed_sampling(config.train.seed)  # the fallback's samples, the same on every run
        with upstream_fallback(path.upstream_fallback):
            score = score_longform(transcriber, recordings)
        row = {
            "backend": path.backend,
            "recover": path.recover,
            "upstream_fallback": path.upstream_fallback,
            **score.as_dict(),
        }
        rows.append(row)
        click.echo(markdown_table(*table([row])).splitlines()[-1])
    return rows


def seed_sampling(seed: int) -> None:
    import ctranslate2
    import torch

    torch.manual_seed(seed)
    ctranslate2.set_random_seed(seed)


@contextmanager
def upstream_fallback(on: bool) -> Iterator[None]:
    """transformers' fallback schedule as it comes (the last temperature's output wins), for
    the row that shows what pefty's schedule changes."""
    from pefty_whisper.inference import torch_backend

    ours = torch_backend._fallback_schedule
    if on:
        torch_backend._fallback_schedule = lambda temps: temps
    try:
        yield
    finally:
        torch_backend._fallback_schedule = ours


def table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    header = ["backend", "path", "recovery", "long-form CER", "deleted", "inserted", "RTF"]
    cells = [
        [
            r["backend"],
            r["method"] + (" [transformers' fallback]" if r.get("upstream_fallback") else ""),
            ("on" if r["recover"] else "off") if r["method"].startswith("sequential") else "n/a",
            f"{r['cer']:.1f}%",
            f"{r['deleted']:.1f}%",
            f"{r['inserted']:.1f}%",
            f"{r['seconds'] / max(r['audio_seconds'], 1e-9):.3f}",
        ]
        for r in rows
    ]
    return header, cells


@click.command(epilog="Example: python scripts/bench_longform_round.py --steps 2 --eval-limit 8")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("bench/longform_round"),
    show_default=True,
    help="The bench workspace: base model, sample corpus, data/, the round and its exports.",
)
@click.option(
    "--base",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Model the round starts from (default: whisper-base from the offline packages).",
)
@click.option("--part", type=click.IntRange(1, 5), default=3, show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=150, show_default=True)
@click.option("--learning-rate", type=float, default=5e-4, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--eval-set", default="eval_clean", show_default=True)
@click.option(
    "--eval-limit",
    type=click.IntRange(min=1),
    default=None,
    help="First N utterances of the set (default: all).",
)
@click.option("--onnx/--no-onnx", default=True, show_default=True, help="Export and decode ONNX.")
@click.option("--retrain", is_flag=True, help="Train the round again even if it exists.")
@click.option(
    "--train-only", is_flag=True, help="Train, merge and export the round; decode nothing."
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None)
def main(
    workdir: Path,
    base: Path | None,
    part: int,
    steps: int,
    learning_rate: float,
    batch_size: int,
    eval_set: str,
    eval_limit: int | None,
    onnx: bool,
    retrain: bool,
    train_only: bool,
    out: Path | None,
) -> None:
    """Long-form CER and deleted speech of every backend and path after a long round."""
    from pefty_whisper.data.prepare import prepare_kspon
    from pefty_whisper.demo.base import ensure_offline_base
    from pefty_whisper.demo.pipeline import ensure_sample_corpus

    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        if base is None:
            click.echo("[bench] offline whisper-base (imported and checked on the first run only)")
            base = ensure_offline_base(workdir)
        base = base.resolve()
        workspace = Workspace.at(workdir)
        if not workspace.round_manifest(part, "train").is_file():
            prepare_kspon(ensure_sample_corpus(workdir), workspace.data_dir, DataSection())
        write_config(workdir, base, steps, learning_rate, batch_size)
        click.echo(f"[bench] round: {steps} steps of batch {batch_size} on part {part}")
        seconds = train_round(workdir, base, part, retrain, onnx)
        if train_only:
            click.echo(f"[bench] round ready in {workdir} ({seconds or 'reused'})")
            return
        rows = decode_paths(workdir, eval_set, eval_limit, onnx)
    except PeftyError as exc:
        raise click.ClickException(str(exc)) from None
    record = Workspace.at(workdir).round_record(ROUND)
    report = {
        "base": str(base),
        "part": part,
        "steps": steps,
        "learning_rate": learning_rate,
        "batch_size": batch_size,
        "packing": record.packing if record else None,
        "eval_set": eval_set,
        "eval_limit": eval_limit,
        "seconds": seconds,
        "machine": machine_info("transformers", "ctranslate2", "faster-whisper", "onnxruntime"),
        "results": rows,
    }
    out = out or workdir / "bench_longform_round.json"
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    click.echo("\n" + markdown_table(*table(rows)))
    click.echo(f"\nreport: {out}")


if __name__ == "__main__":
    main()
