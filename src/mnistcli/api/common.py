"""Helpers every api module uses: data folders, tensors, checkpoints and user images.

No torch at import (the fast path, api/serving.py, uses the image helpers): the functions that need it import it."""

from __future__ import annotations

import math
import stat
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from mnistcli import store
from mnistcli.atomic import mode_of
from mnistcli.data import images as image_io
from mnistcli.data.images import image_files
from mnistcli.errors import CheckpointError, ImageError, MnistError, UsageError
from mnistcli.reports import Failure, Match

if TYPE_CHECKING:
    import torch

    from mnistcli.data import mnist
    from mnistcli.data.tensors import TensorData

T = TypeVar("T")
R = TypeVar("R")
Loaded = list[tuple[str, np.ndarray | ImageError]]  # user images in input order: each its array, or why not


def a_model(family: str) -> str:
    """'a classify model', 'an adder model': a family named in a sentence."""
    return f"{'an' if family[:1] in ('a', 'e', 'i', 'o', 'u') else 'a'} {family} model"


def params_count(model: torch.nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())


def data_folder(
    data_dir: str | None, on_download: mnist.ProgressFn | None, splits: Sequence[str] = ("train", "test")
) -> Path:
    """The MNIST folder holding the files of `splits` (downloading them if needed); see data/mnist.py."""
    from mnistcli.data import mnist

    return mnist.resolve_dir(data_dir, on_progress=on_download, splits=splits)


def prefetch_mnist(data_dir: str | None) -> None:
    """Begin reading MNIST in the background (data/prefetch.py) from the folder a training would use, if its files
    are there: nothing is downloaded here, and any problem is left for the training itself to meet and report."""
    from mnistcli.data import mnist, prefetch

    try:
        folder = mnist.resolve_dir(data_dir, download=False)
    except (MnistError, OSError):
        return
    prefetch.start(folder)


def load_tensors(split: str, folder: Path, device: torch.device) -> TensorData:
    """The train or test split as tensors on `device` (read in the background, if `prefetch_mnist` began it)."""
    from mnistcli.data import mnist, prefetch
    from mnistcli.data.tensors import TensorData

    s = prefetch.take(split, folder) or mnist.load_split(split, folder)
    return TensorData.from_numpy(s.images, s.labels, device, f"the {split} images in {folder}")


def check_testable(classes: Sequence[int] | None, folder: Path, labels: np.ndarray | None = None) -> None:
    """Refuse (`UsageError`) a run on the digits `classes` (None: all ten) whose test images in `folder` hold none of
    them: it could not be tested on its digits. `labels`: the test labels if read already; else only the label
    file is read. Called before anything of the run is written."""
    from mnistcli.data import mnist

    if classes is None or len(set(classes)) >= 10:
        return  # every split holds images (mnist.load_split refuses an empty one)
    labels = mnist.load_labels("test", folder) if labels is None else labels
    if not np.isin(labels, list(classes)).any():
        raise UsageError(f"--classes {','.join(map(str, classes))}: the test images in {folder} hold none of them")


def load_checkpoint(
    ref: str | None, families: set[str] | None, device: str, suggest: str = "cnn"
) -> tuple[store.Run, torch.nn.Module, torch.device]:
    """Resolve and load a checkpoint whose family is one of `families` (None: any). Raises `CheckpointError`."""
    from mnistcli.engine.device import choose_device

    run = store.resolve(ref, families, suggest=suggest)
    if families is not None and run.family not in families:
        raise CheckpointError(
            f"checkpoint {run.name!r} is {a_model(run.family)}; this command needs {' or '.join(sorted(families))}"
        )
    dev = choose_device(device)
    return run, store.load(run, dev), dev


def read_images(paths: Sequence[str]) -> tuple[Loaded, np.ndarray]:
    """Load user images; returns (path, array or error) in input order, and the readable ones stacked."""
    loaded = list(image_io.load_images(paths))
    arrays = [item for _, item in loaded if not isinstance(item, ImageError)]
    return loaded, (np.stack(arrays) if arrays else np.zeros((0, 28, 28), dtype=np.float32))


