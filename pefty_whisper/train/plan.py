"""What one `pefty train` call resolved: which round, on which base, with which data sets."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pefty_whisper.config import Config
from pefty_whisper.data.mixing import MixEntry, TrainSet, check_distinct
from pefty_whisper.errors import ConfigError
from pefty_whisper.workspace import Workspace

__all__ = ["RoundPlan", "default_round_plan", "warn_on_a_worse_base"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoundPlan:
    """What one `pefty train` call resolved: which round, on which base, with which data."""

    round_index: int
    base: str  # as the user gave it: a workspace path or a hub id
    train_csv: Path  # the round's own training set
    valid_csv: Path
    resume: bool = False
    force: bool = False
    train_share: float | None = None  # its share of each epoch when sets are mixed in
    mixed: tuple[TrainSet, ...] = ()  # sets mixed in: `--train B:0.1`, data.mix

    @property
    def train_sets(self) -> tuple[TrainSet, ...]:
        """Every training set of the round, its own first."""
        return (TrainSet(self.train_csv, self.train_share), *self.mixed)


def default_round_plan(
    workspace: Workspace,
    config: Config,
    round_index: int,
    base: str | None = None,
    train_csv: str | Sequence[str] | None = None,
    valid_csv: str | None = None,
    resume: bool = False,
    force: bool = False,
) -> RoundPlan:
    """Round 1 trains the configured base; round N the merged model of round N-1.

    `train_csv` is one or more NAME[:share] (the first is the round's own set, default part N);
    the config's `data.mix` sets are added after them.
    """
    if round_index < 1:
        raise ConfigError(f"--round must be 1 or more; got {round_index}")
    if base is None:
        base = config.model.base if round_index == 1 else workspace.merged_ref(round_index - 1)
    given = [train_csv] if isinstance(train_csv, str) else list(train_csv or ())
    entries = [MixEntry.parse(text) for text in (*given, *config.data.mix)]
    sets = [TrainSet(workspace.manifest_path(e.name), e.share) for e in entries]
    if not given:
        sets.insert(0, TrainSet(workspace.round_manifest(round_index, "train")))
    check_distinct(sets)
    if not resume:
        warn_on_a_worse_base(workspace, round_index, base)
    return RoundPlan(
        round_index=round_index,
        base=base,
        train_csv=sets[0].path,
        train_share=sets[0].share,
        mixed=tuple(sets[1:]),
        valid_csv=workspace.manifest_path(valid_csv)
        if valid_csv
        else workspace.round_manifest(round_index, "test"),
        resume=resume,
        force=force,
    )


def warn_on_a_worse_base(workspace: Workspace, round_index: int, base: str) -> bool:
    """Warn when `base` is a merged round clearly worse than its own base (paired bootstrap on
    the same utterances, evaluate/compare.py): on a set in the round's language by CER, or on
    an other-language set (`@lang-xx`) by WER. The warning names the `pefty train` that trains
    on the earlier base instead; training goes on (the user may know why). True if it warned."""
    # Imported here: evaluate's package imports merge, which imports train.
    from pefty_whisper.evaluate.compare import regressions

    base_dir = (workspace.root / base).resolve()
    merged = [k for k in workspace.finished_rounds("merged") if workspace.merged_dir(k) == base_dir]
    if not merged:
        return False
    worse = regressions(workspace, merged[0])
    if not worse:
        return False
    earlier = worse[0].base_round
    record = workspace.merge_record(merged[0])
    earlier_base = workspace.merged_ref(earlier) if earlier > 0 or record is None else record.base
    command = ["pefty", "train", "--round", str(round_index), "--base", earlier_base]
    logger.warning(
        "%s is clearly worse than its base (round %d): %s. To train round %d on the earlier "
        "base instead: %s",
        base,
        earlier,
        "; ".join(r.describe() for r in worse),
        round_index,
        " ".join(command),
    )
    return True
