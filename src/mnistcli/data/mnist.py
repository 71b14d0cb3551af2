"""Find, download and verify MNIST; return its splits as uint8 numpy arrays.

The files are looked for, in order, in an explicit folder (`--data-dir`), the folder named by the
`MNIST_DATA_DIR` environment variable, the remembered folder (`data_dir` in settings.json; a
`--data-dir` holding all four files becomes it), and the download cache under the mnistcli home.
Only the files of the splits a command reads are needed (`mnist eval` of a classifier: the test
pair). A folder that was named must hold them: it is an error, not a silent fallback, if it does
not. Only the cache is filled by downloading, trying each mirror in turn and checking the md5 of
the decompressed bytes (so a mirror that recompressed its .gz files still verifies).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnistcli import paths, settings
from mnistcli.atomic import atomic_write_bytes
from mnistcli.data.idx import read_idx
from mnistcli.errors import DataError, UsageError

ENV_DATA_DIR = "MNIST_DATA_DIR"
ENV_MIRRORS = "MNISTCLI_MIRRORS"  # comma-separated base URLs; replaces MIRRORS (tests use it)

# Tried in turn. Each serves the four canonical .gz files under the canonical names.
MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

# Canonical file stem -> md5 of the *decompressed* IDX bytes.
RESOURCES: dict[str, str] = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
SPLITS: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# on_progress(filename, bytes_done, bytes_total or None)
ProgressFn = Callable[[str, int, "int | None"], None]


@dataclass(frozen=True)
class Split:
    """One split of MNIST: `images` (N, 28, 28) uint8, `labels` (N,) uint8 in 0..9."""

    images: np.ndarray
    labels: np.ndarray
    images_path: Path
    labels_path: Path


def candidates(stem: str) -> list[str]:
    """File names a stem may appear under: both naming styles, raw or gzip."""
    dotted = stem.replace("-idx", ".idx")  # train-images.idx3-ubyte, as some mirrors name them
    return [name + ext for name in dict.fromkeys((stem, dotted)) for ext in ("", ".gz")]


def find_file(folder: Path, stem: str) -> Path | None:
    """Return the first existing file for `stem` in `folder`, or None.

    Anything there under the name but a folder counts, so that a FIFO or a device is refused by
    `read_idx` as what it is ("not a regular file (a FIFO)") rather than reported missing.
    """
    for name in candidates(stem):
        if (folder / name).exists() and not (folder / name).is_dir():
            return folder / name
    return None


def missing_files(folder: Path, stems: Sequence[str] = tuple(RESOURCES)) -> list[str]:
    """Those of `stems` (default: all four canonical stems) not found in `folder`."""
    return [stem for stem in stems if find_file(folder, stem) is None]


def split_stems(splits: Sequence[str]) -> list[str]:
    """The canonical file stems of `splits` ('train', 'test'), images then labels."""
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise DataError(f"unknown split {unknown[0]!r} (expected one of {', '.join(SPLITS)})")
    return [stem for split in SPLITS if split in splits for stem in SPLITS[split]]


HOW_TO_PROVIDE = (
    f"pass --data-dir DIR, set {ENV_DATA_DIR}=DIR, or remember the folder with `mnist settings data_dir=DIR`"
)


def resolve_dir(
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    on_progress: ProgressFn | None = None,
    splits: Sequence[str] = tuple(SPLITS),
) -> Path:
    """Return a folder holding the files of `splits` (default both), downloading into the cache if needed.

    Raises `UsageError` if `--data-dir` is not a folder, and `DataError` if a named folder (the
    environment's, the remembered one) is missing or lacks files, or the download fails.
    """
    stems = split_stems(splits)
    env = os.environ.get(ENV_DATA_DIR) or None
    sources: list[tuple[str | os.PathLike[str] | None, str]] = [(data_dir, "--data-dir"), (env, ENV_DATA_DIR)]
    if data_dir is None and env is None:  # the settings file is read only when it decides
        sources.append((settings.load()["data_dir"], f"data_dir in {settings.path()}"))
    for folder, origin in sources:
        if folder is None:
            continue
        folder = Path(folder).expanduser()
        change = "; change it with `mnist settings data_dir=DIR`" if origin.startswith("data_dir") else ""
        if not folder.is_dir():
            problem = "not a folder" if folder.exists() else "no such folder"
            error = UsageError if origin == "--data-dir" else DataError
            raise error(f"{folder} ({origin}): {problem}{change}")
        missing = missing_files(folder, stems)
        if missing:
            raise DataError(f"{folder} ({origin}): no MNIST file for {', '.join(missing)} (raw or .gz){change}")
        return folder
    cache = paths.data_cache_dir()
    if missing_files(cache, stems):
        if not download:
            raise DataError(f"MNIST is not in {cache}; {HOW_TO_PROVIDE}")
        fetch(cache, on_progress=on_progress, stems=stems)
    return cache


def remember(folder: str | os.PathLike[str]) -> Path | None:
    """Make `folder` the remembered data folder if it holds all four MNIST files.

    Returns the folder if that changed the setting, else None (already remembered, incomplete,
    or the settings file could not be written).
    """
    path = Path(folder).expanduser()
    if not path.is_dir() or missing_files(path):
        return None
    return path.resolve() if settings.remember_data_dir(path) else None


def load_split(split: str, folder: Path) -> Split:
    """Read and validate one split ('train' or 'test') from `folder`.

    Raises `DataError` if images and labels disagree in count, shape or value range, and
    `IdxError` if either file is malformed.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")
    image_stem, label_stem = SPLITS[split]
    image_path, label_path = find_file(folder, image_stem), find_file(folder, label_stem)
    if image_path is None or label_path is None:
        raise DataError(f"{folder}: no MNIST {split} files")
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise DataError(
            f"{image_path}: expected N x 28 x 28 uint8 images, got {'x'.join(map(str, images.shape))} {images.dtype}"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataError(f"{label_path}: expected a 1-D uint8 label vector, got shape {labels.shape} {labels.dtype}")
    if len(images) != len(labels):
        raise DataError(f"{image_path} has {len(images)} images but {label_path} has {len(labels)} labels")
    if len(labels) and int(labels.max()) > 9:
        raise DataError(f"{label_path}: label {int(labels.max())} is outside 0-9")
    return Split(np.asarray(images), np.asarray(labels), image_path, label_path)


def mirrors() -> list[str]:
    """The mirror base URLs to try, from `MNISTCLI_MIRRORS` if set."""
    env = os.environ.get(ENV_MIRRORS)
    return [m.strip() for m in env.split(",") if m.strip()] if env else list(MIRRORS)


def fetch(
    dest: Path,
    mirror_list: Sequence[str] | None = None,
    on_progress: ProgressFn | None = None,
    stems: Sequence[str] | None = None,
) -> Path:
    """Download any missing MNIST file (of `stems`, default all four) into `dest`, verified by md5; returns `dest`.

    Each file is tried on every mirror in turn and written atomically. Raises `DataError` with
    the reasons and a hint to use local files if a file cannot be had from any mirror.
    """
    mirror_list = list(mirror_list or mirrors())
    for stem in stems or RESOURCES:
        md5 = RESOURCES[stem]
        if find_file(dest, stem) is not None:
            continue
        reasons = []
        for base in mirror_list:
            url = base.rstrip("/") + f"/{stem}.gz"
            try:
                payload = _download(url, f"{stem}.gz", on_progress)
                raw = gzip.decompress(payload)
            except urllib.error.HTTPError as e:
                reasons.append(f"{url}: HTTP {e.code} {e.reason}")
                continue
            except (urllib.error.URLError, OSError, EOFError, ValueError) as e:
                reasons.append(f"{url}: {getattr(e, 'reason', None) or e}")
                continue
            if hashlib.md5(raw).hexdigest() != md5:
                reasons.append(f"{url}: md5 mismatch")
                continue
            atomic_write_bytes(dest / f"{stem}.gz", payload)
            break
        else:
            raise DataError(
                f"could not download {stem}.gz ({'; '.join(reasons)}); put the MNIST IDX files in a folder and "
                + HOW_TO_PROVIDE
            )
    return dest


def _download(url: str, label: str, on_progress: ProgressFn | None, chunk: int = 1 << 16) -> bytes:
    """Return the body of `url`, reporting progress."""
    request = urllib.request.Request(url, headers={"User-Agent": "mnistcli"})
    with urllib.request.urlopen(request, timeout=30) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        parts: list[bytes] = []
        done = 0
        while block := response.read(chunk):
            parts.append(block)
            done += len(block)
            if on_progress:
                on_progress(label, done, total)
    return b"".join(parts)
