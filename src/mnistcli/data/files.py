"""Opening the files a user names for reading: a regular file, or a symlink to one, and nothing else.

A plain open() of a FIFO waits forever for a writer, and a device such as /dev/zero never ends, so
every reader of user files (IDX, images) opens through `open_regular`. This module never imports torch.
"""

from __future__ import annotations

import os
import stat
from typing import BinaryIO

from mnistcli.errors import FileProblem

KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def open_regular(
    path: str | os.PathLike[str], error: type[FileProblem], folder: str = "a folder, not a file"
) -> BinaryIO:
    """Open `path` for binary reading if it is a regular file or a symlink to one, never blocking.

    A plain open() of a FIFO waits forever for a writer, and a device such as /dev/zero never ends,
    so the file is opened non-blocking (which changes nothing for a regular file) and checked with
    fstat before a byte is read. Returns the open file. Raises `error(path, problem)`: no such file,
    `folder` for a folder, not a regular file (a FIFO, a device), or cannot open.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise error(path, "no such file") from None
    except IsADirectoryError:
        raise error(path, folder) from None
    except OSError as e:
        raise error(path, f"cannot open ({e.strerror or e})") from None
    try:
        mode = os.fstat(fd).st_mode
    except OSError as e:
        os.close(fd)
        raise error(path, f"cannot open ({e.strerror or e})") from None
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise error(path, folder)
        kind = next((f" ({name})" for is_kind, name in KINDS if is_kind(mode)), "")
        raise error(path, f"not a regular file{kind}")
    return os.fdopen(fd, "rb")
