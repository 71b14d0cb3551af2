"""Trainings in worker processes: several runs at once, progress relayed home (`--jobs`: an ensemble's members,
or the repeats of `--runs`).

Each task runs in a fresh process (`spawn`: no state shared with the parent, the same on Linux,
macOS and Windows) with its share of the CPU threads (and, on a machine with several GPUs, the
next GPU in turn: untested here, where there is none), and reports its steps, epochs, other work and
result through one queue, so the parent draws every bar and hears of every end. A process that
dies without a word (killed) is a failure of its task, named. Ctrl-C reaches the workers too: each
saves its snapshot as a single training does and says so, and the parent waits for them before it
raises `Interrupted`; when one task fails, the others are stopped the same way.
"""

from __future__ import annotations

import _thread
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from mnistcli import allocator
from mnistcli.errors import Interrupted, MnistError
from mnistcli.work import WorkFn

POLL_SECONDS = 0.2  # how often the parent looks for workers that died without a word
STOP_WAIT_SECONDS = 120  # how long stopped workers get to save their snapshots before they are killed
ASK_AGAIN_SECONDS = 2.0  # how often stopped workers that have not ended are asked again


@dataclass
class Task:
    """One training for a worker: `run(on_step, on_epoch, on_work)` is called there and returns a picklable result.

    `run` must be a module-level function (it is pickled by name); `args` are passed before the hooks."""

    name: str
    run: Callable[..., Any]
    args: tuple[Any, ...] = ()


@dataclass
class Relay:
    """Where a task's progress goes in the parent: its own step, epoch and work callbacks (all optional)."""

    on_step: Callable[[Any], None] | None = None
    on_epoch: Callable[[Any], None] | None = None
    on_work: WorkFn | None = None


@dataclass
class Outcome:
    """How the tasks ended: the results of those that finished, by name, and the errors of those that did not."""

    results: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    interrupted: list[str] = field(default_factory=list)


