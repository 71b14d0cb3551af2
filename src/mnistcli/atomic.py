"""Atomic file writes: readers see the old file or the whole new one, never half of either.

Every checkpoint, metrics file and output the tool writes goes through here (temporary file in
the same folder, flushed, then `os.replace`), so an interrupted command leaves nothing half-written.
Only a regular file is ever replaced: through a symbolic link the file it points to is written (the
link stays); anything else that is not a regular file (a folder, a device, a FIFO, a socket) is
refused, except where the user names it as an output (`write_output`): a character device or a
FIFO is then written to directly, as a shell's `>` would, and `-` is standard output.

Replacing gives the path a new file (a new inode), which is what atomic replacement means: a hard
link to the old file keeps the old contents. The new file keeps the replaced one's permission bits
(a 0600 file stays 0600); a new file gets 0666 less the umask, as `>` would make it.

One of this process's own descriptors, named as the user spells it (`/dev/stdout`, `/dev/stderr`,
`/dev/fd/N`, `/proc/self/fd/N`), is written to through that descriptor, never reopened: a shell's
`>> log` stays appended to, and a file behind the descriptor is never truncated or replaced.
"""

from __future__ import annotations

import io
import os
import re
import stat
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from mnistcli.errors import FileProblem, UsageError


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], object], own: bool = False) -> Path:
    """Call `write(f)` on a temporary file beside `path`, then rename it over `path`.

    Returns the final path. If `write` raises, the temporary file is removed and `path` untouched. `own`: a file
    mnistcli keeps for itself in a folder that is there (a run's model.onnx): whatever is at `path` is replaced
    by the rename, a link itself and never what it points to, and no folder is made.
    """
    path = Path(path) if own else replaceable(Path(path))
    try:
        old = None if own and path.is_symlink() else os.stat(path).st_mode  # a file replaced keeps its permissions
    except OSError:
        old = None
    mode = stat.S_IMODE(old) if old is not None else 0o666 & ~_umask()
    try:
        if not own:
            path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise FileProblem(path, f"cannot write ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # mkstemp makes 0600: the old file's permissions, else the usual ones
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise FileProblem(path, f"cannot write ({e.strerror or e})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_output(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> Path:
    """Write an output the user named: `-` is standard output; one of this process's descriptors (`/dev/stdout`,
    `/dev/fd/N`: see `descriptor`) is written through that descriptor; a character device (`/dev/null`) or a FIFO
    is opened and written to directly; any other path atomically (`atomic_write`). Returns the path written.

    Only for a path the user named as the output itself: a file name the program makes up goes through
    `atomic_write`, which refuses anything that is not a regular file. Raises `FileProblem`."""
    fd = descriptor(path)
    if fd is None and not _direct(Path(path)):
        return atomic_write(path, write)
    buffer = io.BytesIO()  # a stream cannot seek (numpy's writer does), and gets all of it or nothing
    write(buffer)
    try:
        if fd is not None:
            _write_fd(fd, buffer.getvalue())
        else:
            with open(path, "wb") as f:
                f.write(buffer.getvalue())
    except OSError as e:
        raise FileProblem(Path(path), f"cannot write ({e.strerror or e})") from None
    return Path(path)


# The spellings of a descriptor of this process: `/dev/stdout`, `/dev/fd/3`, `/proc/self/fd/3`, `/proc/<pid>/fd/3`.
_STREAMS = {"/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2}
_FD = re.compile(r"/(?:dev|proc/(?:self|thread-self|(?P<pid>\d+)))/fd/(?P<fd>\d+)")


def descriptor(path: str | os.PathLike[str]) -> int | None:
    """The descriptor of this process that `path` names as the user spelt it (`-` and `/dev/stdout`: 1, `/dev/fd/N`
    and `/proc/self/fd/N`: N), following the user's own symbolic links to such a name; None for any other path.

    Read before any resolving: `os.path.realpath('/dev/stdout')` is the file the shell redirected to, which must be
    appended to through the descriptor, not replaced."""
    name = os.fspath(path)
    if name == "-":  # and only `-` itself: `./-` is a file of that name
        return 1
    for _ in range(40):  # the kernel's own limit on links followed
        spelt = os.path.normpath(name)
        if spelt in _STREAMS:
            return _STREAMS[spelt]
        match = _FD.fullmatch(spelt)
        if match and (match["pid"] is None or int(match["pid"]) == os.getpid()):
            return int(match["fd"])
        try:
            target = os.readlink(name)
        except (OSError, ValueError):
            return None
        name = os.path.join(os.path.dirname(name), target)
    return None


def _write_fd(fd: int, payload: bytes) -> None:
    """All of `payload` to descriptor `fd`: standard output and error through Python's streams (so it stays in
    order with what else is printed there), any other descriptor directly."""
    stream = {1: sys.stdout, 2: sys.stderr}.get(fd)
    if stream is not None:
        stream.flush()
        stream.buffer.write(payload)
        stream.buffer.flush()
        return
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view) :]


def _direct(path: Path) -> bool:
    """Whether `path` is a stream to open and write to as it is: a character device or a FIFO."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


def mode_of(path: str | os.PathLike[str], label: object = None) -> int | None:
    """The `st_mode` of what a path the user named holds (links followed), or None where nothing is there.

    Unlike `Path.exists()` and `is_dir()`, a path the system cannot look up at all (a name too long, a loop of links,
    a folder it may not enter) is an error, not a traceback: `UsageError` "`label`: file name too long"."""
    try:
        return os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the name
        problem = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise UsageError(f"{path if label is None else label}: {problem[:1].lower()}{problem[1:]}") from None


def replaceable(path: Path) -> Path:
    """The file to replace for `path`: itself, or the file a symbolic link points to. Raises `FileProblem` for anything
    that is there and is not a regular file (a folder, a FIFO, a device, a socket), which is left as it is."""
    try:
        mode = path.stat().st_mode  # follows links
    except FileNotFoundError:
        return Path(os.path.realpath(path)) if path.is_symlink() else path  # a dangling link: create what it names
    except OSError as e:
        raise FileProblem(path, f"cannot write ({e.strerror or e})") from None
    if stat.S_ISDIR(mode):
        raise FileProblem(path, "cannot write: it is a folder")
    if not stat.S_ISREG(mode):
        raise FileProblem(path, f"cannot write: it is {_kind(mode)}, not a regular file, and is left as it is")
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def _kind(mode: int) -> str:
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], payload: bytes, own: bool = False) -> Path:
    """Write `payload` to `path` atomically (`own`: see `atomic_write`); returns the path."""
    return atomic_write(path, lambda f: f.write(payload), own)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically; returns the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))
