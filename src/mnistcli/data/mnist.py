"""Find, download and verify MNIST; return its splits as uint8 numpy arrays.

The files are looked for, in order, in an explicit folder (`--data-dir`), the folder named by the
`MNIST_DATA_DIR` environment variable, the remembered folder (`data_dir` in settings.json; a
`--data-dir` holding all four files becomes it), and the download cache under the mnistcli home.
Only the files of the splits a command reads are needed (`mnist eval` of a classifier: the test
pair). A folder that was named must hold them: it is an error, not a silent fallback, if it does
not. Only the cache is filled by downloading, trying each mirror in turn and checking the md5 of
the decompressed bytes (so a mirror that recompressed its .gz files still verifies).

Hostile files cost little: the labels are read first (they are small), and an image file whose
header disagrees with them, or any file claiming more than MAX_COUNT items, is refused from its
header before a byte is inflated. A download is capped in size and inflated
through the same bounded IDX reader, never whole.
"""

from __future__ import annotations

import hashlib
import os
import stat
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnistcli import paths, settings
from mnistcli.atomic import atomic_write_bytes
from mnistcli.data.idx import HeaderCheck, decode_idx, idx_header, read_idx
from mnistcli.errors import DataError, IdxError, UsageError

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
IMAGE_SHAPE = (28, 28)
# The most images or labels a file may claim: EMNIST's digits (240,000 training images, the largest
# MNIST-format set of digits) with room to spare; MNIST has 60,000. A gzip file may honestly inflate
# 1032 times (2 MB of zeros to 2 GB); with this cap a file costs at most 235 MB, whatever its header says.
MAX_COUNT = 300_000
# The most bytes a download may have: the largest MNIST file is 47 MB inflated, and gzip never adds much.
MAX_DOWNLOAD = 64 * 2**20

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
    """Return the file for `stem` in `folder`: the first of its names that is not a folder, or None.

    Anything there under the name but a folder counts, so that a FIFO or a device is refused by
    `read_idx` as what it is ("not a regular file (a FIFO)") rather than reported missing. Failing
    that, a folder or a broken symbolic link under one of the names is returned, for the same
    reason: reading it says what is wrong with it, where "no MNIST file" would mislead.
    """
    fallback = None
    for name in candidates(stem):
        path = folder / name
        try:
            if not stat.S_ISDIR(os.stat(path).st_mode):
                return path
        except OSError:  # nothing there, a broken link, or a name the system refuses
            if not os.path.lexists(path):
                continue
        fallback = fallback or path
    return fallback


def _folder_problem(folder: Path) -> str | None:
    """Why `folder` cannot be used as a data folder, or None if it is a folder.

    os.stat, not Path.is_dir: that raises on a name too long for the system (ENAMETOOLONG).
    """
    try:
        mode = os.stat(folder).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "no such folder"
    except OSError as e:
        return f"cannot use it ({e.strerror or e})"
    return None if stat.S_ISDIR(mode) else "not a folder"


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
        problem = _folder_problem(folder)
        if problem:
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
    if _folder_problem(path) or missing_files(path):
        return None
    return path.resolve() if settings.remember_data_dir(path) else None


def check_labels(name: object) -> HeaderCheck:
    """The header check of a label file called `name`: a 1-D uint8 vector of at most `MAX_COUNT` labels.

    The returned check raises `DataError` naming the file.
    """

    def check(dtype: np.dtype, shape: tuple[int, ...]) -> None:
        if len(shape) != 1 or dtype != np.uint8:
            raise DataError(f"{name}: expected a 1-D uint8 label vector, got shape {shape} {dtype.name}")
        if shape[0] > MAX_COUNT:
            raise DataError(f"{name}: {shape[0]} labels, more than the {MAX_COUNT} mnistcli reads (MNIST has 60000)")

    return check


def check_images(name: object, labels: tuple[object, int] | None = None) -> HeaderCheck:
    """The header check of an image file called `name`: N x 28 x 28 uint8, N at most `MAX_COUNT`.

    With `labels` (their file's name, their count), N must also be that count. The returned check
    raises `DataError` naming the file(s).
    """

    def check(dtype: np.dtype, shape: tuple[int, ...]) -> None:
        if len(shape) != 3 or shape[1:] != IMAGE_SHAPE or dtype != np.uint8:
            raise DataError(f"{name}: expected N x 28 x 28 uint8 images, got {'x'.join(map(str, shape))} {dtype.name}")
        if labels is not None and shape[0] != labels[1]:
            raise DataError(f"{name} has {shape[0]} images but {labels[0]} has {labels[1]} labels")
        if shape[0] > MAX_COUNT:
            raise DataError(f"{name}: {shape[0]} images, more than the {MAX_COUNT} mnistcli reads (MNIST has 60000)")

    return check


