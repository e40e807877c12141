"""A round's checkpoints: the one to resume, and whether it is safe to load (the rank rules are
ranks.py's).

DeepSpeed loads its checkpoint files with `torch.load(weights_only=False)`, which runs any
pickle they hold: a workspace copied from elsewhere could carry code. Before a resume, every
pickle of the checkpoint is loaded here with `weights_only=True` and an allow-list of the few
classes DeepSpeed and the Trainer store; anything else refuses the resume before DeepSpeed
touches the files.
"""

from __future__ import annotations

import importlib
import logging
import re
import shutil
from pathlib import Path

from pefty_whisper.errors import PeftyError
from pefty_whisper.ranks import is_main_process

logger = logging.getLogger(__name__)

# What a ZeRO-2 checkpoint and the Trainer's rng_state.pth hold besides tensors and builtins.
ALLOWED_GLOBALS = (
    "deepspeed.runtime.fp16.loss_scaler.LossScaler",
    "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler",
    "deepspeed.runtime.zero.config.ZeroStageEnum",
    "deepspeed.utils.tensor_fragment.fragment_address",
    "numpy.dtype",
    "numpy.ndarray",
    "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray._reconstruct",
)
# Files of a checkpoint that resuming loads with torch.load (training_args.bin is never loaded).
PICKLE_SUFFIXES = (".pt", ".pth", ".bin")
NOT_LOADED = ("training_args.bin",)


def last_complete_checkpoint(folder: Path) -> str | None:
    """The newest checkpoint that was fully written; a kill mid-save leaves a partial one.

    The Trainer writes trainer_state.json after the weights, optimizer and RNG states, so its
    presence marks a complete checkpoint. Partial ones are removed: nothing can resume from them.
    """
    checkpoints = sorted(
        (p for p in folder.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
    )
    while checkpoints and not (checkpoints[-1] / "trainer_state.json").is_file():
        partial = checkpoints.pop()
        if is_main_process():
            logger.warning("removing %s: written only partly when the run was killed", partial)
            shutil.rmtree(partial, ignore_errors=True)
    return str(checkpoints[-1]) if checkpoints else None


def _allowed() -> list[object]:
    import numpy as np

    found: list[object] = [type(np.dtype(np.uint32))]  # numpy.dtypes.UInt32DType and kin
    found += [type(np.dtype(t)) for t in (np.int64, np.float32, np.float64, np.uint8)]
    for name in ALLOWED_GLOBALS:
        module, _, attribute = name.rpartition(".")
        try:
            found.append(getattr(importlib.import_module(module), attribute))
        except (ImportError, AttributeError):
            continue  # another numpy or DeepSpeed version: that name cannot occur then
    return found


def verify_checkpoint(checkpoint: Path) -> None:
    """Load every pickle of a checkpoint without running code; refuse one that needs more.

    torch's weights_only unpickler builds only tensors, builtins and the allow-listed classes,
    so a planted `__reduce__` is reported, never called.
    """
    import pickle

    import torch

    files = sorted(
        p
        for p in Path(checkpoint).rglob("*")
        if p.is_file() and p.suffix in PICKLE_SUFFIXES and p.name not in NOT_LOADED
    )
    with torch.serialization.safe_globals(_allowed()):
        for path in files:
            try:
                torch.load(path, map_location="cpu", weights_only=True)
            except (pickle.UnpicklingError, RuntimeError, AttributeError, EOFError) as exc:
                reason = _reason(exc)
                raise PeftyError(
                    f"{path}: refusing to resume: the file holds objects a checkpoint never "
                    f"holds ({reason}); it may run code when loaded. Start the round over "
                    "with --force, or resume only checkpoints this machine wrote"
                ) from None
    logger.info("%s: %d checkpoint files hold only tensors and known types", checkpoint, len(files))


def _reason(exc: BaseException) -> str:
    """torch's message names the offending global among paragraphs of advice: keep that."""
    text = str(exc)
    match = re.search(r"(?:unsupported|Unsupported global:)\s*GLOBAL\s+(\S+)", text)
    if match:
        return f"it imports {match.group(1)}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:200] if lines else type(exc).__name__
