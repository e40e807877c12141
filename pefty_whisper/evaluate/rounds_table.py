"""The rounds table: lineage and metrics of every round in a workspace, one row per round.

Round 0 is the zero-shot base (its evaluations live in eval/round0/); round N reads
adapters/roundN/round.json, merged/roundN/round.json and eval/roundN/*.json. A set's figure is
the full evaluation at the workspace's context; where only a partial one, one at another
context or one through a conversion (eval/roundN-ct2/) exists, it is shown marked as such.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pefty_whisper.workspace import BASE_LABEL, EvalLabel, EvalRecord, Workspace


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
    # set name -> how a figure shown in place of the round's own was decoded ("first 2 of 4")
    eval_notes: dict[str, str] = field(default_factory=dict)
    # set name -> (long-form CER, % of speech deleted), from the same evaluation as eval_cer
    longform: dict[str, tuple[float, float]] = field(default_factory=dict)
    silence_chars: int | None = None  # characters written on silence, noise and hum (goal 0)
    # (set name, language) -> WER for sets decoded in another language than model.language
    # (`pefty evaluate --language en`, eval/roundN/<set>@lang-en.json): what rounds forget
    other_wer: dict[tuple[str, str], float] = field(default_factory=dict)


def collect_rounds(workspace: Workspace) -> list[RoundRow]:
    """Every round that has an adapter, a merged model or an evaluation, in order."""
    evals: dict[int, dict[str, dict[EvalLabel, EvalRecord]]] = {}
    others: dict[int, dict[tuple[str, str], float]] = {}
    for label, record in sorted(
        workspace.eval_records().items(), key=lambda item: (item[0].folder, item[0].stem)
    ):
        index = label.round
        if index is None:
            continue
        if label.language:
            wer = others.setdefault(index, {})
            key = (label.set_name, label.language)
            # The round's own backend's figure, as for eval_cer; a conversion's otherwise.
            wer[key] = wer.get(key, record.wer) if label.backend else record.wer
            continue
        evals.setdefault(index, {}).setdefault(label.set_name, {})[label] = record
    indices = set(workspace.round_indices()) | set(evals) | set(others)
    return [_row(workspace, i, evals.get(i, {}), others.get(i, {})) for i in sorted(indices)]


def _pick(variants: dict[EvalLabel, EvalRecord]) -> tuple[EvalRecord, str]:
    """The round's own record if there is one; else the latest other one, and what it was."""
    own = [r for label, r in variants.items() if not label.variant and not label.backend]
    if own:
        return own[0], ""
    label, record = max(variants.items(), key=lambda item: item[1].evaluated or "")
    notes = [label.backend] if label.backend else []
    if label.context:
        notes.append(f"context {record.context}")
    if record.partial:
        notes.append(f"first {record.num_utterances} of {record.set_size}")
    return record, ", ".join(notes) or label.stem


def _row(
    workspace: Workspace,
    index: int,
    evals: dict[str, dict[EvalLabel, EvalRecord]],
    other: dict[tuple[str, str], float],
) -> RoundRow:
    adapter = workspace.round_record(index)
    picked = {name: _pick(variants) for name, variants in sorted(evals.items())}
    figures: dict[str, Any] = {
        "other_wer": other,
        "eval_cer": {name: record.cer for name, (record, _) in picked.items()},
        "eval_notes": {name: note for name, (_, note) in picked.items() if note},
        "longform": {
            name: (record.longform["cer"], record.longform["deleted"])
            for name, (record, _) in picked.items()
            if record.longform
        },
        "silence_chars": next(
            (
                sum(record.silence_chars.values())
                for record, _ in picked.values()
                if record.silence_chars is not None
            ),
            None,
        ),
    }
    merged = workspace.merge_finished(index)
    if adapter is None:
        zero_shot = workspace.round_label(index) == BASE_LABEL
        base = "(zero-shot)" if zero_shot else ""
        return RoundRow(index, base, merged=merged, **figures)
    return RoundRow(
        round_index=index,
        base=adapter.base,
        train_set=adapter.data.train_label,  # every set and its share, when a round mixes
        train_utterances=adapter.data.train_examples,
        steps=adapter.steps,
        best_valid_cer=adapter.best_validation.cer,
        merged=merged,
        **figures,
    )


def format_rounds_table(rows: list[RoundRow]) -> str:
    """A fixed-width table for the terminal (and the README)."""
    sets = sorted({name for row in rows for name in row.eval_cer})
    header = ["round", "base", "train set", "utts", "steps", "valid CER", "merged"]
    header += [f"{name} CER" for name in sets]
    whole = sorted({name for row in rows for name in row.longform})
    header += [f"{name} long-form (deleted)" for name in whole]
    silence = any(row.silence_chars is not None for row in rows)
    header += ["silence chars"] if silence else []
    other = sorted({key for row in rows for key in row.other_wer})
    header += [f"{name} WER ({language})" for name, language in other]
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
        cells += [_noted(row, name) for name in sets]
        cells += [_longform(row.longform.get(name)) for name in whole]
        cells += [_number(row.silence_chars)] if silence else []
        cells += [_percent(row.other_wer.get(key)) for key in other]
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    table = "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )
    if any(row.eval_notes for row in rows):
        table += (
            "\n[...]: not the round's own figure (only a partial evaluation, another context "
            "or a conversion exists); `pefty evaluate` on the whole set writes it"
        )
    return table


def _longform(figures: tuple[float, float] | None) -> str:
    return "-" if figures is None else f"{figures[0]:.1f}% ({figures[1]:.1f}%)"


def _noted(row: RoundRow, name: str) -> str:
    text = _percent(row.eval_cer.get(name))
    note = row.eval_notes.get(name)
    return f"{text} [{note}]" if note else text


def plot_rounds(rows: list[RoundRow], path: Path) -> Path:
    """CER per round, one line per evaluated set and its long-form figure, and WER per set in
    another language (matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.0))
    for name in sorted({name for row in rows for name in row.eval_cer}):
        points = [(row.round_index, row.eval_cer[name]) for row in rows if name in row.eval_cer]
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
    for name in sorted({name for row in rows for name in row.longform}):
        points = [(row.round_index, row.longform[name][0]) for row in rows if name in row.longform]
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        axes.plot(xs, ys, ":", marker="s", label=f"{name} long-form")
    valid = [
        (row.round_index, row.best_valid_cer) for row in rows if row.best_valid_cer is not None
    ]
    for key in sorted({key for row in rows for key in row.other_wer}):
        points = [(row.round_index, row.other_wer[key]) for row in rows if key in row.other_wer]
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        axes.plot(xs, ys, "-.", marker="^", label=f"{key[0]} WER ({key[1]})")
    if valid:
        axes.plot(
            [p[0] for p in valid],
            [p[1] for p in valid],
            "--",
            marker="x",
            label="validation (best)",
        )
    axes.set_xlabel("round (0 = zero-shot base)")
    axes.set_ylabel("CER, spaces removed (%)\nWER for sets in other languages")
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