def unreadable(loaded: Sequence[tuple[str, object]]) -> list[Failure]:
    """A `Failure` for each item that is an `ImageError`, in order."""
    return [Failure(path, str(item)) for path, item in loaded if isinstance(item, ImageError)]


def in_input_order(
    items: Sequence[tuple[str, T | ImageError]], answer: Callable[[list[str], list[T]], Sequence[R]]
) -> list[R | Failure]:
    """`answer(paths, items)` of the readable items (called once, and only if there is one), one result each,
    put back in input order with a `Failure` in place of each unreadable one."""
    readable = [(path, item) for path, item in items if not isinstance(item, ImageError)]
    answers = answer([p for p, _ in readable], [i for _, i in readable]) if readable else []
    if len(answers) != len(readable):
        raise ValueError(f"{len(answers)} answers for {len(readable)} images")
    rest = iter(answers)
    return [Failure(path, str(item)) if isinstance(item, ImageError) else next(rest) for path, item in items]


def answer_images(loaded: Loaded, answer: Callable[[list[str], np.ndarray], Sequence[R]]) -> list[R | Failure]:
    """`in_input_order` for user images: `answer` gets the readable images stacked, float (N, 28, 28), N >= 1."""
    return in_input_order(loaded, lambda paths, arrays: answer(paths, np.stack(arrays)))


DIVERGED = "the model's output is not a number: the run diverged"


def finite_only(results: Sequence[R | Failure]) -> list[R | Failure]:
    """`results` with each answer that holds a number that is not finite (NaN from a diverged run's weights) made a
    `Failure` for its image (or bag): such an answer ("digit 0, confidence nan") is no answer."""
    out: list[R | Failure] = []
    for r in results:
        if isinstance(r, Failure) or _finite(asdict(r)):  # type: ignore[call-overload]
            out.append(r)
            continue
        where = getattr(r, "path", None) or getattr(r, "bag", None) or "loose files"
        out.append(Failure(str(where), f"{where}: {DIVERGED}"))
    return out


def _finite(value: object) -> bool:
    """Whether every number in `value` (a result's fields: floats, lists and dicts of them) is finite."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_finite(v) for v in value)
    return True


def read_support(support_dir: str | Path) -> tuple[dict[str, np.ndarray], list[Failure]]:
    """One sub-folder per class label, each with example images -> ({label: images (n, 28, 28)}, skipped images).

    Raises `UsageError` naming the folder if it is missing, has fewer than two classes, or has
    a class with no readable image.
    """
    folder = Path(support_dir)
    mode = mode_of(folder, f"--support-dir {support_dir}") if str(support_dir) else None
    if mode is None or not stat.S_ISDIR(mode):
        raise UsageError(f"--support-dir {support_dir!s}: not a folder")
    try:
        class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as e:
        raise UsageError(f"--support-dir {support_dir}: cannot read it ({e.strerror})") from None
    if not class_dirs:
        raise UsageError(
            f"--support-dir {support_dir}: no class folders (make one sub-folder per label, each with example images)"
        )
    if len(class_dirs) < 2:
        raise UsageError(
            f"--support-dir {support_dir}: only one class ({class_dirs[0].name!r}); one-shot needs at least two"
        )
    support: dict[str, np.ndarray] = {}
    skipped: list[Failure] = []
    for class_dir in class_dirs:
        try:
            files = [str(p) for p in image_files(class_dir)]
        except OSError as e:
            raise UsageError(f"{class_dir}: cannot read class folder {class_dir.name!r} ({e.strerror})") from None
        loaded, stacked = read_images(files)
        skipped += unreadable(loaded)
        if not len(stacked):
            raise UsageError(
                f"{class_dir}: class {class_dir.name!r} has no readable image"
                + (f" ({skipped[-1].error})" if loaded else "")
            )
        support[class_dir.name] = stacked
    return support, skipped


def match(path: str, labels: list[str], squared: list[float], confidences: list[float]) -> Match:
    """The answer for one query: its nearest prototype, from its squared distances to each class's."""
    best = int(np.argmin(squared))
    return Match(
        path,
        labels[best],
        float(np.sqrt(squared[best])),
        float(confidences[best]),
        {c: round(float(np.sqrt(d)), 6) for c, d in zip(labels, squared, strict=True)},
    )
