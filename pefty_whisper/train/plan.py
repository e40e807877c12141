"""What one `pefty train` call resolved: which round, on which base, with which data sets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pefty_whisper.config import Config
from pefty_whisper.data.mixing import MixEntry, TrainSet, check_distinct
from pefty_whisper.errors import ConfigError
from pefty_whisper.workspace import Workspace

__all__ = ["RoundPlan", "default_round_plan"]


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
