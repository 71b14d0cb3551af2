"""Atomic file writes: readers see the old file or the whole new one, never half of either.

Every checkpoint, metrics file and output the tool writes goes through here (temporary file in
the same folder, flushed, then `os.replace`), so an interrupted command leaves nothing half-written.
Only a regular file is ever replaced: through a symbolic link the file it points to is written (the
link stays); anything else that is not a regular file (a folder, a device, a FIFO, a socket) is
refused, except where the user names it as an output (`write_output`): a character device or a
FIFO is then written to directly, as a shell's `>` would, and `-` is standard output.
"""

from __future__ import annotations

import io
import os
import stat
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from mnistcli.errors import FileProblem


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> Path:
    """Call `write(f)` on a temporary file beside `path`, then rename it over `path`.

    Returns the final path. If `write` raises, the temporary file is removed and `path` untouched.
    """
    path = _regular(Path(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise FileProblem(path, f"cannot write ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise FileProblem(path, f"cannot write ({e.strerror or e})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_output(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> Path:
    """Write an output the user named: `-` is standard output; a character device (`/dev/null`), a FIFO or one of
    this process's own descriptors (`/dev/stdout`) is written to directly; any other path atomically (`atomic_write`).
    Returns the path written."""
    if str(path) != "-" and not _direct(Path(path)):
        return atomic_write(path, write)
    buffer = io.BytesIO()  # a stream cannot seek (numpy's writer does), and gets all of it or nothing
    write(buffer)
    if str(path) == "-":
        sys.stdout.buffer.write(buffer.getvalue())
        sys.stdout.buffer.flush()
        return Path("-")
    try:
        with open(path, "wb") as f:
            f.write(buffer.getvalue())
    except OSError as e:
        raise FileProblem(Path(path), f"cannot write ({e.strerror or e})") from None
    return Path(path)


def _direct(path: Path) -> bool:
    """Whether `path` is a stream to write to as it is: a character device, a FIFO, or a link into /proc (`/dev/stdout`
    and `/dev/fd/N` are links to the descriptor, whatever it is: a terminal, a pipe, or a file opened for appending)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode) or os.path.realpath(path).startswith("/proc/")


def _regular(path: Path) -> Path:
    """The file to replace for `path`: itself, or the file a symbolic link points to; `FileProblem` for anything that is
    there and is not a regular file."""
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


def atomic_write_bytes(path: str | os.PathLike[str], payload: bytes) -> Path:
    """Write `payload` to `path` atomically; returns the path."""
    return atomic_write(path, lambda f: f.write(payload))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically; returns the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))