def load_split(split: str, folder: Path) -> Split:
    """Read and validate one split ('train' or 'test') from `folder`.

    The labels are read first: the image file must then agree with their count from its header
    alone, so a gzip bomb of images is refused before it is inflated. Raises `DataError` if images
    and labels disagree in count, shape or value range, or there are none, and `IdxError` if either
    file is malformed.
    """
    image_path, label_path, labels = _labels(split, folder)
    images = read_idx(image_path, check=check_images(image_path, (label_path, len(labels))))
    return Split(np.asarray(images), labels, image_path, label_path)


def load_labels(split: str, folder: Path) -> np.ndarray:
    """The labels of one split ('train' or 'test') in `folder`, validated as `load_split` does, without the images.
    Raises `DataError` or `IdxError` as `load_split` does for them."""
    return _labels(split, folder)[2]


def _labels(split: str, folder: Path) -> tuple[Path, Path, np.ndarray]:
    """(the split's image file, its label file, its labels read and checked)."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")
    image_stem, label_stem = SPLITS[split]
    image_path, label_path = find_file(folder, image_stem), find_file(folder, label_stem)
    if image_path is None or label_path is None:
        raise DataError(f"{folder}: no MNIST {split} files")
    labels = np.asarray(read_idx(label_path, check=check_labels(label_path)))
    if not len(labels):  # nothing to train on, or to measure: no command can use it
        raise DataError(f"{label_path}: no labels, an empty {split} split")
    if int(labels.max()) > 9:
        raise DataError(f"{label_path}: label {int(labels.max())} is outside 0-9")
    return image_path, label_path, labels


def verify(stem: str, payload: bytes, name: str) -> np.ndarray:
    """Check downloaded bytes (`name`: where from) of the MNIST file `stem` against its md5; return its array.

    The bytes are inflated only through the bounded IDX reader, with the header checked against
    MNIST's shapes first, so a gzip bomb costs no more than MNIST. The md5 is that of the
    decompressed IDX bytes. Raises `IdxError` if they are not an IDX file, `DataError` if they are
    not the file expected.
    """
    array = decode_idx(payload, name, check=(check_images if "images" in stem else check_labels)(name))
    md5 = hashlib.md5(idx_header(array.dtype, array.shape))
    md5.update(np.ascontiguousarray(array).reshape(-1).view(np.uint8).data)
    if md5.hexdigest() != RESOURCES[stem]:
        raise DataError(f"{name}: md5 mismatch")
    return array


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
        if find_file(dest, stem) is not None:
            continue
        reasons = []
        for base in mirror_list:
            url = base.rstrip("/") + f"/{stem}.gz"
            try:
                payload = _download(url, f"{stem}.gz", on_progress)
                verify(stem, payload, url)
            except urllib.error.HTTPError as e:
                reasons.append(f"{url}: HTTP {e.code} {e.reason}")
                continue
            except (urllib.error.URLError, OSError, ValueError) as e:
                reasons.append(f"{url}: {getattr(e, 'reason', None) or e}")
                continue
            except (IdxError, DataError) as e:  # their message names the URL
                reasons.append(str(e))
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
    """Return the body of `url`, reporting progress. Raises `ValueError` past `MAX_DOWNLOAD` bytes."""
    request = urllib.request.Request(url, headers={"User-Agent": "mnistcli"})
    too_large = f"larger than {MAX_DOWNLOAD} bytes, which no MNIST file is"
    with urllib.request.urlopen(request, timeout=30) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        if total and total > MAX_DOWNLOAD:
            raise ValueError(too_large)
        parts: list[bytes] = []
        done = 0
        while block := response.read(chunk):
            parts.append(block)
            done += len(block)
            if done > MAX_DOWNLOAD:
                raise ValueError(too_large)
            if on_progress:
                on_progress(label, done, total)
    return b"".join(parts)
