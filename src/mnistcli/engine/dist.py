"""The one seam for data-parallel training: which process this is, how a batch is shared out, what is synchronised.

One process is rank 0 of 1, and then everything here does nothing. Under torchrun (or `mnist train
--nproc N`, which starts torchrun itself: api/launching.py), `start` joins the process group that
torch's launcher describes in the environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT):
nccl on CUDA, gloo on the CPU. The loop stays as it is, as Lightning Fabric's and nanoGPT's do:

- every rank draws the same global batch from the seeded sampler and augments it whole, from the
  same generators, so the images and their augmentation are exactly those one process would train
  on; then it keeps its share (`shard`: every world-th row). No two ranks train on the same augmented
  image, and none is dropped.
- DistributedDataParallel (`wrap`) averages the gradients over the ranks. Each share's loss is weighted
  by its size (`weight`), so the average is the global batch's mean even where the last batch of an
  epoch does not divide evenly.
- metrics are summed over the ranks (`sum`), what rank 0 decides (early stopping, the target watch)
  is broadcast (`decide`), and batch norm's running statistics, kept per rank while training, are
  averaged before every evaluation and before saving (`sync_buffers`; SyncBatchNorm does not run on
  a CPU).
- only rank 0 (`is_main`) logs, writes files and reports progress.
"""

from __future__ import annotations

import atexit
import contextlib
import inspect
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
from torch import nn

from mnistcli.engine.device import choose_device
from mnistcli.errors import MnistError, PeerFailed, UsageError

TIMEOUT = timedelta(minutes=10)  # how long a rank waits for the others at a collective before the job fails


@dataclass(frozen=True)
class Dist:
    """This process's place among `world` processes training one model, and the device it trains on."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device | None = None  # None: the run chooses (one process)

    @property
    def is_main(self) -> bool:
        """Whether this process writes logs, checkpoints and progress (rank 0)."""
        return self.rank == 0

    @property
    def backend(self) -> str | None:
        """The process group's backend: nccl on CUDA, gloo on the CPU; None for one process."""
        if self.world == 1:
            return None
        return "nccl" if self.device is not None and self.device.type == "cuda" else "gloo"

    def shard(self, batch: Any) -> Any:
        """This rank's share of a global batch (a tensor, or a tuple of tensors and Nones): every world-th row."""
        if self.world == 1 or batch is None:
            return batch
        if isinstance(batch, tuple):
            return tuple(self.shard(part) for part in batch)
        return batch[self.rank :: self.world]

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """`values` summed over every rank (a new tensor; `values` itself for one process)."""
        if self.world == 1:
            return values
        total = values.detach().clone()
        torch.distributed.all_reduce(total)
        return total

    def weight(self, size: int) -> float:
        """What this rank's mean loss over `size` items is multiplied by so that the ranks' average (DDP's) is the mean
        over the global batch: size x world / global size (1 for one process)."""
        if self.world == 1:
            return 1.0
        total = float(self.sum(torch.tensor([float(size)], device=self.device)))
        return size * self.world / total

    def decide(self, flag: bool) -> bool:
        """Rank 0's `flag`, on every rank."""
        if self.world == 1:
            return flag
        value = torch.tensor([int(flag)], device=self.device)
        torch.distributed.broadcast(value, 0)
        return bool(value.item())

    def wrap(self, module: nn.Module, unused: bool = False) -> nn.Module:
        """`module` in DistributedDataParallel, which averages its gradients over the ranks (itself for one process);
        `unused`: some of its parameters take no part in a step (DDP then looks for them every step). Buffers are not
        broadcast from rank 0 at every step: each rank keeps its own batch-norm statistics until `sync_buffers`."""
        if self.world == 1:
            return module
        ids = [self.device.index] if self.device is not None and self.device.type == "cuda" else None
        ddp = nn.parallel.DistributedDataParallel
        # torch 2.14 renamed broadcast_buffers (whose name older versions still need) to forward_sync_buffers
        renamed = "forward_sync_buffers" in inspect.signature(ddp).parameters
        local_buffers: dict[str, Any] = {"forward_sync_buffers" if renamed else "broadcast_buffers": False}
        return ddp(module, device_ids=ids, find_unused_parameters=unused, **local_buffers)

    def sync_buffers(self, model: nn.Module) -> None:
        """Average every batch-norm layer's running mean and variance over the ranks (in place)."""
        if self.world == 1:
            return
        for layer in model.modules():
            if isinstance(layer, nn.modules.batchnorm._BatchNorm) and layer.running_mean is not None:
                for stat in (layer.running_mean, layer.running_var):
                    assert stat is not None
                    torch.distributed.all_reduce(stat)
                    stat.div_(self.world)

    def seed_own_draws(self, seed: int, epoch: int) -> None:
        """Give torch's global generator (dropout, and anything else drawn outside the run's generators) a stream of
        this process's own, from `seed`, the rank and the `epoch` the run starts from (nothing for one process)."""
        if self.world > 1:
            torch.manual_seed((seed * 1_000_003 + self.rank * 7_919 + epoch) % 2**63)

    def barrier(self) -> None:
        """Wait until every rank is here."""
        if self.world > 1:
            torch.distributed.barrier()


