"""A training run's log: one JSON object per line in `<run>/log.jsonl`, written as training goes.

Every progress report (every 10 optimizer steps, and at the end of each epoch) adds a `step` line
with the mean loss of the steps since the previous one, the running epoch accuracy and the learning rate; every epoch adds an `epoch` line with
its metrics; a run that started over (engine.callbacks.Restart) keeps only its last attempt, after one
`restart` line per restart. A run trained several times (engine.callbacks.BestAttempt) keeps every attempt, each
after an `attempt` line but the first, and ends with a `kept` line naming the attempt kept, which is what
`read_log` gives. Lines are flushed as they are written, so an interrupted run keeps everything it logged;
`read_log` skips a last line cut short. A line that cannot be written (a full disk) raises `FileProblem` naming the log.

The log is a regular file in the run's folder, nothing else: it is read through `open_regular`, and opened for
appending (or cut) non-blocking, without following a symbolic link, and checked with fstat before a byte goes in,
so a FIFO, a device or a folder in its place is refused at once and a link to a file elsewhere is never written to.
"""

from __future__ import annotations

import json
import math
import os
import stat
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mnistcli.data.files import KINDS, open_regular
from mnistcli.errors import FileProblem

LOG = "log.jsonl"


class RunLog:
    """Appends `step` and `epoch` events (training.StepInfo / EpochInfo) to a JSON-lines file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.failed = False  # a write failed: closing (which writes what is left) fails again, and says nothing new
        fd = _open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        self.file = os.fdopen(fd, "a", encoding="utf-8", buffering=1)  # line-buffered: each event reaches the disk
        self.empty = self.file.tell() == 0

    def write(self, event: str, values: dict[str, Any]) -> None:
        """One event; a NaN or infinite value (a diverged run), also inside a list, is written as null, so every line
        stays JSON. Raises `FileProblem` if it cannot be written."""
        line = json.dumps({"event": event, **finite(values)}, separators=(",", ":"), allow_nan=False) + "\n"
        try:
            self.file.write(line)
        except OSError as e:
            raise self._problem(e) from None
        self.empty = False

    def flush(self) -> int:
        """Push every line to the file; returns its size in bytes. Raises `FileProblem` if it cannot be written."""
        try:
            self.file.flush()
            return self.file.tell()
        except OSError as e:
            raise self._problem(e) from None

    def _problem(self, e: OSError) -> FileProblem:
        self.failed = True
        return FileProblem(self.path, f"cannot write the run log ({e.strerror or e})")

    def step(self, info: Any) -> None:
        self.write("step", asdict(info))

    def epoch(self, info: Any) -> None:
        self.write("epoch", asdict(info))

    def start_over(self, restarts: list[dict[str, Any]]) -> None:
        """Training began again from epoch 1: drop everything the abandoned attempts logged and keep one `restart`
        line per restart so far (epoch and training loss), so the log holds the attempt that counts."""
        self.flush()
        try:
            self.file.truncate(0)  # the file is in append mode: what follows goes to the new end
        except OSError as e:
            raise self._problem(e) from None
        for restart in restarts:
            self.write("restart", restart)

    def close(self) -> None:
        """Close the file (again: nothing happens). Raises `FileProblem` if the last lines cannot be written, unless a
        write failed already (that error is the one to report)."""
        try:
            self.file.close()  # closes it even when what is left cannot be written
        except OSError as e:
            if not self.failed:
                raise self._problem(e) from None


def cut(path: Path, size: int) -> None:
    """Drop what the log at `path` holds beyond its first `size` bytes (a resumed run logged that after its snapshot:
    it runs again). Raises `FileProblem` if it cannot be cut."""
    if not os.path.lexists(path):
        return
    fd = _open(path, os.O_WRONLY)
    try:
        if os.fstat(fd).st_size > size:
            os.ftruncate(fd, size)
    except OSError as e:
        raise FileProblem(path, f"cannot write the run log ({e.strerror or e})") from None
    finally:
        os.close(fd)


def check(path: Path) -> None:
    """Raise `FileProblem` unless the log at `path` is missing (it is made) or a regular file that is no symbolic
    link: what `RunLog` and `cut` accept, found out without opening it (before a resumed run is set up)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as e:
        raise FileProblem(path, f"cannot write the run log ({e.strerror or e})") from None
    if not stat.S_ISREG(mode):
        raise FileProblem(path, f"cannot write the run log: {_what(mode)}")


def _what(mode: int) -> str:
    """What a file that is no regular file is, said as a reason not to write to it."""
    if stat.S_ISLNK(mode):
        return "a symbolic link, not a file in the run's folder"
    if stat.S_ISDIR(mode):
        return "a folder, not a file"
    return "not a regular file" + next((f" ({name})" for is_kind, name in KINDS if is_kind(mode)), "")


def _open(path: Path, flags: int) -> int:
    """A descriptor of the log at `path` opened with `flags`, non-blocking (a FIFO does not wait for a reader) and
    without following a symbolic link. Raises `FileProblem` unless it is a regular file."""
    nofollow, nonblock = getattr(os, "O_NOFOLLOW", 0), getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags | nofollow | nonblock | getattr(os, "O_NOCTTY", 0), 0o666)
    except OSError as e:
        try:
            mode: int | None = os.lstat(path).st_mode  # say what is there (a link, a FIFO nobody reads, a folder)
        except OSError:
            mode = None
        problem = _what(mode) if mode is not None and not stat.S_ISREG(mode) else (e.strerror or str(e))
        raise FileProblem(path, f"cannot write the run log ({problem})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise FileProblem(path, f"cannot write the run log ({_what(mode)})")
        if nonblock:
            os.set_blocking(fd, True)  # a regular file: writes to it do not block anyway
    except BaseException:
        os.close(fd)
        raise
    return fd


def finite(value: Any) -> Any:
    """`value` with every NaN or infinite float in it, in dicts and lists too, replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


# A run logs a line of some 200 bytes every 10 steps and one an epoch: a million steps make some 20 MB.
MAX_LOG_BYTES = 256 * 2**20


def read_log(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(step events, epoch events) of a log file: of the attempt kept, if the run was trained several times (of the
    attempt going on, while it trains). Raises `FileProblem` if it cannot be read."""
    attempts: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]] = [([], [])]
    kept: int | None = None
    try:
        with open_regular(path, FileProblem) as f:  # a FIFO is refused, not waited on
            size = os.fstat(f.fileno()).st_size
            if size > MAX_LOG_BYTES:
                raise FileProblem(path, f"a run log of {size:,} bytes, more than any run writes ({MAX_LOG_BYTES:,})")
            text = f.read()
    except OSError as e:
        raise FileProblem(path, f"cannot read ({e.strerror or e})") from None
    lines = text.decode("utf-8", errors="replace").splitlines()  # a line of bad bytes is skipped as cut short
    for line in lines:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue  # the last line of an interrupted run may be cut short
        if not isinstance(event, dict):
            continue
        kind, (steps, epochs) = event.get("event"), attempts[-1]
        if kind == "step" and isinstance(event.get("step"), int):
            steps.append(event)
        elif kind == "epoch" and isinstance(event.get("epoch"), int):
            epochs.append(event)
        elif kind == "attempt":
            attempts.append(([], []))
        elif kind == "kept" and type(event.get("attempt")) is int:  # not a bool
            kept = event["attempt"]
    return attempts[kept - 1] if kept is not None and 1 <= kept <= len(attempts) else attempts[-1]
