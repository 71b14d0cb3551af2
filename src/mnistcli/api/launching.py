"""`mnist train --nproc N`: the same command as N processes on this machine, started by torchrun's own launcher.

As ultralytics does for DDP, the command starts itself again: torch.distributed's elastic launcher
(`elastic_launch`, what the `torchrun` command runs) starts N copies of `python -m mnistcli ARGS`, with a
free port on 127.0.0.1 for their rendezvous and the CPU's cores shared out among them (OMP_NUM_THREADS,
unless it is set). They find each other through the environment the launcher sets (engine/dist.py), and
rank 0 alone reports and writes. When one of them fails, the launcher stops the others, and this says
which failed and how, once.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import uuid

from mnistcli.engine import dist
from mnistcli.errors import MnistError, UsageError


class LaunchFailed(MnistError):
    """A process of a data-parallel run failed; `code` is the exit code to leave with, `said` whether it said why."""

    def __init__(self, message: str, code: int, said: bool) -> None:
        super().__init__(message)
        self.code, self.said = code, said


def nproc(value: str) -> int:
    """The number of processes `--nproc VALUE` asks for: a whole number from 1, or `auto` (one per CUDA GPU, else 1)."""
    if value == "auto":
        import torch

        return max(1, torch.cuda.device_count())
    try:
        n = int(value)
    except ValueError:
        n = 0
    if not 1 <= n <= 1024:
        raise UsageError(f"--nproc {value!r}: give a number of processes from 1 (or auto: one per GPU)")
    return n


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the rendezvous's)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(n: int, args: list[str]) -> None:
    """Run `mnist ARGS` as `n` processes of one data-parallel job on this machine; return when all have finished.
    Raises `LaunchFailed` when one fails (the others are stopped), `UsageError` when already one of several."""
    if dist.launched():
        raise UsageError("--nproc: this is already one of several processes (torchrun started it); drop --nproc")
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n)))
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # its own failure report is ours
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=n,
        run_id=f"mnist-{uuid.uuid4().hex[:8]}",
        rdzv_backend="c10d",
        rdzv_endpoint=f"127.0.0.1:{free_port()}",
        max_restarts=0,
        monitor_interval=0.1,
    )
    try:
        elastic_launch(config, sys.executable)("-m", "mnistcli", *args)
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        code = failure.exitcode
        if code > 0:  # it exited with an error of its own, which it has said
            raise LaunchFailed(f"process {rank} of {n} exited with code {code}", code, said=True) from None
        try:
            how = f"killed by {signal.Signals(-code).name}"
        except ValueError:
            how = f"ended with code {code}"
        raise LaunchFailed(
            f"process {rank} of {n} was {how}; the other processes were stopped and no checkpoint was written "
            "(`mnist checkpoints` shows whether the run saved a snapshot to resume from)",
            1,
            said=False,
        ) from None
