"""The one seam for data-parallel training: which process this is, how a batch is shared out, who writes.

Every run is one process today (rank 0 of 1): `shard` returns a batch whole and `is_main` is
True. Under torchrun (issue 16) `from_env` reads the process group torch has set up; the loop
stays as it is, as Lightning Fabric's and nanoGPT's do: each rank takes its slice of every
global batch the seeded sampler draws (so all ranks see one shuffle, from one seed), and only
the main process logs, writes files and reports progress.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Dist:
    """This process's place among `world` processes training one model."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes logs, checkpoints and progress (rank 0)."""
        return self.rank == 0

    def shard(self, index: Any) -> Any:
        """This rank's share of a global batch of indices (a tensor, or a tuple of them): every world-th row."""
        if self.world == 1:
            return index
        if isinstance(index, tuple):
            return tuple(self.shard(part) for part in index)
        return index[self.rank :: self.world]


SINGLE = Dist()


def from_env() -> Dist:
    """The running process group's rank and size, or a single process when there is none."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return Dist(torch.distributed.get_rank(), torch.distributed.get_world_size())
    return SINGLE
