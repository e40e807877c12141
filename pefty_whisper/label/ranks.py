"""`pefty label` under torchrun or the DeepSpeed launcher: which rank this is, its device, and
the barrier before rank 0 joins the shards.

Input i is labelled by rank i % world; each rank decodes on its own GPU (the launcher's
LOCAL_RANK), rank 0 waits for the others and writes the set. Without a launcher it is one
process, rank 0 of 1.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta

__all__ = ["Ranks"]

logger = logging.getLogger(__name__)

# A rank that finishes its shard early waits for the slowest: labelling a shard takes hours.
BARRIER_TIMEOUT = timedelta(days=2)


class Ranks:
    """This process's place among the launcher's, and a barrier over gloo (CPU or GPU)."""

    def __init__(self) -> None:
        self.rank = int(os.environ.get("RANK", "0"))
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self._group = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def owns(self, index: int) -> bool:
        """Whether input `index` is this rank's to label."""
        return index % self.world == self.rank

    def pin_device(self, device: str) -> None:
        """One GPU per rank: the LOCAL_RANK-th of the visible ones, before anything touches
        CUDA (torch and CTranslate2 both read CUDA_VISIBLE_DEVICES when they first start)."""
        if self.world == 1 or device not in ("auto", "cuda"):
            return
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = [i for i in visible.split(",") if i] if visible else None
        if ids is not None and len(ids) == 1:
            return  # the launcher gave this rank its own GPU already
        chosen = (
            ids[self.local_rank] if ids and self.local_rank < len(ids) else str(self.local_rank)
        )
        os.environ["CUDA_VISIBLE_DEVICES"] = chosen
        logger.info("rank %d decodes on GPU %s (if there is one)", self.rank, chosen)

    def barrier(self) -> None:
        if self.world == 1:
            return
        import torch.distributed as dist

        if not self._group:
            if not dist.is_initialized():
                dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)
            self._group = True
        dist.barrier()

    def close(self) -> None:
        if self._group:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self._group = False
