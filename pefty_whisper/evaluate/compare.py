"""Did it help? Two evaluations compared on the same utterances, by a paired bootstrap.

Two figures side by side mislead on small sets: two runs of one round on the demo's 40
sentences differ by 1.5-2 points. So two evaluations (two rounds, two backends, two decoding
modes) are compared by reading both per-utterance TSVs (figures.py), checking that they hold
the same utterances, and drawing one paired bootstrap per protocol (intervals.py): better,
worse or no clear difference, with the interval of the difference. `pefty rounds` marks each
round against its base this way, `pefty compare` any two evaluations, and `pefty train` warns
before training on a round that was clearly worse than its own base.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pefty_whisper.config import Config
from pefty_whisper.errors import DataError, PeftyError
from pefty_whisper.evaluate.figures import SUBSET_PROTOCOL, DecodeCounts, read_counts
from pefty_whisper.intervals import RESAMPLES, PairedComparison, RateInterval, bootstrap_rate
from pefty_whisper.intervals import paired_bootstrap as _paired
from pefty_whisper.metrics import Protocol, ProtocolCounts
from pefty_whisper.workspace import BASE_LABEL, EvalLabel, EvalRecord, Workspace

logger = logging.getLogger(__name__)


class UnpairedError(DataError):
    """Two evaluations that cannot be paired: not the same utterances, or not the same texts."""


@dataclass(frozen=True)
class Evaluation:
    """One evaluation found in the workspace: its label, summary and per-utterance TSV."""

    label: EvalLabel
    record: EvalRecord
    tsv: Path

    @property
    def name(self) -> str:
        """`round2`, `round2-ct2@context-auto`: as `pefty compare` takes it back."""
        return self.label.reference

    @classmethod
    def at(cls, workspace: Workspace, label: EvalLabel) -> Evaluation | None:
        path = workspace.eval_json(label)
        if not path.is_file():
            return None
        return cls(label, EvalRecord.read(path), workspace.eval_tsv(label))


@dataclass(frozen=True)
class ProtocolComparison:
    """One protocol: each side's figure with its own interval, and the paired B - A."""

    protocol: Protocol
    a: RateInterval
    b: RateInterval
    paired: PairedComparison


@dataclass(frozen=True)
class Comparison:
    """B against A on one set, protocol by protocol (the protocols both TSVs hold)."""

    a: Evaluation
    b: Evaluation
    set_name: str
    utterances: int
    protocols: tuple[ProtocolComparison, ...]

    @property
    def primary(self) -> ProtocolComparison:
        return next(p for p in self.protocols if p.protocol == SUBSET_PROTOCOL)


