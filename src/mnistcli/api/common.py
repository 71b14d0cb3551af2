"""Helpers every api module uses: data folders, tensors, checkpoints and user images."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from mnistcli import store
from mnistcli.data import images as image_io
from mnistcli.data import mnist
from mnistcli.data.tensors import TensorData
from mnistcli.engine.device import choose_device
from mnistcli.errors import CheckpointError, ImageError
from mnistcli.reports import Failure

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
    return mnist.resolve_dir(data_dir, on_progress=on_download, splits=splits)


def load_tensors(split: str, folder: Path, device: torch.device) -> TensorData:
    """The train or test split as tensors on `device`."""
    s = mnist.load_split(split, folder)
    return TensorData.from_numpy(s.images, s.labels, device)


def load_checkpoint(
    ref: str | None, families: set[str] | None, device: str, suggest: str = "cnn"
) -> tuple[store.Run, torch.nn.Module, torch.device]:
    """Resolve and load a checkpoint whose family is one of `families` (None: any). Raises `CheckpointError`."""
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
