"""Experiment tracking: a round's run in MLflow or Weights & Biases (`train.report_to`), and the
evaluation figures logged to that same run.

The Trainer's own integrations log the training (`report_to`: losses, learning rate, validation
CER, its arguments). pefty adds the round's lineage as the run's parameters (round, base and its
weights hash, the data sets with their shares), keeps the run's id in round.json (copied into
the merged round's record), and `pefty evaluate` logs its figures to that run, so one run holds a
round from its first step to its eval_clean CER.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pefty_whisper.config import REPORTERS
from pefty_whisper.errors import ConfigError
from pefty_whisper.workspace import (
    EvalLabel,
    EvalRecord,
    ExportRecord,
    MergeRecord,
    RoundData,
    RoundRecord,
)

if TYPE_CHECKING:
    from pefty_whisper.workspace import ModelTarget

__all__ = [
    "REPORTERS",
    "TRACK_EXTRA_HINT",
    "lineage_callback",
    "log_evaluation",
    "require_trackers",
    "round_params",
    "trainer_report_to",
]

logger = logging.getLogger(__name__)

TRACKERS = ("mlflow", "wandb")  # the ones a round's run id is kept for
TRACK_EXTRA_HINT = "pip install 'pefty-whisper[track]'"
PROJECT = "pefty-whisper"  # MLflow's experiment and W&B's project, unless the environment names one


def trainer_report_to(report_to: tuple[str, ...]) -> list[str]:
    """`train.report_to` (checked when the config loaded) as Seq2SeqTrainingArguments takes it;
    none (or an empty list) turns every integration off."""
    return [name for name in report_to if name != "none"] or ["none"]


def require_trackers(report_to: tuple[str, ...]) -> None:
    """One line naming the missing package before a model loads, not a RuntimeError from the
    Trainer after it."""
    missing = [name for name in report_to if name in TRACKERS and not _installed(name)]
    if missing:
        raise ConfigError(
            f"train.report_to={','.join(report_to)} needs {', '.join(missing)}: {TRACK_EXTRA_HINT}"
        )


def prepare_environment(report_to: tuple[str, ...], logs_dir: Path, root: Path) -> None:
    """The integrations read their settings from the environment only: TensorBoard's folder
    (the round's logs/), and a project name for MLflow and W&B unless one is set. Without
    MLFLOW_TRACKING_URI, MLflow 3 would open sqlite:///mlflow.db, which mlflow-skinny cannot:
    the workspace's mlruns/ file store instead (MLflow 3.17 wants MLFLOW_ALLOW_FILE_STORE)."""
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(logs_dir)
    if "mlflow" in report_to:
        os.environ.setdefault("MLFLOW_EXPERIMENT_NAME", PROJECT)
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            os.environ["MLFLOW_TRACKING_URI"] = f"file:{Path(root).resolve() / 'mlruns'}"
        if os.environ["MLFLOW_TRACKING_URI"].startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    if "wandb" in report_to:
        os.environ.setdefault("WANDB_PROJECT", PROJECT)


def round_params(
    round_index: int, base: str, base_hash: str, data: RoundData, settings: dict[str, Any]
) -> dict[str, str]:
    """The round's lineage as a run's parameters: flat `pefty.*` keys with text values (what
    MLflow stores; W&B takes them as its config)."""
    sets = [data.train, *data.mixed]
    # A set without a share is the round's own, seen whole every epoch.
    shares = ", ".join(f"{d.name}:{1.0 if d.share is None else d.share:g}" for d in sets)
    params = {
        "round": round_index,
        "base": base,
        "base_hash": base_hash,
        "train_sets": shares,
        "train_rows": sum(d.rows for d in sets),
        "train_kept": sum(d.kept for d in sets),
        "validation_set": data.validation.name,
        "validation_kept": data.validation.kept,
        **settings,
    }
    return {f"pefty.{key}": str(value) for key, value in params.items()}


def lineage_callback(params: dict[str, str]) -> Any:
    """A TrainerCallback that puts the lineage on the runs the integrations started and keeps
    their ids (`.runs`, for round.json); it runs after them (user callbacks come last)."""
    return _lineage_class()(params)


@functools.cache
def _lineage_class() -> type:
    from transformers import TrainerCallback

    class LineageCallback(TrainerCallback):
        def __init__(self, params: dict[str, str]) -> None:
            self.params = params
            self.runs: dict[str, dict[str, str]] = {}

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if not state.is_world_process_zero:
                return
            if "mlflow" in args.report_to and _installed("mlflow"):
                self._mlflow()
            if "wandb" in args.report_to and _installed("wandb"):
                self._wandb()

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            # The W&B integration leaves its run open; the round's training ends here (its
            # figures come later, from `pefty evaluate`, which resumes the run).
            if state.is_world_process_zero and "wandb" in self.runs:
                import wandb

                if wandb.run is not None and wandb.run.id == self.runs["wandb"]["run_id"]:
                    wandb.finish()

        def _mlflow(self) -> None:
            import mlflow

            run = mlflow.active_run()
            if run is None:
                return
            mlflow.log_params(self.params)
            mlflow.set_tag("pefty.round", self.params.get("pefty.round", ""))
            self.runs["mlflow"] = {
                "run_id": run.info.run_id,
                "experiment_id": run.info.experiment_id,
                "tracking_uri": mlflow.get_tracking_uri(),
            }
            logger.info("MLflow run %s (%s)", run.info.run_id, mlflow.get_tracking_uri())

        def _wandb(self) -> None:
            import wandb

            run = wandb.run
            if run is None:
                return
            run.config.update(self.params, allow_val_change=True)
            self.runs["wandb"] = {
                "run_id": run.id,
                "project": run.project or "",
                "entity": run.entity or "",
                "dir": str(Path(run.dir).parents[2]),  # <dir>/wandb/<run>/files: WANDB_DIR
                "mode": "offline" if run.offline else "online",
            }
            logger.info("W&B run %s (project %s, %s)", run.id, run.project, self.runs["wandb"])

    return LineageCallback


def run_of(target: ModelTarget) -> tuple[dict[str, dict[str, str]] | None, int | None]:
    """The runs of the round behind an evaluated model (a merged round, its adapter, or an
    export of it), and the round's steps (where its figures go on the run's step axis)."""
    record: Any = None
    if target.adapter_dir is not None:
        record = RoundRecord.read(target.adapter_dir)
    else:
        record = MergeRecord.read(target.model_dir)
        export = ExportRecord.read(target.model_dir)
        if record is None and export is not None and Path(export.source).is_dir():
            record = MergeRecord.read(Path(export.source))
    if record is None:
        return None, None
    return getattr(record, "tracking", None), record.steps


def log_evaluation(target: ModelTarget, label: EvalLabel, record: EvalRecord) -> list[str]:
    """Log an evaluation's figures to the runs of its round; the trackers logged to. A failure
    is a warning: the evaluation itself is written."""
    runs, steps = run_of(target)
    if not runs:
        return []
    stem = label.set_name + (f".{label.variant}" if label.variant else "")
    key = f"eval/{label.folder}/{stem}"  # MLflow keys take no '@'
    figures = {
        f"{key}/cer": record.cer,
        f"{key}/cer_with_spaces": record.cer_with_spaces,
        f"{key}/wer": record.wer,
        f"{key}/real_time_factor": record.real_time_factor,
    }
    if record.longform:
        figures[f"{key}/longform_cer"] = record.longform["cer"]
    logged = []
    for tracker, log in (("mlflow", _log_mlflow), ("wandb", _log_wandb)):
        run = runs.get(tracker)
        if run is None:
            continue
        if not _installed(tracker):
            logger.warning("%s: not logged to its %s run (%s)", key, tracker, TRACK_EXTRA_HINT)
            continue
        try:
            log(run, figures, steps or 0)
            logged.append(tracker)
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            logger.warning("%s: not logged to %s run %s (%s)", key, tracker, run["run_id"], reason)
    return logged


def _log_mlflow(run: dict[str, str], figures: dict[str, float], step: int) -> None:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    if run.get("tracking_uri", "").startswith("file:"):  # where training logged, it may
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    now = int(time.time() * 1000)
    metrics = [Metric(key, float(value), now, step) for key, value in figures.items()]
    MlflowClient(tracking_uri=run.get("tracking_uri") or None).log_batch(run["run_id"], metrics)
    logger.info("logged %d figures to MLflow run %s", len(metrics), run["run_id"])


def _log_wandb(run: dict[str, str], figures: dict[str, float], step: int) -> None:
    # No step: a resumed W&B run refuses steps below the last it logged.
    del step
    import wandb

    active = wandb.run
    if active is not None and active.id == run["run_id"]:
        active.log(figures)
        return
    resumed = wandb.init(
        id=run["run_id"],
        project=run.get("project") or None,
        entity=run.get("entity") or None,
        dir=run.get("dir") or None,
        mode=os.environ.get("WANDB_MODE") or run.get("mode") or None,
        resume="allow",
    )
    try:
        resumed.log(figures)
        resumed.summary.update(figures)
    finally:
        resumed.finish()
    logger.info("logged %d figures to W&B run %s", len(figures), run["run_id"])


def _installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None