SINGLE = Dist()


def _number(name: str, default: str | None = None) -> int:
    """The whole number in environment variable `name` (`default` when it is unset); `UsageError` otherwise."""
    value = os.environ.get(name, default)
    try:
        return int(value) if value is not None else -1
    except ValueError:
        raise UsageError(f"{name}={value!r} in the environment: it must be a whole number (torchrun sets it)") from None


def launched() -> bool:
    """Whether this process was started by torchrun (or `--nproc`) as one of several. Raises `UsageError` if
    WORLD_SIZE is set to something that is not a number."""
    return _number("WORLD_SIZE", "1") > 1


def start(device: str = "auto") -> Dist:
    """This process's place: one process (rank 0 of 1) unless torchrun started it as one of several, in which case
    join the process group (once per process: further runs of the same command share it) on the device of its
    local rank. Raises `UsageError` for what cannot run."""
    if not launched():
        return Dist(device=choose_device(device))
    rank, world, local = _number("RANK"), _number("WORLD_SIZE"), _number("LOCAL_RANK", "0")
    if not 0 <= rank < world or local < 0:
        raise UsageError(
            f"RANK={os.environ.get('RANK')} WORLD_SIZE={world} LOCAL_RANK={local} in the environment: RANK must be "
            "from 0 to WORLD_SIZE - 1 (torchrun, or `mnist train --nproc N`, sets them)"
        )
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
    if missing and not torch.distributed.is_initialized():
        raise UsageError(
            f"WORLD_SIZE={world} but no {' or '.join(missing)} in the environment: start the processes with torchrun "
            "or `mnist train --nproc N`"
        )
    chosen = choose_device(device)
    if chosen.type == "mps":
        raise UsageError("distributed training runs on CUDA or on the CPU, not on MPS: add --device cpu")
    if chosen.type == "cuda":
        if local >= torch.cuda.device_count():
            raise UsageError(
                f"local rank {local} has no GPU of its own (this machine has {torch.cuda.device_count()}): "
                "start at most one process per GPU, or add --device cpu"
            )
        chosen = torch.device("cuda", local)
        torch.cuda.set_device(chosen)
    here = Dist(rank, world, local, chosen)
    if not torch.distributed.is_initialized():
        try:
            torch.distributed.init_process_group(here.backend, timeout=TIMEOUT)
        except (ValueError, RuntimeError) as e:
            raise UsageError(f"could not join the other processes: {_first_line(e)}") from None
        atexit.register(stop)  # once, when the process ends: runs of one command (--runs) share the group
    return here


def stop() -> None:
    """Leave the process group, if this process joined one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _failure(error: BaseException) -> str | None:
    """Why a collective operation failed: "timeout" (the others did not come in time), "peer" (another process went
    away: crashed, killed, failed), or None (not a failure of the process group)."""
    text = str(error)
    if (
        "Timed out" in text
        or "timed out" in text
        or isinstance(error, getattr(torch.distributed, "DistTimeoutError", ()))
    ):
        return "timeout"
    signs = ("Connection closed by peer", "Connection reset by peer", "remote worker", "Broken pipe")
    if isinstance(error, torch.distributed.DistError) or any(sign in text for sign in signs):
        return "peer"
    return None


@contextlib.contextmanager
def session(device: str = "auto") -> Iterator[Dist]:
    """`start`, then the run; when it ends well, every process leaves together (after rank 0 has saved). When a
    collective operation fails because another process went away, this one stops with `PeerFailed` (the other
    says why)."""
    here = start(device)
    try:
        yield here
        here.barrier()
    except (RuntimeError, torch.distributed.DistError) as e:
        why = _failure(e) if here.world > 1 else None
        if why == "timeout":
            raise MnistError(
                f"waited more than {TIMEOUT.seconds // 60} minutes for the other processes at a collective operation; "
                "stopping (the snapshot of the last completed epoch, if any, can be resumed)"
            ) from None
        if why == "peer":
            raise PeerFailed(f"another process stopped: {_first_line(e)}") from None
        raise
