"""The rounds table: lineage and metrics of every round in a workspace, one row per round.

Round 0 is the zero-shot base (its evaluations live in eval/round0/); round N reads
adapters/roundN/round.json, merged/roundN/round.json and eval/roundN/*.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pefty_whisper.evaluate import read_eval_results
from pefty_whisper.workspace import BASE_LABEL, Workspace


@dataclass(frozen=True)
class RoundRow:
    round_index: int
    base: str = ""
    train_set: str = ""
    train_utterances: int | None = None
    steps: int | None = None
    best_valid_cer: float | None = None
    merged: bool = False
    eval_cer: dict[str, float] = field(default_factory=dict)  # set name -> CER (spaces removed)


def collect_rounds(workspace: Workspace) -> list[RoundRow]:
    """Every round that has an adapter, a merged model or an evaluation, in order."""
    evals = read_eval_results(workspace)
    indices = set(workspace.round_indices())
    indices |= {i for i in map(workspace.label_round, evals) if i is not None}
    return [_row(workspace, i, evals.get(workspace.round_label(i), {})) for i in sorted(indices)]


def _row(workspace: Workspace, index: int, evals: dict[str, dict]) -> RoundRow:
    adapter = workspace.round_record(index)
    eval_cer = {name: summary["cer"] for name, summary in sorted(evals.items())}
    merged = workspace.merge_finished(index)
    if adapter is None:
        zero_shot = workspace.round_label(index) == BASE_LABEL
        return RoundRow(index, "(zero-shot)" if zero_shot else "", merged=merged, eval_cer=eval_cer)
    return RoundRow(
        round_index=index,
        base=adapter.base,
        train_set=adapter.data.train.name,
        train_utterances=adapter.data.train.kept,
        steps=adapter.steps,
        best_valid_cer=adapter.best_validation.cer,
        merged=merged,
        eval_cer=eval_cer,
    )


def format_rounds_table(rows: list[RoundRow]) -> str:
    """A fixed-width table for the terminal (and the README)."""
    sets = sorted({name for row in rows for name in row.eval_cer})
    header = ["round", "base", "train set", "utts", "steps", "valid CER", "merged"]
    header += [f"{name} CER" for name in sets]
    lines = [header]
    for row in rows:
        cells = [
            str(row.round_index),
            row.base,
            row.train_set or "-",
            _number(row.train_utterances),
            _number(row.steps),
            _percent(row.best_valid_cer),
            "yes" if row.merged else "-",
        ]
        cells += [_percent(row.eval_cer.get(name)) for name in sets]
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def plot_rounds(rows: list[RoundRow], path: Path) -> Path:
    """CER per round, one line per evaluated set (matplotlib, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.0))
    for name in sorted({name for row in rows for name in row.eval_cer}):
        points = [(row.round_index, row.eval_cer[name]) for row in rows if name in row.eval_cer]
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
    valid = [
        (row.round_index, row.best_valid_cer) for row in rows if row.best_valid_cer is not None
    ]
    if valid:
        axes.plot(
            [p[0] for p in valid],
            [p[1] for p in valid],
            "--",
            marker="x",
            label="validation (best)",
        )
    axes.set_xlabel("round (0 = zero-shot base)")
    axes.set_ylabel("CER, spaces removed (%)")
    axes.set_xticks([row.round_index for row in rows])
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def _number(value: int | None) -> str:
    return "-" if value is None else f"{value:,d}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"
