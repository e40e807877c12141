"""One round: `pefty train`, `merge`, `evaluate`, `rounds` and `config`."""

from __future__ import annotations

from pathlib import Path

import click

from pefty_whisper.cli.group import load_workspace, main, workspace_options
from pefty_whisper.errors import PeftyError


@main.command()
@click.option(
    "--round", "round_index", type=int, required=True, help="Round number (1-5 for KsponSpeech)."
)
@click.option(
    "--base",
    default=None,
    help="Base model: a directory (merged/round1) or a hub id (openai/whisper-small). "
    "Default: model.base for round 1, merged/round{N-1} after.",
)
@click.option(
    "--train",
    "train_csv",
    multiple=True,
    metavar="NAME[:SHARE]",
    help="Training set (default: data/train_KsponSpeech_0N_train.csv). Repeat it to mix sets: "
    "--train A --train cv_ko_train:0.1 gives cv_ko_train a tenth of each epoch.",
)
@click.option(
    "--valid",
    "valid_csv",
    default=None,
    help="Validation CSV (default: data/train_KsponSpeech_0N_test.csv).",
)
@click.option(
    "--quant",
    type=click.Choice(["8bit", "4bit", "none"]),
    default=None,
    help="Base precision: 8bit (LLM.int8, default), 4bit (QLoRA nf4) or none (16/32-bit).",
)
@click.option(
    "--deepspeed",
    default=None,
    help="zero2 (default), zero2_offload, zero3 (16-bit or 4-bit base only), a JSON path, or none.",
)
@click.option(
    "--resume", is_flag=True, help="Continue an interrupted round from its last checkpoint."
)
@click.option(
    "--force", is_flag=True, help="Train again over a finished round (replaces its adapter)."
)
@workspace_options
def train(
    round_index: int,
    base: str | None,
    train_csv: tuple[str, ...],
    valid_csv: str | None,
    quant: str | None,
    deepspeed: str | None,
    resume: bool,
    force: bool,
    workdir: Path | None,
    config_path: Path | None,
    overrides: tuple[str, ...],
) -> None:
    """Train one round's LoRA adapter on a frozen 8-bit base -> adapters/roundN/.

    \b
    Validation CER (spaces removed) is computed every train.eval_steps with
    generation; the best adapter is kept. Checkpoints hold only the adapter and
    optimizer state; TensorBoard logs go to adapters/roundN/logs.

    \b
    Examples:
      pefty train --round 1 --base openai/whisper-small
      pefty train --round 2 -o train.max_steps=2000 -o train.batch_size=16
      pefty train --round 2 --resume                  # after a crash
      pefty train --round 2 --train train_KsponSpeech_02_train --train cv_ko_train:0.1
      deepspeed --num_gpus 2 --module pefty_whisper.cli train --round 2   # 2 GPUs
      torchrun --nproc_per_node 2 -m pefty_whisper.cli train --round 2
    """
    from pefty_whisper.ranks import is_main_process
    from pefty_whisper.train import default_round_plan, train_round

    workspace, config = load_workspace(
        workdir, config_path, overrides, {"model.quant": quant, "train.deepspeed": deepspeed}
    )
    plan = default_round_plan(
        workspace, config, round_index, base, train_csv, valid_csv, resume=resume, force=force
    )
    result = train_round(workspace, config, plan)
    if not is_main_process():
        return
    best = (
        "n/a" if result.best_cer is None else f"{result.best_cer:.2f}% at step {result.best_step}"
    )
    click.echo(
        f"{result.adapter_dir}: {result.steps} steps in {result.seconds / 60:.1f} min, "
        f"best validation CER {best}"
    )
    click.echo(
        f"trainable parameters {result.trainable_parameters:,d} of {result.total_parameters:,d}; "
        f"dropped before training: {result.train_filter.too_long_audio} over max duration, "
        f"{result.train_filter.too_long_labels} over max label tokens"
    )
    click.echo(f"next: pefty merge --round {round_index}")


