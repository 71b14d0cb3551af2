"""Inference over tensors: evaluate a classifier, predict probabilities, extract embeddings.

Everything here runs in eval mode under `torch.inference_mode`, in batches, on the model's device,
and returns plain Python/numpy results. No file I/O, no printing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mnistcli.data.tensors import TensorData

EVAL_BATCH = 1000  # images per forward pass when not training (memory, not accuracy, bound)


@dataclass
class ClassifierEval:
    """Accuracy and loss of a classifier, with the 10x10 confusion matrix (rows: true digit)."""

    accuracy: float
    loss: float
    confusion: np.ndarray  # (10, 10) int64, confusion[true, predicted]
    predictions: np.ndarray  # (N,) int64
    total: int
    logits: np.ndarray | None = None  # (N, classes) float32, for calibration (temperature, ECE)

    def per_class(self) -> list[dict[str, float | int | None]]:
        """For each digit: correct, total and accuracy (None when there were no test images of it)."""
        rows = []
        for digit in range(self.confusion.shape[0]):
            total = int(self.confusion[digit].sum())
            correct = int(self.confusion[digit, digit])
            rows.append(
                {"digit": digit, "correct": correct, "total": total, "accuracy": correct / total if total else None}
            )
        return rows


@dataclass
class AdderEval:
    """Digit and sum accuracy of an adder, with the sum's correct/total by number added and by true sum."""

    digit_accuracy: float
    sum_accuracy: float
    loss: float  # mean digit cross-entropy + sum cross-entropy
    by_number: list[tuple[int, int]]  # (correct sums, total) for each number 0-9
    by_sum: list[tuple[int, int]]  # (correct sums, total) for each true sum 0-18
    total: int
    digit_logits: np.ndarray | None = None  # (N, 10) float32, for calibration
    sum_logits: np.ndarray | None = None  # (N, 19) float32


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a parameter-less model)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