def paired_counts(
    a: DecodeCounts,
    b: DecodeCounts,
    protocols: tuple[Protocol, ...] | None = None,
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> dict[Protocol, PairedComparison]:
    """B - A per protocol on the same utterances (B's rows put in A's order by id).

    Two decodes of different utterances (another manifest, a partial set against a whole
    one) or of the same ids with other reference texts (a re-prepared manifest) cannot be
    paired: an UnpairedError names both files.
    """
    b = aligned(a, b)
    common = [p for p in a.counts if p in b.counts and (protocols is None or p in protocols)]
    results = {}
    for protocol in common:
        ca, cb = a.counts[protocol], b.counts[protocol]
        results[protocol] = _paired(
            ca.errors,
            cb.errors,
            ca.reference_lengths,
            # dual picks a side per hypothesis, so each system has its own reference lengths
            reference_lengths_b=cb.reference_lengths,
            resamples=resamples,
            seed=seed,
        )
    return results


def aligned(a: DecodeCounts, b: DecodeCounts) -> DecodeCounts:
    """B with its rows in A's order; a DataError when they are not the same utterances."""
    names = f"{a.path or 'A'} and {b.path or 'B'}"
    if set(a.ids) != set(b.ids) or len(a.ids) != len(b.ids) or len(set(a.ids)) != len(a.ids):
        common = len(set(a.ids) & set(b.ids))
        raise UnpairedError(
            f"{names} were decoded on different utterances ({a.num_utterances} and "
            f"{b.num_utterances}, {common} in common): evaluate both on the whole set "
            "(without --limit) to compare them"
        )
    if a.ids != b.ids:
        position = {utterance: index for index, utterance in enumerate(b.ids)}
        order = np.array([position[utterance] for utterance in a.ids], dtype=np.int64)
        b = DecodeCounts(
            ids=a.ids,
            references=tuple(b.references[i] for i in order),
            durations=b.durations[order],
            counts={
                p: ProtocolCounts(p, c.errors[order], c.reference_lengths[order])
                for p, c in b.counts.items()
            },
            path=b.path,
        )
    differing = sum(x != y for x, y in zip(a.references, b.references, strict=True))
    if differing:
        raise UnpairedError(
            f"{names}: {differing} of {a.num_utterances} utterances have other reference "
            "texts (the manifest was prepared again?): evaluate both on the same manifest"
        )
    return b


def find_evaluation(
    workspace: Workspace, config: Config, reference: str, set_name: str
) -> Evaluation:
    """An evaluation named as `pefty compare` takes it: an eval/ folder label (`round2`,
    `round2-ct2`, `round2@context-auto`) or a model as `--model` takes it (merged/round2, an
    export, the base). A missing one is an error that names the `pefty evaluate` to run."""
    set_label = Path(set_name).stem
    label = _as_label(workspace, reference, set_label)
    if label is not None:
        found = Evaluation.at(workspace, label)
        if found is not None:
            return found
        raise DataError(
            f"{workspace.eval_json(label)}: no evaluation of {reference} on {set_label}: run "
            f"`{evaluate_command(workspace, config, label, set_name)}` first"
        )
    try:
        target = workspace.model_target(config, reference)
    except PeftyError as exc:
        raise DataError(
            f"{reference!r} is neither an evaluation under eval/ nor a model ({exc})"
        ) from None
    label = EvalLabel(model=target.label, set_name=set_label)
    found = Evaluation.at(workspace, label)
    if found is None:
        raise DataError(
            f"{workspace.eval_json(label)}: no evaluation of {reference} on {set_label}: run "
            f"`pefty evaluate --set {set_name} --model {reference}` first"
        )
    return found


def _as_label(workspace: Workspace, reference: str, set_label: str) -> EvalLabel | None:
    """The label `reference` names when it names one (an eval/ folder, a variant after `@`, or
    roundN / roundN-ct2 not yet evaluated); None for a model path."""
    try:
        label = EvalLabel.from_reference(reference, set_label)
    except PeftyError:
        return None
    evaluated = workspace.eval_json(label).parent.is_dir()
    return label if evaluated or label.variant or label.round is not None else None


def evaluate_command(workspace: Workspace, config: Config, label: EvalLabel, set_name: str) -> str:
    """The `pefty evaluate` that writes the evaluation `label` (its model, backend, variant)."""
    index = label.round
    if label.model == BASE_LABEL:
        model = config.model.base
    elif index is not None:
        model = workspace.merged_ref(index)
    else:
        adapter = label.model.removesuffix("-adapter")
        index = workspace.label_round(adapter)
        model = (
            workspace.adapter_dir(index).relative_to(workspace.root).as_posix()
            if index is not None
            else label.model
        )
    words = ["pefty", "evaluate", "--set", set_name, "--model", model]
    words += ["--backend", label.backend] if label.backend else []
    words += ["--language", label.language] if label.language else []
    words += ["-o", f"model.context={label.context}"] if label.context else []
    words += ["--limit", str(label.first)] if label.first is not None else []
    words += ["--timestamps"] if label.timestamps else []
    return " ".join(words)


def compare_evaluations(
    workspace: Workspace,
    config: Config,
    a: str,
    b: str,
    set_name: str,
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Comparison:
    """B against A on one set: each protocol's figures and the paired difference."""
    first = find_evaluation(workspace, config, a, set_name)
    second = find_evaluation(workspace, config, b, set_name)
    counts_a, counts_b = read_counts(first.tsv), read_counts(second.tsv)
    paired = paired_counts(counts_a, counts_b, resamples=resamples, seed=seed)
    counts_b = aligned(counts_a, counts_b)
    rows = []
    for protocol, comparison in paired.items():
        ca, cb = counts_a.counts[protocol], counts_b.counts[protocol]
        rows.append(
            ProtocolComparison(
                protocol,
                bootstrap_rate(ca.errors, ca.reference_lengths, resamples=resamples, seed=seed),
                bootstrap_rate(cb.errors, cb.reference_lengths, resamples=resamples, seed=seed),
                comparison,
            )
        )
    return Comparison(first, second, Path(set_name).stem, counts_a.num_utterances, tuple(rows))


# -- rounds against their base ---------------------------------------------------------------


def base_round(workspace: Workspace, index: int) -> int | None:
    """The round whose model round `index` was trained on: K for a base merged/roundK of the
    workspace, 0 (the zero-shot row) for any other base; None without a record."""
    record = workspace.merge_record(index) or workspace.round_record(index)
    if record is None:
        return None
    found = merged_round_of(workspace, record.base)
    return found if found is not None and found != index else 0


def merged_round_of(workspace: Workspace, model: str) -> int | None:
    """K when `model` (as a base or --model is written) is the workspace's merged/roundK.

    A relative path is taken in the workspace, as `pefty train --base` takes it, so a moved
    or copied workspace still finds its rounds (a record's base_dir is where it was)."""
    path = Path(model)
    path = (path if path.is_absolute() else workspace.root / path).resolve()
    for candidate in workspace.finished_rounds("merged"):
        if workspace.merged_dir(candidate).resolve() == path:
            return candidate
    return None


@dataclass(frozen=True)
class RoundMark:
    """A round's evaluation on one set against the same evaluation of another round."""

    against: int  # the round compared with (its base, else the row before)
    set_name: str
    comparison: PairedComparison | None  # None: the two cannot be paired
    note: str = ""  # why not, when they cannot

    def format(self, digits: int = 1) -> str:
        """`vs 1: -1.8 ±0.8 better`, for a table cell."""
        if self.comparison is None:
            return f"vs {self.against}: {self.note}"
        c = self.comparison
        return (
            f"vs {self.against}: {c.difference:+.{digits}f} ±{c.half_width:.{digits}f} {c.verdict}"
        )


def mark_round(
    workspace: Workspace,
    label: EvalLabel,
    against: EvalLabel,
    against_round: int,
    protocol: Protocol = SUBSET_PROTOCOL,
    cache: dict[Path, DecodeCounts] | None = None,
) -> RoundMark:
    """`label`'s evaluation against `against`'s on the same utterances, under `protocol`."""
    cache = {} if cache is None else cache
    try:
        counts = [_cached(workspace.eval_tsv(x), cache) for x in (against, label)]
        paired = paired_counts(*counts, protocols=(protocol,))
    except UnpairedError as exc:
        logger.debug("no mark for %s against %s: %s", label, against, exc)
        return RoundMark(against_round, label.set_name, None, "different utterances")
    except DataError as exc:  # an evaluation written before its TSV existed, or a damaged one
        logger.debug("no mark for %s against %s: %s", label, against, exc)
        return RoundMark(against_round, label.set_name, None, "no per-utterance TSV")
    if protocol not in paired:
        return RoundMark(against_round, label.set_name, None, f"no {protocol} counts")
    return RoundMark(against_round, label.set_name, paired[protocol])


def _cached(path: Path, cache: dict[Path, DecodeCounts]) -> DecodeCounts:
    if path not in cache:
        cache[path] = read_counts(path)
    return cache[path]


@dataclass(frozen=True)
class Regression:
    """A round clearly worse than its base on one set (the other-language sets by WER)."""

    round: int
    base_round: int
    set_name: str
    language: str | None
    mark: RoundMark

    def describe(self) -> str:
        c = self.mark.comparison
        assert c is not None
        metric = f"WER ({self.language})" if self.language else "CER"
        return (
            f"{self.set_name} {metric} {c.rate_b:.1f}% against {c.rate_a:.1f}%, "
            f"{c.difference:+.1f} points [{c.low:+.1f}, {c.high:+.1f}]"
        )


def regressions(workspace: Workspace, index: int) -> list[Regression]:
    """Where round `index` is clearly worse than its base round: on every set both were
    evaluated on in full by their own backend, in the round's language by CER (kspon) and in
    other languages (`@lang-xx`) by WER."""
    base = base_round(workspace, index)
    if base is None:
        return []
    own = workspace.round_label(index)
    found: list[Regression] = []
    cache: dict[Path, DecodeCounts] = {}
    for label, _ in workspace.eval_labels():
        if label.model != own or label.backend or label.first is not None:
            continue
        if label.context or label.timestamps:
            continue  # a decoding mode kept apart: not the round's figure
        against = EvalLabel(
            model=workspace.round_label(base), set_name=label.set_name, language=label.language
        )
        if not workspace.eval_json(against).is_file():
            continue
        protocol: Protocol = "wer" if label.language else SUBSET_PROTOCOL
        mark = mark_round(workspace, label, against, base, protocol, cache)
        if mark.comparison is not None and mark.comparison.verdict == "worse":
            found.append(Regression(index, base, label.set_name, label.language, mark))
    return found
