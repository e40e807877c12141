"""Where a round writes: adapters/roundN locked for the run, --force staging, publishing.

A finished round is never clobbered: `--force` trains into adapters/.roundN.next and swaps it
in only once the new round finished, so a typo, a crash or Ctrl-C in the new run never costs
the old round. Under several processes only rank 0 decides (and deletes); the others receive
its decision, or its refusal, so no two processes act on different views of the directory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pefty_whisper.config import Config, dump_config
from pefty_whisper.errors import PeftyError
from pefty_whisper.files import exclusive_lock, replace_directory
from pefty_whisper.ranks import is_main_process, share_from_rank_zero
from pefty_whisper.train.checkpoints import last_complete_checkpoint, verify_checkpoint
from pefty_whisper.workspace import RoundRecord, Workspace

if TYPE_CHECKING:
    from transformers import Seq2SeqTrainer

__all__ = ["ADAPTER_FILES", "CHECKPOINTS", "LOGS", "RoundOutput"]

logger = logging.getLogger(__name__)

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
CHECKPOINTS = "checkpoints"
LOGS = "logs"


class RoundOutput:
    """The directory one `pefty train` run writes, from the lock to the published adapter."""

    def __init__(self, workspace: Workspace, round_index: int, resume: bool, force: bool) -> None:
        self.workspace = workspace
        self.round_index = round_index
        self.resume, self.force = resume, force
        self.final = workspace.adapter_dir(round_index)
        # Where this run writes: adapters/roundN, or its staging directory under --force.
        self.work_dir = self.final

    @property
    def checkpoints(self) -> Path:
        return self.work_dir / CHECKPOINTS

    @property
    def logs(self) -> Path:
        return self.work_dir / LOGS

    def open(self, held: contextlib.ExitStack) -> str | None:
        """Lock the round, refuse to clobber it, pick the directory; returns the checkpoint to
        go on from. What `held` closes drops an empty staging directory of a failed run."""
        decision: dict[str, Any] = {}
        if is_main_process():
            try:
                held.enter_context(
                    exclusive_lock(
                        self.workspace.round_lock(self.round_index),
                        f"{self.final} (round {self.round_index})",
                    )
                )
                work_dir, resume_from = self._decide()
                decision = {"work_dir": str(work_dir), "resume_from": resume_from}
            except PeftyError as exc:
                decision = {"error": str(exc)}
        decision = share_from_rank_zero(decision)
        if "error" in decision:
            raise PeftyError(decision["error"])
        self.work_dir = Path(decision["work_dir"])
        held.callback(self._drop_empty_staging)
        return decision["resume_from"]

    def _drop_empty_staging(self) -> None:  # a failed --force run without checkpoints
        staging = self.work_dir
        if staging != self.final and is_main_process() and staging.is_dir():
            if last_complete_checkpoint(staging / CHECKPOINTS) is None:
                shutil.rmtree(staging, ignore_errors=True)

    def _decide(self) -> tuple[Path, str | None]:
        """(the directory this run writes, the checkpoint it resumes from); rank 0 only."""
        final = self.final
        if RoundRecord.read(final) is not None and not self.force:
            raise PeftyError(
                f"{final} is a finished round: pass --force to train it again (the old adapter "
                "is replaced only once the new round finishes)"
            )
        work_dir = self.workspace.adapter_staging_dir(self.round_index) if self.force else final
        last = last_complete_checkpoint(work_dir / CHECKPOINTS)
        if self.force and not (self.resume and last) and work_dir.exists():
            logger.info("--force: starting over in %s (%s stays until then)", work_dir, final)
            shutil.rmtree(work_dir)
            last = None
        if last and not self.resume:
            raise PeftyError(
                f"{final} holds an unfinished round ({Path(last).name}): pass --resume "
                "to continue it or --force to start over"
            )
        work_dir.mkdir(parents=True, exist_ok=True)
        if self.resume and last:
            verify_checkpoint(Path(last))  # before DeepSpeed unpickles it with weights_only=False
            logger.info("resuming from %s", last)
            return work_dir, last
        if self.resume:
            logger.info("--resume: no checkpoint in %s yet, starting the round", work_dir)
        return work_dir, None

    def write_adapter(
        self, trainer: Seq2SeqTrainer, best_checkpoint: Path | None, config: Config
    ) -> None:
        """Put the best adapter's files in the run's directory, each by an atomic rename."""
        staging = self.work_dir / ".adapter.partial"
        shutil.rmtree(staging, ignore_errors=True)
        if best_checkpoint is None:
            trainer.save_model(str(staging))
        else:
            staging.mkdir(parents=True)
            for name in ADAPTER_FILES:
                shutil.copy2(best_checkpoint / name, staging / name)
        for name in ADAPTER_FILES:
            os.replace(staging / name, self.work_dir / name)
        shutil.rmtree(staging, ignore_errors=True)
        dump_config(config, self.work_dir / "config.yaml")

    def publish(self) -> None:
        """Under --force, the finished new round replaces the old one (round.json written)."""
        if self.work_dir != self.final:
            logger.info("--force: the new round replaces %s", self.final)
            replace_directory(self.work_dir, self.final)
