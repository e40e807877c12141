"""The rounds table: lineage and metrics of every round in a workspace, one row per round.

Round 0 is the zero-shot base (its evaluations live in eval/round0/); round N reads
adapters/roundN/round.json, merged/roundN/round.json and eval/roundN/*.json. A set's figure is
the full evaluation at the workspace's context; where only a partial one, one at another
context or one through a conversion (eval/roundN-ct2/) exists, it is shown marked as such.

Each figure carries its bootstrap 95% interval (`9.9% ±1.2`), and each round is marked against
its base round (the row before where its base is not in the table) on the same utterances by
a paired bootstrap (compare.py): better, worse or no clear difference, with the difference.
A set evaluated under a condition (eval_clean@telephone) is a column of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pefty_whisper.evaluate.compare import RoundMark, base_round, mark_round
from pefty_whisper.evaluate.figures import DecodeCounts
from pefty_whisper.workspace import (
    BASE_LABEL,
    EvalLabel,
    EvalRecord,
    RateFigure,
    RoundRecord,
    Workspace,
)


@dataclass(frozen=True)
class RoundRow:
    round_index: int
    base: str = ""
    train_set: str = ""
    train_utterances: int | None = None
    steps: int | None = None
    best_valid_cer: float | None = None
    merged: bool = False
    # set name (or set@condition) -> CER (spaces removed)
    eval_cer: dict[str, float] = field(default_factory=dict)
    # set name -> how a figure shown in place of the round's own was decoded ("first 2 of 4")
    eval_notes: dict[str, str] = field(default_factory=dict)
    # set name -> (long-form CER, % of speech deleted), from the same evaluation as eval_cer
    longform: dict[str, tuple[float, float]] = field(default_factory=dict)
    silence_chars: int | None = None  # characters written on silence, noise and hum (goal 0)
    # (set name, language) -> WER for sets decoded in another language than model.language
    # (`pefty evaluate --language en`, eval/roundN/<set>@lang-en.json): what rounds forget
    other_wer: dict[tuple[str, str], float] = field(default_factory=dict)
    # The intervals of eval_cer's and other_wer's figures, where the records hold them.
    eval_interval: dict[str, RateFigure] = field(default_factory=dict)
    other_interval: dict[tuple[str, str], RateFigure] = field(default_factory=dict)
    # set name -> this round against its base round on the same utterances (kspon CER)
    marks: dict[str, RoundMark] = field(default_factory=dict)
    # set name -> the evaluation shown in eval_cer (for the marks, which read its TSV)
    eval_labels: dict[str, EvalLabel] = field(default_factory=dict)
    # Pseudo-labelled training sets (`pefty label`): "pl by merged/round1 (sha256:...)"
    pseudo_labels: tuple[str, ...] = ()


def collect_rounds(workspace: Workspace) -> list[RoundRow]:
    """Every round that has an adapter, a merged model or an evaluation, in order."""
    evals: dict[int, dict[str, dict[EvalLabel, EvalRecord]]] = {}
    others: dict[int, dict[tuple[str, str], EvalRecord]] = {}
    for label, record in sorted(
        workspace.eval_records().items(), key=lambda item: (item[0].folder, item[0].stem)
    ):
        index = label.round
        if index is None:
            continue
        if label.language and not label.condition:
            wer = others.setdefault(index, {})
            key = (label.set_name, label.language)
            # The round's own backend's figure, as for eval_cer; a conversion's otherwise.
            wer[key] = wer.get(key, record) if label.backend else record
            continue
        # A set under a condition (eval_clean@telephone) is a column of its own, never the set's.
        column = evals.setdefault(index, {}).setdefault(label.column, {})
        column[replace(label, condition=None)] = record
    indices = set(workspace.round_indices()) | set(evals) | set(others)
    rows = [_row(workspace, i, evals.get(i, {}), others.get(i, {})) for i in sorted(indices)]
    return _marked(workspace, rows)


def _marked(workspace: Workspace, rows: list[RoundRow]) -> list[RoundRow]:
    """Each row with its marks against its base round's row (else the row before it) on every
    set both show; the TSVs are read once each."""
    by_index = {row.round_index: row for row in rows}
    cache: dict[Path, DecodeCounts] = {}
    marked = []
    for position, row in enumerate(rows):
        base = base_round(workspace, row.round_index)
        if base not in by_index or base == row.round_index:
            base = rows[position - 1].round_index if position else None
        if base is None:
            marked.append(row)
            continue
        against = by_index[base]
        marks = {
            name: mark_round(workspace, label, against.eval_labels[name], base, cache=cache)
            for name, label in row.eval_labels.items()
            if name in against.eval_labels
        }
        marked.append(replace(row, marks=marks))
    return marked


def _pick(variants: dict[EvalLabel, EvalRecord]) -> tuple[EvalLabel, EvalRecord, str]:
    """The round's own record if there is one; else the latest other one, and what it was."""
    own = [(label, r) for label, r in variants.items() if not label.variant and not label.backend]
    if own:
        return own[0][0], own[0][1], ""
    label, record = max(variants.items(), key=lambda item: item[1].evaluated or "")
    notes = [label.backend] if label.backend else []
    if label.context:
        notes.append(f"context {record.context}")
    if label.timestamps:
        notes.append("timestamps")
    if record.partial:
        notes.append(f"first {record.num_utterances} of {record.set_size}")
    return label, record, ", ".join(notes) or label.stem