@torch.inference_mode()
def evaluate_classifier(model: nn.Module, data: TensorData, batch_size: int = EVAL_BATCH) -> ClassifierEval:
    """Evaluate on `data`: mean cross-entropy, accuracy, confusion matrix and predictions."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=data.labels.device)
    outputs = []
    for x, y in data.batches(batch_size):
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        outputs.append(logits.float())
    model.train(was_training)
    all_logits = torch.cat(outputs) if outputs else torch.zeros(0, 10, device=data.labels.device)
    predictions = all_logits.argmax(dim=1)
    n_classes = 10
    confusion = torch.bincount(data.labels * n_classes + predictions, minlength=n_classes * n_classes)
    confusion_np = confusion.reshape(n_classes, n_classes).cpu().numpy()
    total = len(data)
    correct = int(np.trace(confusion_np))
    return ClassifierEval(
        accuracy=correct / total if total else 0.0,
        loss=float(loss_sum) / total if total else 0.0,
        confusion=confusion_np,
        predictions=predictions.cpu().numpy(),
        total=total,
        logits=all_logits.cpu().numpy(),
    )


@torch.inference_mode()
def embed_data(
    model: nn.Module,
    data: TensorData,
    batch_size: int = EVAL_BATCH,
    on_images: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """`model.features` of every image in `data`, (N, D) on the data's device, in eval mode.

    `on_images(n)` hears of each batch of `n` images done (progress for the caller to show).
    """
    was_training = model.training
    model.eval()
    features: Callable[[torch.Tensor], torch.Tensor] = model.features  # type: ignore[assignment]
    out = []
    for x, _ in data.batches(batch_size):
        out.append(features(x).float())
        if on_images is not None:
            on_images(len(x))
    model.train(was_training)
    return torch.cat(out)


@torch.inference_mode()
def evaluate_adder(
    model: nn.Module, data: TensorData, numbers: torch.Tensor, batch_size: int = EVAL_BATCH
) -> AdderEval:
    """Evaluate an adder on `data`, image i paired with `numbers[i]` (0-9)."""
    was_training = model.training
    model.eval()
    numbers = numbers.to(data.labels.device)
    loss_sum = torch.zeros((), device=data.labels.device)
    digit_hits, sum_hits, digit_out, sum_out = [], [], [], []
    for start, (x, y) in zip(range(0, len(data), batch_size), data.batches(batch_size), strict=True):
        n = numbers[start : start + len(y)]
        digit_logits, sum_logits = model(x, n)
        loss_sum += F.cross_entropy(digit_logits, y, reduction="sum") + F.cross_entropy(
            sum_logits, y + n, reduction="sum"
        )
        digit_hits.append(digit_logits.argmax(dim=1) == y)
        sum_hits.append(sum_logits.argmax(dim=1) == y + n)
        digit_out.append(digit_logits.float())
        sum_out.append(sum_logits.float())
    model.train(was_training)
    total = len(data)
    if not total:
        empty = np.zeros((0, 10), np.float32), np.zeros((0, 19), np.float32)
        return AdderEval(0.0, 0.0, 0.0, [(0, 0)] * 10, [(0, 0)] * 19, 0, *empty)
    digit_ok, sum_ok = torch.cat(digit_hits), torch.cat(sum_hits)
    sums = data.labels + numbers

    def breakdown(key: torch.Tensor, size: int) -> list[tuple[int, int]]:
        correct = torch.bincount(key[sum_ok], minlength=size).tolist()
        totals = torch.bincount(key, minlength=size).tolist()
        return list(zip(correct, totals, strict=True))

    return AdderEval(
        float(digit_ok.float().mean()),
        float(sum_ok.float().mean()),
        float(loss_sum) / total,
        breakdown(numbers, 10),
        breakdown(sums, 19),
        total,
        torch.cat(digit_out).cpu().numpy(),
        torch.cat(sum_out).cpu().numpy(),
    )


def predict_adder(
    model: nn.Module,
    images: np.ndarray,
    number: int,
    temperature: float = 1.0,
    sum_temperature: float = 1.0,
    batch_size: int = EVAL_BATCH,
) -> tuple[np.ndarray, np.ndarray]:
    """(digit probabilities (N, 10), sum probabilities (N, 19)) for float images (N, 28, 28) plus `number`; N >= 1.

    Each head's logits are divided by its temperature (the checkpoint's calibration) before the softmax.
    """

    def both(x: torch.Tensor) -> torch.Tensor:
        digit_logits, sum_logits = model(x, torch.full((len(x),), number, dtype=torch.long, device=x.device))
        return torch.cat(
            [torch.softmax(digit_logits / temperature, dim=1), torch.softmax(sum_logits / sum_temperature, dim=1)],
            dim=1,
        )

    out = _map_batches(model, both, images, batch_size)
    return out[:, :10], out[:, 10:]


def _map_batches(
    model: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor], images: np.ndarray, batch_size: int
) -> np.ndarray:
    """Apply `fn` to float images (N, 28, 28) in [0, 1], batch by batch on the model's device."""
    model.eval()
    device = model_device(model)
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size], dtype=np.float32))
            out.append(fn(x.unsqueeze(1).to(device)).float().cpu())
    return torch.cat(out).numpy()


def predict_proba(
    model: nn.Module, images: np.ndarray, temperature: float = 1.0, batch_size: int = EVAL_BATCH
) -> np.ndarray:
    """Class probabilities softmax(logits / temperature) (N, classes) for float images (N, 28, 28) in [0, 1].

    `temperature` is the checkpoint's calibration (`store.Run.temperature`); N must be >= 1.
    """
    return _map_batches(model, lambda x: torch.softmax(model(x) / temperature, dim=1), images, batch_size)


def embed(model: nn.Module, images: np.ndarray, batch_size: int = EVAL_BATCH) -> np.ndarray:
    """Feature vectors (N, D) from `model.features` for float images (N, 28, 28) in [0, 1]; N >= 1."""
    features: Callable[[torch.Tensor], torch.Tensor] = model.features  # type: ignore[assignment]
    return _map_batches(model, features, images, batch_size)