@main.command()
@click.option(
    "--round",
    "round_index",
    type=int,
    default=None,
    help="Round to merge (default: the latest trained).",
)
@click.option(
    "--adapter",
    "adapter_dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="Adapter directory (default: adapters/roundN).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output directory (default: merged/roundN).",
)
@click.option(
    "--dtype",
    type=click.Choice(["float32", "float16", "bfloat16"]),
    default="float32",
    show_default=True,
    help="Precision of the saved weights (the merge itself is always fp32).",
)
@click.option("--force", is_flag=True, help="Replace an existing merged model.")
@workspace_options
def merge(
    round_index: int | None,
    adapter_dir: Path | None,
    out: Path | None,
    dtype: str,
    force: bool,
    workdir: Path | None,
    config_path: Path | None,
    overrides: tuple[str, ...],
) -> None:
    """Merge a round's adapter into a full-precision copy of its base -> merged/roundN/.

    \b
    The adapter's recorded base must still hold the same weights (sha256);
    the merged model's logits are checked against the adapter model's before
    anything is written, and the output appears only when complete.

    \b
    Examples:
      pefty merge                      # the latest round
      pefty merge --round 2 --dtype float16
    """
    from pefty_whisper.merge import merge_round

    workspace, config = load_workspace(workdir, config_path, overrides)
    report = merge_round(workspace, config, round_index, adapter_dir, out, dtype, force)
    click.echo(
        f"{report.out_dir} written ({report.dtype}, max logit diff "
        f"{report.max_abs_logit_diff:.1e} <= {report.tolerance:.0e}, {report.seconds:.0f} s)"
    )
    click.echo(f"next: pefty evaluate --set eval_clean --model {report.out_dir}")


@main.command()
@click.option(
    "--set",
    "set_name",
    default="eval_clean",
    show_default=True,
    help="data/NAME.csv, or any CSV path.",
)
@click.option(
    "--model",
    default=None,
    help="merged/roundN, a hub id, an adapter dir or an export (default: the latest merged round).",
)
@click.option(
    "--backend",
    type=click.Choice(["auto", "torch", "ct2", "onnx"]),
    default="auto",
    show_default=True,
    help="auto: the model directory's own (model.bin: ct2, *.onnx: onnx, else torch). ct2 on a "
    "checkpoint converts it to CTranslate2 (int8 on CPU, float16 on GPU) under exports/.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Only the first N utterances, for a quick look (kept apart from the full figure).",
)
@click.option("--batch-size", type=int, default=None, help="Default: decode.batch_size.")
@click.option(
    "--longform/--no-longform",
    default=True,
    show_default=True,
    help="Also decode the set stitched into few-minute recordings, and generated silence.",
)
@click.option(
    "--language",
    default=None,
    help="Decode in this language instead of model.language, for a set in another language "
    "(e.g. en): `pefty rounds` shows its WER, so forgetting across rounds is visible.",
)
@click.option(
    "--timestamps",
    is_flag=True,
    help="Decode each utterance with timestamps (the sequential long-form path) instead of "
    "<|notimestamps|>; kept apart as <set>@decode-timestamps.",
)
@click.option(
    "--condition",
    default=None,
    metavar="NAME",
    help="Score the set's audio under a condition, seeded per utterance: telephone, "
    "noise-10db, noise-babble-5db, speed-0.9, quiet-20db, loud-6db, or several joined with + "
    "(telephone+noise-10db). Kept apart as <set>@<condition>, its own column in `pefty rounds`.",
)
@workspace_options
def evaluate(
    set_name: str,
    model: str | None,
    backend: str,
    limit: int | None,
    batch_size: int | None,
    longform: bool,
    language: str | None,
    timestamps: bool,
    condition: str | None,
    workdir: Path | None,
    config_path: Path | None,
    overrides: tuple[str, ...],
) -> None:
    """CER (spaces removed) under KsponSpeech's scoring protocols, with 95% intervals.

    \b
    One decode is scored as kspon (spelling side, spaces removed: the primary
    CER), kspon-phonetic, dual (whichever side scores better), spaces (CER
    with spaces, ESPnet2's) and wer, each with a bootstrap 95% interval, and
    per subset (digits, Latin letters, duration buckets); see docs/scoring.md.
    Writes eval/<round>/<set>.json and a per-utterance .tsv (references,
    hypothesis, duration, each protocol's edit counts). Reference and
    hypothesis get the same normalization: NFC, lower-case, punctuation
    removed. With --longform (default) the set's utterances are also stitched
    into recordings of a few minutes and transcribed whole (long-form CER and
    the share of speech deleted), and 10 s of silence, noise and hum are
    decoded (goal: no text).

    \b
    Examples:
      pefty evaluate --set eval_clean                       # latest merged round
      pefty evaluate --set eval_other --model merged/round2 --backend ct2
      pefty evaluate --set my_test.csv --limit 50
      pefty evaluate --set english.csv --language en --no-longform   # forgetting
      pefty evaluate --set eval_clean --timestamps            # decoded by timestamps
      pefty evaluate --set eval_clean --condition telephone   # eval_clean@telephone
      torchrun --nproc_per_node 4 -m pefty_whisper.cli evaluate --set eval_clean  # 4 GPUs
    """
    from pefty_whisper.evaluate import evaluate_set
    from pefty_whisper.ranks import is_main_process

    workspace, config = load_workspace(
        workdir, config_path, overrides, {"decode.batch_size": batch_size}
    )
    with _EvalProgress() as progress:
        report = evaluate_set(
            workspace, config, set_name, model, backend, limit, None, progress.update,
            longform=longform, language=language, timestamps=timestamps, condition=condition,
        )  # fmt: skip
    if not is_main_process():
        return  # under a launcher rank 0 reports the joined figures
    click.echo(
        f"{report.label.folder} on {report.label.column} ({report.backend}, "
        f"{report.num_utterances} utterances): CER {report.cer:.2f}%  "
        f"CER with spaces {report.cer_with_spaces:.2f}%  WER {report.wer:.2f}%"
    )
    if report.figures is not None:
        figures = report.figures
        click.echo(
            "protocols (95% interval): "
            + "  ".join(f"{name} {figure.format()}" for name, figure in figures.protocols.items())
        )
        click.echo(
            "subsets (kspon): "
            + "  ".join(
                f"{name} {figure.format()} ({figure.units})"
                for name, figure in figures.subsets.items()
            )
        )
    click.echo(
        f"{report.utterances_per_second:.2f} utterances/s, real-time factor "
        f"{report.real_time_factor:.3f}; {report.json_path}, {report.tsv_path}"
    )
    if report.longform is not None:
        whole = report.longform
        spread = (
            f" ±{(whole.cer_high - whole.cer_low) / 2:.2f}"
            if whole.cer_low is not None and whole.cer_high is not None
            else ""
        )
        click.echo(
            f"long-form ({whole.recordings} recordings, {whole.audio_seconds:.0f} s, "
            f"{whole.method}): CER {whole.cer:.2f}%{spread}, "
            f"{whole.deleted:.1f}% of the speech deleted; "
            f"characters written on silence/noise/hum: "
            + "/".join(str(n) for n in (report.silence_chars or {}).values())
        )
    if report.label.condition and longform:
        click.echo("long-form and silence figures skipped: they are the clean set's")
    if report.label.variant:
        click.echo(
            f"kept apart from {report.label.folder}'s figure ({report.label.variant}): "
            "see pefty rounds"
        )
    for utterance_id, score in report.worst:
        if score.chars.errors == 0:
            break
        click.echo(f"  {utterance_id}: {score.chars.errors} errors")
        click.echo(f"    ref: {score.reference}")
        click.echo(f"    hyp: {score.hypothesis}")