def _row(
    workspace: Workspace,
    index: int,
    evals: dict[str, dict[EvalLabel, EvalRecord]],
    other: dict[tuple[str, str], EvalRecord],
) -> RoundRow:
    adapter = workspace.round_record(index)
    picked = {name: _pick(variants) for name, variants in sorted(evals.items())}
    figures: dict[str, Any] = {
        "other_wer": {key: record.wer for key, record in other.items()},
        "other_interval": {
            key: record.protocols["wer"]
            for key, record in other.items()
            if "wer" in record.protocols
        },
        "eval_cer": {name: record.cer for name, (_, record, _) in picked.items()},
        "eval_interval": {
            name: record.protocols["kspon"]
            for name, (_, record, _) in picked.items()
            if "kspon" in record.protocols
        },
        "eval_labels": {name: label for name, (label, _, _) in picked.items()},
        "eval_notes": {name: note for name, (_, _, note) in picked.items() if note},
        "longform": {
            name: (record.longform["cer"], record.longform["deleted"])
            for name, (_, record, _) in picked.items()
            if record.longform
        },
        "silence_chars": next(
            (
                sum(record.silence_chars.values())
                for _, record, _ in picked.values()
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
        pseudo_labels=_pseudo_labels(workspace, adapter),
        **figures,
    )


def _pseudo_labels(workspace: Workspace, adapter: RoundRecord) -> tuple[str, ...]:
    """Each pseudo-labelled set of a round with its teacher (workspace-relative) and filters."""
    found = []
    for data in (adapter.data.train, *adapter.data.mixed):
        if data.teacher is None:
            continue
        teacher = Path(data.teacher.model)
        if teacher.is_relative_to(workspace.root):
            teacher = teacher.relative_to(workspace.root)
        filters = ", ".join(
            f"{key} {value}" for key, value in (data.label_filters or {}).items()
            if key in ("min_avg_logprob", "max_compression_ratio", "max_no_speech_prob",
                       "max_disagreement_cer") and value is not None
        )  # fmt: skip
        found.append(
            f"{data.name} by {teacher.as_posix()} ({data.teacher.weights_hash[:15]}); {filters}"
        )
    return tuple(found)


def format_rounds_table(rows: list[RoundRow]) -> str:
    """A fixed-width table for the terminal (and the README)."""
    sets = sorted({name for row in rows for name in row.eval_cer})
    header = ["round", "base", "train set", "utts", "steps", "valid CER", "merged"]
    header += [f"{name} CER" for name in sets]
    marked = [name for name in sets if any(name in row.marks for row in rows)]
    header += [f"{name} vs base" for name in marked]
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
        cells += [row.marks[name].format() if name in row.marks else "-" for name in marked]
        cells += [_longform(row.longform.get(name)) for name in whole]
        cells += [_number(row.silence_chars)] if silence else []
        cells += [_figure(row.other_wer.get(key), row.other_interval.get(key)) for key in other]
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    table = "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )
    for row in rows:
        for line in row.pseudo_labels:
            table += f"\nround {row.round_index} pseudo-labels: {line}"
    if any(row.eval_notes for row in rows):
        table += (
            "\n[...]: not the round's own figure (only a partial evaluation, another context "
            "or a conversion exists); `pefty evaluate` on the whole set writes it"
        )
    if marked:
        table += (
            "\nvs N: CER minus round N's on the same utterances, ± its 95% interval (paired "
            "bootstrap); better/worse only where the interval excludes 0. "
            "`pefty compare roundN roundM --set SET` for every protocol"
        )
    return table


def _longform(figures: tuple[float, float] | None) -> str:
    return "-" if figures is None else f"{figures[0]:.1f}% ({figures[1]:.1f}%)"


def _figure(value: float | None, interval: RateFigure | None) -> str:
    """`9.9% ±1.2` where the record holds the interval, `9.9%` where it predates them."""
    return interval.format() if interval is not None else _percent(value)


def _noted(row: RoundRow, name: str) -> str:
    text = _figure(row.eval_cer.get(name), row.eval_interval.get(name))
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
