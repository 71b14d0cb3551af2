"""MNIST read in a thread of its own while a command imports torch.

`mnist train` spends its first second or so importing torch, on one core and holding the GIL. Reading MNIST needs
no torch, and the GIL hardly: inflating the training images (0.12 s) is a few calls to zlib, which lets go of it
(idx.py). `start(folder)` reads both splits in a daemon thread; `take(split, folder)` waits for it and hands the
split over if the thread read it from the same files as the caller would now (the same folder, and each file with
the size, time and inode it had before the thread read it, and after), else None, and the caller reads it itself.
The thread's errors are never raised: a caller that gets None reads the files and meets them itself, as it would
have without the thread. Each split is handed over once. No torch here.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from mnistcli.data.mnist import SPLITS, Split, find_file, load_split

_lock = threading.Lock()
_reads: dict[tuple[Path, str], _Read] = {}


def _identity(path: Path) -> tuple[int, int, int, int] | None:
    """What says a file is the one it was: its device, inode, size and time of change; None if it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


class _Read:
    """One split being read in the background: the split once read, and what its files were."""

    def __init__(self, split: str, folder: Path) -> None:
        self.split, self.folder = split, folder
        self.result: Split | None = None
        self.before: dict[Path, tuple[int, int, int, int] | None] = {}  # the files as the read began
        self.files: dict[Path, tuple[int, int, int, int] | None] = {}  # and as it ended
        self.done = threading.Event()

    def run(self) -> None:
        try:
            result = load_split(self.split, self.folder)
            paths = (result.images_path, result.labels_path)
            self.files = {p: _identity(p) for p in paths}
            if all(self.files[p] is not None and self.files[p] == self.before.get(p) for p in paths):  # unchanged
                self.result = result
        except Exception:  # the caller reads the files itself and meets the error there
            self.result = None
        finally:
            self.done.set()

    def start(self) -> None:
        self.before = {
            path: _identity(path) for stem in SPLITS[self.split] if (path := find_file(self.folder, stem)) is not None
        }
        threading.Thread(target=self.run, daemon=True, name=f"read MNIST {self.split}").start()


def start(folder: Path, splits: tuple[str, ...] = ("train", "test")) -> None:
    """Begin reading `splits` from `folder` in the background (nothing for a split being read there already; one
    read before and never taken is read again)."""
    folder = Path(folder)
    with _lock:
        for split in splits:
            key = (folder, split)
            if key not in _reads or _reads[key].done.is_set():
                read = _reads[key] = _Read(split, folder)
                read.start()


def take(split: str, folder: Path) -> Split | None:
    """The split read in the background from `folder`, if one was begun, it succeeded and its files are unchanged;
    else None. Waits for the read to end."""
    with _lock:
        read = _reads.pop((Path(folder), split), None)
    if read is None:
        return None
    read.done.wait()
    result = read.result
    if result is None or any(_identity(p) != identity for p, identity in read.files.items()):
        return None
    chosen = [find_file(Path(folder), stem) for stem in SPLITS[split]]  # what the caller would read now
    return result if chosen == [result.images_path, result.labels_path] else None
