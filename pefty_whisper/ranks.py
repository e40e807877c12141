"""The processes of one command under a launcher (torchrun, the DeepSpeed launcher, srun): who is
rank 0, the process group, rank 0's decisions shared with every rank, the shards a set is
decoded in, and the check that every node sees the same workspace.

A leaf (it imports only errors and files), so train/, evaluate/ and label share one owner of the
rank rules. In one process (no launcher) every helper is a no-op, and nothing sets up a group.
"""

from __future__ import annotations

import functools
import os
import secrets
import socket
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from pefty_whisper.errors import PeftyError
from pefty_whisper.files import atomic_write_text

T = TypeVar("T")
P = ParamSpec("P")

# Rank 0 writes a random token under this name in the workspace; every other rank must read it.
WORKSPACE_TOKEN = ".pefty-node-check-{}"


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    """The process's index on its node: the GPU it decodes or trains on."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    """Rank 0 under a launcher (or the only process): the one that writes shared files."""
    return rank() == 0


def ensure_process_group_env() -> None:
    """Let DeepSpeed run as one process without a launcher (it would look for MPI otherwise).

    Under `deepspeed` or `torchrun` these variables are already set and left alone.
    """
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    os.environ.update(
        RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )


def init_process_group(timeout: timedelta | None = None) -> None:
    """The process group, set up once (accelerate and DeepSpeed both reuse a group that exists).

    The current CUDA device becomes LOCAL_RANK's first, so "cuda" in torch means this rank's
    own GPU; CTranslate2 and onnxruntime are given `local_rank()` as their device index.
    `timeout` (torch's default when None) bounds every later wait, for the first caller only.
    """
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank())
    dist.init_process_group(
        backend="nccl" if torch.cuda.is_available() else "gloo", timeout=timeout
    )


def share_from_rank_zero(decision: dict[str, Any]) -> dict[str, Any]:
    """Rank 0's `decision` on every process (a no-op in one process).

    The broadcast doubles as the barrier: no rank goes on before rank 0 has decided (and
    deleted what it deletes).
    """
    if world_size() <= 1:
        return decision
    import torch.distributed as dist

    init_process_group()
    shared = [decision if is_main_process() else None]
    dist.broadcast_object_list(shared, src=0)
    return shared[0]


def on_rank_zero(work: Callable[[], T]) -> T:
    """Run `work` on rank 0 only (a conversion, a merge: files every rank then reads) and give
    every rank its result; a PeftyError there is raised on every rank, so none waits forever."""
    decision: dict[str, Any] = {}
    if is_main_process():
        try:
            decision = {"result": work()}
        except PeftyError as exc:
            decision = {"error": str(exc)}
    decision = share_from_rank_zero(decision)
    if "error" in decision:
        raise PeftyError(decision["error"])
    return decision["result"]


def gather(local: T) -> list[T]:
    """Every rank's `local`, in rank order, on every rank (`[local]` in one process)."""
    if world_size() <= 1:
        return [local]
    import torch.distributed as dist

    init_process_group()
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, local)
    return gathered


def barrier() -> None:
    """Wait for every rank (a no-op in one process)."""
    if world_size() <= 1:
        return
    import torch.distributed as dist

    init_process_group()
    dist.barrier()


def ends_process_group(command: Callable[P, T]) -> Callable[P, T]:
    """A command that ends the process group when it returns (or fails), so the launcher's exit
    code says how each rank's run went (see end_process_group)."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            result = command(*args, **kwargs)
        except BaseException:
            end_process_group(synchronize=False)  # the other ranks may never reach a barrier
            raise
        end_process_group()
        return result

    return run


def rank_batches(order: Sequence[int], batch_size: int) -> list[list[int]]:
    """This rank's batches of `order`: the batches one process would decode, dealt in turn.

    Each batch is exactly one of the one-process run's (same rows, same padding), so a row's
    decode does not depend on the number of processes.
    """
    batches = [list(order[i : i + batch_size]) for i in range(0, len(order), batch_size)]
    return batches[rank() :: world_size()]


def map_batches(
    order: Sequence[int], batch_size: int, work: Callable[[list[int]], Sequence[T]]
) -> dict[int, T]:
    """`work` on this rank's batches of `order`, joined over the ranks: {index: result}."""
    mine: dict[int, T] = {}
    for batch in rank_batches(order, batch_size):
        mine.update(zip(batch, work(batch), strict=True))
    joined: dict[int, T] = {}
    for part in gather(mine):
        joined.update(part)
    return joined


def check_shared_workspace(root: Path) -> None:
    """Fail at once when a rank does not see rank 0's workspace (a node without the shared
    filesystem, or given another copy): it would read other data or write where no one looks.

    Rank 0 writes a random token into `root`; after the broadcast every other rank must read
    the same token at its own `root`. Every rank learns of any failure, so all of them stop.
    """
    if world_size() <= 1:
        return
    host = socket.gethostname()
    decision: dict[str, Any] = {}
    if is_main_process():
        nonce = secrets.token_hex(16)
        written = root / WORKSPACE_TOKEN.format(nonce)
        try:
            atomic_write_text(written, nonce + "\n")
            decision = {"nonce": nonce, "path": str(written), "host": host}
        except OSError as exc:
            decision = {"error": f"{written}: rank 0 cannot write to the workspace ({exc})"}
    decision = share_from_rank_zero(decision)
    if "error" in decision:
        raise PeftyError(decision["error"])
    nonce = decision["nonce"]
    problem = None
    if not is_main_process():
        problem = _token_problem(root, nonce, decision, host)
    problems = [p for p in gather(problem) if p]  # also the barrier before rank 0 removes it
    if is_main_process():
        Path(decision["path"]).unlink(missing_ok=True)
    if problems:
        more = f" (and {len(problems) - 1} more ranks)" if len(problems) > 1 else ""
        raise PeftyError(problems[0] + more)


def _token_problem(root: Path, nonce: str, written: dict[str, Any], host: str) -> str | None:
    try:
        seen = (root / WORKSPACE_TOKEN.format(nonce)).read_text(encoding="utf-8").strip()
    except OSError:
        seen = None
    if seen == nonce:
        return None
    found = "missing" if seen is None else "a different one"
    return (
        f"{root}: rank {rank()} on {host} does not see the workspace of rank 0 on "
        f"{written['host']} (the token rank 0 wrote to {written['path']} is {found} here): "
        "the workspace must be on a shared filesystem that every node mounts (NFS, Lustre, ...)"
    )


def end_process_group(synchronize: bool = True) -> None:
    """Tear down DeepSpeed's communication and torch.distributed before the process exits.

    Left to interpreter exit, the process group's threads can outlive the objects that own
    them, and a rank that finished its work then dies with SIGABRT ("terminate called without
    an active exception"): the launcher reports a failure for a round that was written. The
    barrier keeps a rank from tearing down while another still needs the group; accelerate's
    state is reset, so a later round in the same process sets up a group of its own.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    try:
        if synchronize and dist.get_world_size() > 1:
            dist.barrier()
    finally:
        if "deepspeed" in sys.modules:
            import deepspeed.comm as ds_comm

            if ds_comm.is_initialized():
                ds_comm.destroy_process_group()
        if dist.is_initialized():
            dist.destroy_process_group()
        if "accelerate" in sys.modules:
            from accelerate.state import AcceleratorState

            AcceleratorState._reset_state(reset_partial_state=True)
