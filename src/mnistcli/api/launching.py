"""`mnist train --nproc N`: the same command as N processes on this machine, started by torchrun's own launcher.

As ultralytics does for DDP, the command starts itself again: torch.distributed's elastic launcher
(`elastic_launch`, what the `torchrun` command runs) starts N copies of `python -m mnistcli ARGS`, with a
free port on 127.0.0.1 for their rendezvous and the CPU's cores shared out among them (OMP_NUM_THREADS,
unless it is set). They find each other through the environment the launcher sets (engine/dist.py), and
rank 0 alone reports and writes. When one of them fails, the launcher stops the others, and this says
which failed and how, once.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import logging
import os
import signal
import socket
import sys
import uuid
from typing import Any, NoReturn

import torch

from mnistcli import exiting, store
from mnistcli.api.common import data_folder
from mnistcli.config import split
from mnistcli.data import mnist
from mnistcli.engine import dist
from mnistcli.engine.device import choose_device
from mnistcli.errors import PEER_EXIT, MnistError, UsageError
from mnistcli.families import get_family
from mnistcli.registry import get_entry
from mnistcli.store import lock, runlog, snapshot

NO_ENSEMBLES = "an ensemble's members are runs of their own: spread them over processes with --jobs"


class LaunchFailed(MnistError):
    """A process of a data-parallel run failed; `code` is the exit code to leave with, `said` whether it said why."""

    def __init__(self, message: str, code: int, said: bool) -> None:
        super().__init__(message)
        self.code, self.said = code, said


def nproc(value: str, device: str = "auto") -> int:
    """The number of processes `--nproc VALUE` asks for: a whole number from 1, or `auto` (one per CUDA GPU when
    `device` may be CUDA, else 1)."""
    if value == "auto":
        import torch

        return max(1, torch.cuda.device_count()) if device in ("auto", "cuda") else 1
    try:
        n = int(value)
    except ValueError:
        n = 0
    if not 1 <= n <= 1024:
        raise UsageError(f"--nproc {value!r}: give a number of processes from 1 (or auto: one per GPU)")
    return n


def check(
    model_name: str,
    options: dict[str, Any],
    n: int,
    names: list[str | None],
    data_dir: str | None,
    on_download: mnist.ProgressFn | None = None,
) -> None:
    """What `mnist train MODEL --nproc N` can check before it starts N processes (each would refuse it only after
    importing torch and meeting the others): the model, its options, whether its batches can be shared among `n`,
    whether the machine has that many GPUs or cores, the run names; and the data, found (or downloaded, with
    progress) here, once."""
    entry = get_entry(model_name)
    family = get_family(entry.family)
    if family.trains_members:
        raise UsageError(f"--nproc: {NO_ENSEMBLES}")
    config, params = family.configure(entry.recipe, options)
    family.check(params, config)
    family.check_processes(n, config)
    _check_machine(n, config.device)
    for name in names:
        if name is not None:
            store.check_new_name(name)
    data_folder(data_dir, on_download)


def check_resume(ref: str, n: int, device: str | None) -> None:
    """What `mnist train --resume RUN --nproc N` can check before it starts N processes: that RUN can be resumed and
    shared among `n`, and that the machine has the GPUs or cores. Raises `CheckpointError` if it is in use, complete
    or has no readable snapshot (a FIFO in its place is refused, not waited on), `FileProblem` for a log that cannot
    be written, `UsageError` for the rest."""
    folder = store.stopped_run(ref)
    if (folder / store.PLAN).is_file():
        raise UsageError(f"--nproc: {NO_ENSEMBLES}")
    lock.check_free(folder)  # a run training now: say so before reading its snapshot
    _, run = snapshot.read(folder)  # its description checked (snapshot.described)
    runlog.check(folder / runlog.LOG)
    family = get_family(get_entry(run["model"]).family)
    config, _ = split(family.Params, {}, {**run["options"], **({"device": device} if device else {})}, family.name)
    family.check_processes(n, config)
    _check_machine(n, config.device)


def _check_machine(n: int, device_name: str) -> None:
    """`UsageError` unless this machine has a GPU for each of `n` processes (on CUDA) or a core (on the CPU)."""
    device = choose_device(device_name)
    if device.type == "cuda" and n > torch.cuda.device_count():
        raise UsageError(
            f"--nproc {n}: this machine has {torch.cuda.device_count()} GPU(s), one per process (or add --device cpu)"
        )
    cores = os.cpu_count() or 1
    if device.type != "cuda" and n > cores:
        raise UsageError(f"--nproc {n}: more processes than this machine's {cores} CPU cores")


def leave(code: int | str | None) -> NoReturn:
    """End this process, one of several of a data-parallel job, with `code` (as `sys.exit` would): its output
    flushed and the process group left, but without the interpreter's finalization, in which gloo's worker
    threads, still holding tensors, can abort the process (SIGABRT, "terminate called without an active
    exception") after the job has finished, which the launcher would report as a failure. The exit handlers run
    first, as at any exit (leaving the process group among them, unless this process failed), and everything this
    process wrote is closed by then (rank 0's files are written atomically, its claim on the run is released)."""
    with contextlib.suppress(Exception):
        if exiting.status(code) == 0:
            gc.collect()  # a DistributedDataParallel no longer referred to lets go of the process group
        else:  # after a failure, the others may be gone: leaving the group could wait for them
            atexit.unregister(dist.stop)
    exiting.leave(code)


def _cause(e: Any) -> tuple[int, Any]:
    """(rank, failure) of the process whose failure stopped the job (a ChildFailedError `e`), the first to fail in
    this order: killed by a signal other than SIGTERM; exited with an error of its own; killed by SIGTERM (the
    launcher records the processes it stops with it too, within the same second); stopped because another process
    went away (`PEER_EXIT`, said nothing)."""

    def rank_of(item: tuple[int, Any]) -> tuple[int, float, int]:
        rank, f = item
        if f.exitcode == PEER_EXIT:
            order = 3
        elif f.exitcode == -signal.SIGTERM:
            order = 2
        else:
            order = 0 if f.exitcode < 0 else 1
        return order, f.timestamp, rank

    return min(e.failures.items(), key=rank_of)  # type: ignore[no-any-return]


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
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n)))
    for logger in [name for name in logging.root.manager.loggerDict if name.startswith("torch.distributed")]:
        logging.getLogger(logger).setLevel(logging.CRITICAL)  # the launcher's own reports of failures: ours say it
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
    except SignalException as e:
        if e.sigval == signal.SIGINT:  # Ctrl-C reached every process; rank 0 says how to resume
            raise LaunchFailed("interrupted", 130, said=True) from None
        name = signal.Signals(e.sigval).name
        raise LaunchFailed(
            f"stopped by {name}; the processes were stopped and no checkpoint was written (`mnist checkpoints` "
            "shows the run; `mnist train --resume RUN` goes on from its last completed epoch)",
            128 + int(e.sigval),
            said=False,
        ) from None
    except ChildFailedError as e:
        rank, failure = _cause(e)
        code = failure.exitcode
        if code == PEER_EXIT:  # none said why: each saw another go (which was not recorded)
            message = f"the processes lost each other (process {rank} of {n} first); no checkpoint was written"
            raise LaunchFailed(message, 1, said=False) from None
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