class _EvalProgress:
    """A tqdm bar over utterances that shows the real-time factor as it goes."""

    def __enter__(self) -> _EvalProgress:
        import time

        from tqdm import tqdm

        from pefty_whisper.ranks import is_main_process

        # Under a launcher one bar (rank 0's share of the batches), not one per rank.
        disable = None if is_main_process() else True
        self.bar = tqdm(unit="utt", desc="decoding", disable=disable, dynamic_ncols=True)
        self.started, self.audio_seconds, self.clock = time.perf_counter(), 0.0, time.perf_counter
        return self

    def update(self, utterances: int, audio_seconds: float) -> None:
        self.audio_seconds += audio_seconds
        elapsed = self.clock() - self.started
        self.bar.update(utterances)
        self.bar.set_postfix(rtf=f"{elapsed / max(self.audio_seconds, 1e-9):.3f}")

    def __exit__(self, *exc: object) -> None:
        self.bar.close()


@main.command()
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also draw CER per round per set to this PNG.",
)
@workspace_options
def rounds(
    plot: Path | None, workdir: Path | None, config_path: Path | None, overrides: tuple[str, ...]
) -> None:
    """One row per round: base, training data, steps, best validation CER, CER per set.

    \b
    Example:
      pefty rounds --plot rounds.png
    """
    from pefty_whisper.evaluate.rounds_table import collect_rounds, format_rounds_table, plot_rounds
    from pefty_whisper.workspace import Workspace

    workspace = Workspace.at(workdir)
    rows = collect_rounds(workspace)
    if not rows:
        raise PeftyError(f"{workspace.root}: no rounds yet: run `pefty train --round 1` first")
    click.echo(format_rounds_table(rows))
    if plot is not None:
        click.echo(f"plot: {plot_rounds(rows, plot)}")


@main.command("config")
@workspace_options
def config_command(
    workdir: Path | None, config_path: Path | None, overrides: tuple[str, ...]
) -> None:
    """Every config key with its type, default and purpose; checks the workspace's config.

    \b
    Example:
      pefty config -o train.max_steps=2000      # fails, listing every bad key, if one is wrong
    """
    from pefty_whisper.config.reference import config_reference
    from pefty_whisper.workspace import Workspace

    Workspace.at(workdir).load_config(config_path, overrides)
    click.echo(config_reference(), nl=False)
