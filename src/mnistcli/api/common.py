"""Helpers every api module uses: data folders, tensors, checkpoints and user images."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mnistcli import store
from mnistcli.data import images as image_io
from mnistcli.data import mnist
from mnistcli.data.tensors import TensorData
from mnistcli.engine.device import choose_device
from mnistcli.errors import CheckpointError, ImageError

EMBEDDING_TASKS = {"classify", "contrastive", "metric", "adder"}  # every model with `features(x)`


def a_model(task: str) -> str:
    """'a classify model', 'an adder model': a task named in a sentence."""
    return f"{'an' if task[:1] in ('a', 'e', 'i', 'o', 'u') else 'a'} {task} model"


def params(model: torch.nn.Module) -> int:
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
    ref: str | None, tasks: set[str], device: str, suggest: str = "cnn"
) -> tuple[store.Run, torch.nn.Module, torch.device]:
    """Resolve and load a checkpoint whose task is one of `tasks`. Raises `CheckpointError`."""
    run = store.resolve(ref, tasks, suggest=suggest)
    if run.task not in tasks:
        raise CheckpointError(
            f"checkpoint {run.name!r} is {a_model(run.task)}; this command needs {' or '.join(sorted(tasks))}"
        )
    dev = choose_device(device)
    return run, store.load(run, dev), dev


def read_images(paths: Sequence[str]) -> tuple[list[tuple[str, np.ndarray | ImageError]], np.ndarray]:
    """Load user images; returns (path, array or error) in input order, and the readable ones stacked."""
    loaded = list(image_io.load_images(paths))
    arrays = [item for _, item in loaded if not isinstance(item, ImageError)]
    return loaded, (np.stack(arrays) if arrays else np.zeros((0, 28, 28), dtype=np.float32))


def trained_digits(run: store.Run, test: TensorData) -> TensorData:
    """The test images of the digits a classifier or adder was trained on (all of them unless `--classes`).

    A run's own test result used these, so `mnist eval` and `mnist plot` use them too.
    """
    classes = trained_classes(run)
    return test.select(tuple(classes), None, torch.Generator()) if len(classes) < 10 else test


def trained_classes(run: store.Run) -> list[int]:
    """The digits the run trained on (`--classes`; all ten by default)."""
    return [int(c) for c in run.meta.get("data", {}).get("classes") or range(10)]
