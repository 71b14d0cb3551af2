"""One function per command: compose registry, store, training, inference and data.

Every function returns a dataclass and never prints; progress goes out through callbacks. The CLI
(and any Python user) calls these; they raise `MnistError` subclasses for anything the user can
fix.
"""

from __future__ import annotations

import csv
import io
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mnistcli import __version__, linear_eval, store
from mnistcli.atomic import atomic_write
from mnistcli.config import TrainConfig
from mnistcli.data import images as image_io
from mnistcli.data import mnist
from mnistcli.dataset import TensorData
from mnistcli.device import choose_device, seed_everything
from mnistcli.errors import CheckpointError, ImageError, UsageError
from mnistcli.inference import embed as embed_images
from mnistcli.inference import evaluate_classifier, predict_proba
from mnistcli.linear_eval import frozen, linear_evaluation
from mnistcli.models.base import MEAN, STD
from mnistcli.registry import ModelEntry, create_model, get_entry, list_models
from mnistcli.tasks import get_task
from mnistcli.training import EpochInfo, StepInfo, fit

PREPROCESSING = {
    "input": [1, 28, 28],
    "pixels": "float32 = uint8 / 255, white ink on black, MNIST-style (see data/images.py)",
    "normalize": {"mean": MEAN, "std": STD, "where": "inside the model"},
}


@dataclass
class ModelInfo:
    name: str
    task: str
    description: str
    params: int
    recipe: dict[str, Any]


@dataclass
class TrainReport:
    run: store.Run
    config: TrainConfig
    test_accuracy: float
    test_loss: float
    seconds: float  # training loop only
    total_seconds: float  # data loading, training, evaluation and saving
    history: list[dict[str, Any]]
    stopped_early: bool
    device: str
    target: dict[str, Any] | None = None  # with --target-accuracy: target, checked_on, reached, epochs, seconds


@dataclass
class EvalReport:
    run: store.Run
    accuracy: float
    loss: float
    per_class: list[dict[str, Any]]
    confusion: list[list[int]]
    total: int
    seconds: float
    device: str
    # "classifier": the model's own head. "linear": a probe on frozen features (self-supervised
    # models), with `labels_per_class` and the same probe on raw pixels (`pixels_accuracy`).
    protocol: str = "classifier"
    labels_per_class: int | None = None
    pixels_accuracy: float | None = None

    @property
    def images_per_second(self) -> float:
        return self.total / self.seconds if self.seconds > 0 else float("inf")


@dataclass
class Prediction:
    path: str
    digit: int
    confidence: float
    probabilities: list[float]


@dataclass
class Failure:
    path: str
    error: str


@dataclass
class PredictReport:
    run: store.Run
    results: list[Prediction | Failure] = field(default_factory=list)

    @property
    def failures(self) -> list[Failure]:
        return [r for r in self.results if isinstance(r, Failure)]


@dataclass
class EmbedReport:
    run: store.Run
    paths: list[str]  # the images embedded, in input order
    vectors: np.ndarray  # (len(paths), D) float32
    failures: list[Failure]


def models(pattern: str = "*") -> list[ModelInfo]:
    """Every registered model matching `pattern`, with its parameter count."""
    return [_info(e) for e in list_models(pattern)]


def _info(entry: ModelEntry) -> ModelInfo:
    return ModelInfo(entry.name, entry.task, entry.description, _params(create_model(entry.name)), entry.recipe)


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _data(data_dir: str | None, on_download: mnist.ProgressFn | None) -> Path:
    return mnist.resolve_dir(data_dir, on_progress=on_download)


def _load_tensors(split: str, folder: Path, device: torch.device) -> TensorData:
    s = mnist.load_split(split, folder)
    return TensorData.from_numpy(s.images, s.labels, device)


