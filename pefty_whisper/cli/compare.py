"""`pefty compare`: two evaluations on the same utterances, protocol by protocol."""

from __future__ import annotations

from pathlib import Path

import click

from pefty_whisper.cli.group import load_workspace, main, workspace_options


@main.command()
@click.argument("a")
@click.argument("b")
@click.option(
    "--set",
    "set_name",
    default="eval_clean",
    show_default=True,
    help="The set both were evaluated on: data/NAME.csv, or any CSV path.",
)
@click.option(
    "--resamples",
    type=click.IntRange(min=100),
    default=1000,
    show_default=True,
    help="Bootstrap resamples of the utterances.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="The bootstrap's seed.")
@workspace_options
def compare(
    a: str,
    b: str,
    set_name: str,
    resamples: int,
    seed: int,
    workdir: Path | None,
    config_path: Path | None,
    overrides: tuple[str, ...],
) -> None:
    """Is B better than A? A paired bootstrap on the utterances both decoded.

    \b
    A and B are models as --model takes them (merged/round2, an export, the
    base) or eval/ labels (round2, round2-ct2, round2@context-auto,
    round2@decode-timestamps): two rounds, two backends or two decoding
    modes. Each protocol shows both figures with their 95% intervals and B - A
    with the interval of the difference: better, worse, or no clear difference
    (the interval holds 0). Both must have been evaluated on the same
    utterances; `pefty evaluate` writes what is missing.

    \b
    Examples:
      pefty compare merged/round1 merged/round2 --set eval_clean
      pefty compare round2 round2-ct2 --set eval_other        # torch vs CTranslate2
      pefty compare round2 round2@decode-timestamps           # with and without timestamps
    """
    from pefty_whisper.evaluate.compare import compare_evaluations

    workspace, config = load_workspace(workdir, config_path, overrides)
    result = compare_evaluations(workspace, config, a, b, set_name, resamples=resamples, seed=seed)
    click.echo(
        f"{result.set_name}: A = {result.a.name}, B = {result.b.name}, {result.utterances:,d} "
        f"utterances in both; paired bootstrap, {resamples} resamples, seed {seed}"
    )
    rows = [("protocol", "A", "B", "B - A (95% interval)")]
    for row in result.protocols:
        rows.append((row.protocol, row.a.format(), row.b.format(), row.paired.format()))
    widths = [max(len(cells[i]) for cells in rows) for i in range(len(rows[0]))]
    for cells in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
    primary = result.primary.paired
    click.echo(f"B against A (kspon CER): {primary.verdict}")
