"""Claims on runs: while a process trains a run (or removes it), no other process can do either.

A claim is an exclusive, non-blocking advisory lock (`flock`) on `.<run>.lock` beside the run's folder
(a hidden file the store's listings pass over; beside it, not in it, so it claims the name before
the folder is made and the folder holds only the run), taken when a run starts (store.begin) or a
stopped run is resumed, and held until the training is over. A second `mnist train --name RUN`,
`mnist train --resume RUN` or `mnist checkpoints rm RUN` finds it held and refuses, naming the process.
The kernel drops the lock when its process ends, however it ends, so a SIGKILLed training leaves its
run free: the lock file it leaves behind means nothing. The file holds the holder's pid and what it
is doing (for that message only) and is removed on release. As nothing else writes into a folder
claimed, the temporary files of atomic writes that never finished (a process killed in the middle of
one) are swept away when it is claimed.

Claims are not enforced (every claim succeeds) where there is no `fcntl` (Windows), or where the lock
file cannot be made (a run folder in a folder the user cannot write to: only `--resume PATH` meets one).
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Iterator
from pathlib import Path

from mnistcli.errors import CheckpointError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

TRAINING, REMOVAL = "a training", "a removal (`mnist checkpoints rm`)"
# A probe (`holder`) holds a shared lock for a moment: a claim that meets one tries again this often.
TRIES, PAUSE = 10, 0.02

_held: dict[str, int] = {}  # the folders this process holds (absolute path -> the locked file's descriptor)


def claim(folder: Path, doing: str = TRAINING) -> None:
    """Claim the run in `folder` (made or not yet) for this process until `release(folder)`.

    Raises `CheckpointError` if another process holds it (or this one does, through another claim)."""
    if fcntl is None:
        return
    path, key = lock_file(folder), os.path.abspath(folder)
    for _ in range(TRIES):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except FileNotFoundError:
            raise CheckpointError(f"run {folder.name!r} is gone ({folder.parent} was removed)") from None
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                return  # not enforced (see above)
            raise CheckpointError(f"{path}: cannot claim the run ({e.strerror or e})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            time.sleep(PAUSE)
            continue
        if _same_file(fd, path):  # not a file its last holder has just removed
            with contextlib.suppress(OSError):  # who holds it is for messages only (a full disk must not stop it)
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()} {doing}\n".encode())
            _held[key] = fd
            for left in folder.glob(".*.tmp"):  # atomic.py's temporary files, of writes killed half-way
                with contextlib.suppress(OSError):
                    left.unlink()
            return
        os.close(fd)
    raise CheckpointError(f"run {folder.name!r} is in use by {holder(folder) or 'another process'}")


def release(folder: Path) -> None:
    """Give up this process's claim on `folder` (none: nothing happens), removing its lock file."""
    fd = _held.pop(os.path.abspath(folder), None)
    if fd is None:
        return
    with contextlib.suppress(OSError):
        if _same_file(fd, lock_file(folder)):  # still ours: a claim that follows makes its own
            os.unlink(lock_file(folder))
    os.close(fd)  # the lock goes with the last descriptor


@contextlib.contextmanager
def claimed(folder: Path, doing: str = TRAINING) -> Iterator[Path]:
    """`claim(folder)` for the `with` block; yields the folder."""
    claim(folder, doing)
    try:
        yield folder
    finally:
        release(folder)


def holder(folder: Path) -> str | None:
    """Who holds `folder` ("a training (pid 123)"), or None if no process does. Takes nothing: a probe."""
    if fcntl is None:
        return None
    try:
        fd = os.open(lock_file(folder), os.O_RDONLY)
    except OSError:
        return None  # no lock file: never claimed, or released
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pid, _, doing = os.read(fd, 200).decode(errors="replace").strip().partition(" ")
            return f"{doing} (pid {pid})" if pid.isdigit() and doing else "another process"
        return None  # free (and unlocked again when the descriptor closes)
    finally:
        os.close(fd)


def check_free(folder: Path) -> None:
    """Raise `CheckpointError` if a process holds `folder` (a probe: the run may be claimed a moment later)."""
    who = holder(folder)
    if who is not None:
        raise CheckpointError(f"run {folder.name!r} is in use by {who}")


def lock_file(folder: Path) -> Path:
    """The file whose lock claims the run in `folder`: `.NAME.lock` beside it."""
    return folder.parent / f".{folder.name}.lock"


def _same_file(fd: int, path: Path) -> bool:
    """Whether `path` still names the file open as `fd`."""
    try:
        here, there = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)