def train(
    model_name: str,
    options: dict[str, Any] | None = None,
    model_args: dict[str, Any] | None = None,
    name: str | None = None,
    data_dir: str | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
    on_epoch: Callable[[EpochInfo], None] | None = None,
    on_download: mnist.ProgressFn | None = None,
) -> TrainReport:
    """Train `model_name` with its recipe overridden by the non-None `options`; save and return the run."""
    t0 = time.perf_counter()
    entry = get_entry(model_name)
    config = TrainConfig.build(entry.recipe, options or {})
    if name is not None:
        store.check_new_name(name)  # before training, not after it
    device = choose_device(config.device)
    generator = seed_everything(config.seed)
    model = create_model(model_name, **(model_args or {})).to(device)  # bad --arg values fail before any data work
    if entry.task == "contrastive":
        if config.target_accuracy is not None:
            raise UsageError(
                "--target-accuracy is for classifiers; a contrastive model has no accuracy while it trains"
            )
        if config.batch_size < 2:
            raise UsageError(
                "--batch-size must be at least 2 for a contrastive model (the other images are its negatives)"
            )
    folder = _data(data_dir, on_download)
    full_train, full_test = _load_tensors("train", folder, device), _load_tensors("test", folder, device)
    train_data = full_train.select(config.classes, config.per_class, generator)
    test_data = full_test.select(config.classes, None, generator)
    train_data, val_data = train_data.split(config.val_split or 0.0, generator)
    if len(train_data) < 2:
        raise UsageError("fewer than 2 training images left after --classes/--per-class/--val-split")

    task = get_task(entry.task, config)
    # The target is watched on the validation split when there is one, else on the test set
    # (as time-to-accuracy benchmarks do); the report says which.
    monitor = val_data if val_data is not None else test_data
    result = fit(
        model, task, train_data, config, generator, val=val_data, monitor=monitor, on_step=on_step, on_epoch=on_epoch
    )
    target = None
    if config.target_accuracy is not None:
        target = {
            "target": config.target_accuracy,
            "checked_on": "validation" if val_data is not None else "test",
            "reached": result.target_reached is not None,
            **(result.target_reached or {}),
        }
    if entry.task == "contrastive":
        # Self-supervised: the test result is the linear evaluation `mnist eval` gives (all labels
        # of the whole training split, all ten digits), so the two always agree.
        probe = linear_evaluation(frozen(model), full_train, full_test)
        test_accuracy, test_loss = probe.accuracy, probe.loss
    elif result.target_reached is not None and val_data is None:
        # The last target check was a full pass over the test set with these very weights.
        test_accuracy, test_loss = result.target_reached["accuracy"], result.target_reached["loss"]
    else:
        test = evaluate_classifier(model, test_data)
        test_accuracy, test_loss = test.accuracy, test.loss

    meta = {
        "model": {
            "name": model_name,
            "args": model_args or {},
            "task": entry.task,
            "params": _params(model),
        },
        "preprocessing": PREPROCESSING,
        "config": config.to_dict(),
        "data": {
            "folder": str(folder),
            "train_images": len(train_data),
            "val_images": len(val_data or []),
            "test_images": len(test_data),
            "classes": list(config.classes or range(10)),
        },
        "history": result.history,
        "metrics": {
            "test_accuracy": test_accuracy,
            "test_loss": test_loss,
            "best_epoch": result.best_epoch,
            "stopped_early": result.stopped_early,
            "target": target,
        },
        "seconds": result.seconds,
        "device": str(device),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": {
            "mnistcli": __version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
    }
    run = store.save(model, meta, name=name)
    return TrainReport(
        run,
        config,
        test_accuracy,
        test_loss,
        result.seconds,
        time.perf_counter() - t0,
        result.history,
        result.stopped_early,
        str(device),
        target,
    )


def _load(ref: str | None, tasks: set[str], device: str) -> tuple[store.Run, torch.nn.Module, torch.device]:
    run = store.resolve(ref, tasks)
    if run.task not in tasks:
        raise CheckpointError(
            f"checkpoint {run.name!r} is a {run.task} model; this command needs {' or '.join(sorted(tasks))}"
        )
    dev = choose_device(device)
    return run, store.load(run, dev), dev