def threads_per_job(jobs: int) -> int:
    """CPU threads for each of `jobs` workers: this process's threads shared out, at least one each."""
    return max(1, torch.get_num_threads() // jobs)


def run_tasks(tasks: list[Task], jobs: int, relay: Callable[[str], Relay]) -> Outcome:
    """Run `tasks`, at most `jobs` at a time, each in a process of its own; returns how they ended.

    The first failure stops the tasks still running (they save what they have, as on Ctrl-C) and
    starts no more; so does a worker stopped on its own. Ctrl-C does the same, then raises
    `Interrupted` once every worker has ended.
    """
    context = multiprocessing.get_context("spawn")
    events: Any = context.Queue()
    pending, running = deque(tasks), dict[str, Any]()
    outcome, stopping, asked = Outcome(), False, 0.0
    # Under `nohup` or in a background job SIGINT is ignored here: then the workers ignore it too.
    interruptible = signal.getsignal(signal.SIGINT) is not signal.SIG_IGN
    gpus, started = torch.cuda.device_count() if torch.cuda.is_available() else 0, 0
    try:
        while pending or running:
            while pending and len(running) < jobs and not stopping:
                task = pending.popleft()
                # The threads shared out among the workers that will run beside each other (fewer at the end).
                threads = threads_per_job(min(jobs, len(running) + 1 + len(pending)))
                process = context.Process(
                    target=_work,
                    args=(task, threads, events, interruptible, _gpu(started, gpus)),
                    name=f"mnist {task.name}",
                )
                _start(process)
                started += 1
                running[task.name] = process
            for name in _next_events(events, running, relay, outcome):
                running.pop(name).join()
            if (outcome.errors or outcome.interrupted) and not stopping:
                stopping = True  # a failure, or a worker stopped on its own (a signal to it alone): stop them all
                pending.clear()
                _stop(running)
                asked = time.monotonic()
            elif stopping and time.monotonic() - asked > ASK_AGAIN_SECONDS:
                _stop(running)  # a worker acts on the first request it can hear and ignores the rest
                asked = time.monotonic()
    except KeyboardInterrupt:
        _stop(running)
        _wait(events, running, relay, outcome)
        raise Interrupted("interrupted") from None
    return outcome


def _start(process: Any) -> None:
    """Start a worker with SIGINT ignored, which it inherits until `_work` sets its own handler: a Ctrl-C while it is
    still starting (importing torch) then prints no traceback; `_wait` asks it again once it can listen."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        process.start()
    finally:
        signal.signal(signal.SIGINT, previous)


def _next_events(events: Any, running: dict[str, Any], relay: Callable[[str], Relay], outcome: Outcome) -> list[str]:
    """Handle the next message from a worker, if one comes soon, and notice workers that died without a word;
    returns the names of the tasks that ended."""
    ended = []
    try:
        name = _handle(events.get(timeout=POLL_SECONDS), relay, outcome)
        if name is not None:
            ended.append(name)
    except queue.Empty:
        pass
    for name, process in running.items():
        if name in ended or process.exitcode is None or _over(name, outcome):
            continue
        ended += _drain(events, relay, outcome)  # its last message may still be in the pipe
        if not _over(name, outcome):
            outcome.errors[name] = f"its worker process ended without a result (exit code {process.exitcode})"
            ended.append(name)
    return list(dict.fromkeys(ended))


def _over(name: str, outcome: Outcome) -> bool:
    return name in outcome.results or name in outcome.errors or name in outcome.interrupted


def _drain(events: Any, relay: Callable[[str], Relay], outcome: Outcome) -> list[str]:
    """Handle every message still in the queue (waiting up to a second for the first); returns the tasks ended."""
    ended: list[str] = []
    timeout = 1.0
    while True:
        try:
            name = _handle(events.get(timeout=timeout), relay, outcome)
        except queue.Empty:
            return ended
        timeout = 0.05
        if name is not None:
            ended.append(name)


def _handle(event: tuple[str, str, Any], relay: Callable[[str], Relay], outcome: Outcome) -> str | None:
    name, kind, payload = event
    hooks = relay(name)
    if kind == "step" and hooks.on_step is not None:
        hooks.on_step(payload)
    elif kind == "epoch" and hooks.on_epoch is not None:
        hooks.on_epoch(payload)
    elif kind == "work" and hooks.on_work is not None:
        hooks.on_work(*payload)
    elif kind == "done":
        outcome.results[name] = payload
        return name
    elif kind == "interrupted":
        outcome.interrupted.append(name)
        return name
    elif kind == "failed":
        outcome.errors[name] = payload
        return name
    return None


def _stop(running: dict[str, Any]) -> None:
    """Ask every running worker to stop as Ctrl-C stops a run (each saves its snapshot): SIGTERM, which a worker
    always handles (SIGINT it may ignore, under nohup); one still starting up ends at once, having nothing to save."""
    for process in running.values():
        if process.pid is not None and process.exitcode is None:
            try:
                os.kill(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


def _wait(events: Any, running: dict[str, Any], relay: Callable[[str], Relay], outcome: Outcome) -> None:
    """Let stopped workers finish saving (their last messages handled), asking again every few seconds (one still
    starting could not listen yet), and kill any still there after a while."""
    deadline = time.monotonic() + STOP_WAIT_SECONDS
    asked = time.monotonic()
    while running and time.monotonic() < deadline:
        try:
            for name in _next_events(events, running, relay, outcome):
                running.pop(name).join()
        except KeyboardInterrupt:
            continue  # a second Ctrl-C while the workers save: they are already stopping
        if time.monotonic() - asked > ASK_AGAIN_SECONDS:
            _stop(running)  # a worker acts on the first SIGINT it can hear and ignores the rest
            asked = time.monotonic()
    for process in running.values():
        process.kill()
        process.join()


def _gpu(started: int, gpus: int) -> int | None:
    """The GPU the next worker gets: with several, each in turn (workers see only theirs); else None."""
    return started % gpus if gpus > 1 else None


def _work(task: Task, threads: int, events: Any, interruptible: bool, gpu: int | None) -> None:
    """A worker: run one task with `threads` CPU threads (and its own GPU, when there are several), sending its
    progress and its end to the parent."""
    if gpu is not None:  # before CUDA starts in this process: `cuda` then means this GPU (of those visible to us)
        visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        os.environ["CUDA_VISIBLE_DEVICES"] = visible[gpu] if gpu < len(visible) else str(gpu)

    def send(kind: str, payload: Any) -> None:
        events.put((task.name, kind, payload))

    try:  # from the first moment a signal can interrupt it, a worker says how it ended
        _first_interrupt_only(signal.SIGINT if interruptible else None)
        _watch_parent()
        allocator.keep_freed_memory()  # a spawned process starts with glibc's defaults again
        torch.set_num_threads(threads)
        result = task.run(
            *task.args,
            on_step=lambda info: send("step", info),
            on_epoch=lambda info: send("epoch", info),
            on_work=lambda what, done, total: send("work", (what, done, total)),
        )
    except (Interrupted, KeyboardInterrupt):
        send("interrupted", None)
    except MnistError as e:
        send("failed", str(e))
    except Exception as e:  # the parent reports it: a worker must always say how it ended
        send("failed", f"{type(e).__name__}: {e}")
    else:
        send("done", result)
    events.close()
    events.join_thread()  # every message is in the pipe before the process ends


def _watch_parent() -> None:
    """Stop this worker as Ctrl-C would (it saves its snapshot) if the parent dies (killed, SIGTERM): a worker never
    trains on alone."""
    parent = multiprocessing.parent_process()

    def watch() -> None:
        while parent is not None and parent.is_alive():
            time.sleep(1.0)
        _thread.interrupt_main(signal.SIGTERM)

    threading.Thread(target=watch, daemon=True, name="watch parent").start()


def _first_interrupt_only(interrupt: int | None) -> None:
    """A worker stops as Ctrl-C stops a run (KeyboardInterrupt: it saves its snapshot) on the first SIGTERM (sent by
    `_watch_parent`, or by anyone) or, when `interrupt` is SIGINT, the first Ctrl-C, which reaches it from the
    terminal and again from the parent (`_stop`); it ignores the rest while it saves."""
    seen = [False]

    def handler(signum: int, frame: Any) -> None:
        if not seen[0]:
            seen[0] = True
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler if interrupt is not None else signal.SIG_IGN)
