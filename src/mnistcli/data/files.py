"""Opening the files a user names for reading: a regular file, or a symlink to one, and nothing else.

A plain open() of a FIFO waits forever for a writer, and a device such as /dev/zero never ends, so
every reader of user files (IDX, images) opens through `open_regular`. This module never imports torch.
"""

from __future__ import annotations

import os
import stat
from typing import BinaryIO

from mnistcli.errors import FileProblem

KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _not_regular(mode: int) -> str:
    """What a file that is neither regular nor a folder is, as the problem to report."""
    kind = next((f" ({name})" for is_kind, name in KINDS if is_kind(mode)), "")
    return f"not a regular file{kind}"


def _open_failed(path: str | os.PathLike[str], e: OSError) -> str:
    """The problem to report when os.open failed: named from the file itself where it says more than errno.

    Opening a socket fails (ENXIO, "No such device or address") before fstat could name it, and a
    symbolic link whose target is gone reads as "no such file" though there is a file of that name.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        try:
            return f"a broken symbolic link (to {os.readlink(path)}, which does not exist)"
        except OSError:  # not a link (or it went away): there is no such file
            return "no such file"
    except OSError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        return _not_regular(mode)
    return f"cannot open ({e.strerror or e})"


def open_regular(
    path: str | os.PathLike[str], error: type[FileProblem], folder: str = "a folder, not a file"
) -> BinaryIO:
    """Open `path` for binary reading if it is a regular file or a symlink to one, never blocking.

    A plain open() of a FIFO waits forever for a writer, and a device such as /dev/zero never ends,
    so the file is opened non-blocking (which changes nothing for a regular file) and checked with
    fstat before a byte is read. Returns the open file. Raises `error(path, problem)`: no such file,
    a broken symbolic link, `folder` for a folder, not a regular file (a FIFO, a device, a socket),
    or cannot open.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except IsADirectoryError:
        raise error(path, folder) from None
    except OSError as e:
        raise error(path, _open_failed(path, e)) from None
    try:
        mode = os.fstat(fd).st_mode
    except OSError as e:
        os.close(fd)
        raise error(path, f"cannot open ({e.strerror or e})") from None
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise error(path, folder)
        raise error(path, _not_regular(mode))
    return os.fdopen(fd, "rb")