def evaluate(
    ref: str | None = None,
    data_dir: str | None = None,
    device: str = "auto",
    labels_per_class: int | None = None,
    on_download: mnist.ProgressFn | None = None,
) -> EvalReport:
    """Evaluate a checkpoint on the 10,000 MNIST test images.

    A classifier is judged by its own head. A self-supervised (contrastive) model gets the linear
    evaluation protocol: a probe trained on its frozen features with all training labels, or
    `labels_per_class` per digit, beside the same probe on raw pixels.
    """
    run, model, dev = _load(ref, {"classify", "contrastive"}, device)
    if labels_per_class is not None and run.task == "classify":
        raise UsageError("--labels-per-class is for self-supervised checkpoints (e.g. simclr)")
    if labels_per_class is not None and labels_per_class < 1:
        raise UsageError("--labels-per-class must be at least 1")
    folder = _data(data_dir, on_download)
    test_data = _load_tensors("test", folder, dev)
    t0 = time.perf_counter()
    if run.task == "classify":
        result = evaluate_classifier(model, test_data)
        extra: dict[str, Any] = {}
    else:
        train_data = _load_tensors("train", folder, dev)
        fewest = int(torch.bincount(train_data.labels, minlength=10).min())
        if labels_per_class is not None and labels_per_class > fewest:
            raise UsageError(
                f"--labels-per-class {labels_per_class}: at most {fewest} (the fewest training images of any digit)"
            )
        result = linear_evaluation(frozen(model), train_data, test_data, labels_per_class)
        pixels = linear_evaluation(linear_eval.pixels, train_data, test_data, labels_per_class)
        extra = {"protocol": "linear", "labels_per_class": labels_per_class, "pixels_accuracy": pixels.accuracy}
    seconds = time.perf_counter() - t0
    return EvalReport(
        run,
        result.accuracy,
        result.loss,
        result.per_class(),
        result.confusion.tolist(),
        result.total,
        seconds,
        str(dev),
        **extra,
    )


def _read_images(paths: Sequence[str]) -> tuple[list[tuple[str, np.ndarray | ImageError]], np.ndarray]:
    """Load user images; returns (path, array or error) in input order, and the readable ones stacked."""
    loaded = list(image_io.load_images(paths))
    arrays = [item for _, item in loaded if not isinstance(item, ImageError)]
    return loaded, (np.stack(arrays) if arrays else np.zeros((0, 28, 28), dtype=np.float32))


def predict(paths: Sequence[str], ref: str | None = None, device: str = "auto") -> PredictReport:
    """Classify each image; unreadable ones become `Failure`s and the rest still go through."""
    if not paths:
        raise UsageError("no images given (pass files, folders, or - to read paths from stdin)")
    run, model, _ = _load(ref, {"classify"}, device)
    loaded, stacked = _read_images(paths)
    rows = iter(predict_proba(model, stacked) if len(stacked) else [])
    results: list[Prediction | Failure] = []
    for path, item in loaded:
        if isinstance(item, ImageError):
            results.append(Failure(path, str(item)))
        else:
            row = next(rows)
            results.append(Prediction(path, int(row.argmax()), float(row.max()), [round(float(v), 6) for v in row]))
    return PredictReport(run, results)


def embed(paths: Sequence[str], ref: str | None = None, device: str = "auto") -> EmbedReport:
    """Feature vectors of each readable image, in input order; unreadable ones become failures."""
    if not paths:
        raise UsageError("no images given (pass files, folders, or - to read paths from stdin)")
    run, model, _ = _load(ref, {"classify", "contrastive"}, device)
    loaded, stacked = _read_images(paths)
    dim = int(getattr(model, "feature_dim", 0))
    vectors = embed_images(model, stacked) if len(stacked) else np.zeros((0, dim), dtype=np.float32)
    ok_paths = [p for p, item in loaded if not isinstance(item, ImageError)]
    failures = [Failure(p, str(item)) for p, item in loaded if isinstance(item, ImageError)]
    return EmbedReport(run, ok_paths, vectors, failures)


def save_embeddings(report: EmbedReport, output: str | Path, fmt: str | None = None) -> Path:
    """Write the vectors atomically as .npy (float32, rows in input order) or CSV (path, then the values).

    `fmt` defaults to the file's extension (.csv -> csv, anything else -> npy).
    """
    fmt = fmt or ("csv" if Path(output).suffix.lower() == ".csv" else "npy")
    if fmt == "npy":
        return atomic_write(output, lambda f: np.save(f, report.vectors.astype(np.float32)))
    if fmt == "csv":
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["path", *(f"e{i}" for i in range(report.vectors.shape[1]))])
        writer.writerows([p, *(f"{v:.6g}" for v in row)] for p, row in zip(report.paths, report.vectors, strict=True))
        # surrogateescape: a file name that is not valid UTF-8 is written back as the same bytes
        return atomic_write(output, lambda f: f.write(text.getvalue().encode("utf-8", "surrogateescape")))
    raise UsageError(f"unknown format {fmt!r} (choose npy or csv)")


def checkpoints() -> list[store.Run]:
    """The user's runs (oldest first), then the bundled ones first."""
    return store.list_runs(include_bundled=True)


def remove_checkpoint(name: str) -> store.Run:
    """Delete a run from the store; returns it."""
    return store.remove(name)
