"""Inference over tensors: evaluate a classifier, predict probabilities, extract features; eval mode in one place.

Everything here runs in eval mode under `torch.inference_mode`, in batches, on the model's device,
and returns plain Python/numpy results. No file I/O, no printing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mnistcli.data.tensors import TensorData

# Images per forward pass when not training. Smaller batches looked faster alone (the test set at 256 in 0.22 s
# against 0.32 s at 1,000, fp32, cnn-fast), but whole `mnist train cnn-fast --target-accuracy 0.99` runs were not:
# medians of 10 alternating runs 5.36 s at 1,000, 5.87 s at 500, 6.07 s at 250 (docs/benchmarks.md).
EVAL_BATCH = 1000


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


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """`model` in eval mode (batch norm frozen, dropout off) inside the block, its own mode again after it."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a parameter-less model)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


@torch.inference_mode()
def evaluate_classifier(model: nn.Module, data: TensorData, batch_size: int = EVAL_BATCH) -> ClassifierEval:
    """Evaluate on `data`: mean cross-entropy, accuracy, confusion matrix and predictions."""
    loss_sum = torch.zeros((), device=data.labels.device)
    outputs = []
    with eval_mode(model):
        for x, y in data.batches(batch_size):
            logits = model(x)
            loss_sum += F.cross_entropy(logits, y, reduction="sum")
            outputs.append(logits.float())
    all_logits = torch.cat(outputs) if outputs else torch.zeros(0, 10, device=data.labels.device)
    return score_logits(all_logits, data.labels, float(loss_sum))


def score_logits(logits: torch.Tensor, labels: torch.Tensor, loss_sum: float | None = None) -> ClassifierEval:
    """Accuracy, loss, confusion matrix and predictions of logits (N, 10) for `labels` (N,) (`loss_sum`: the summed
    cross-entropy when the caller has it, else it is computed here)."""
    labels = labels.to(logits.device)
    if loss_sum is None:
        loss_sum = float(F.cross_entropy(logits.float(), labels, reduction="sum")) if len(labels) else 0.0
    predictions = logits.argmax(dim=1)
    n_classes = 10
    confusion = torch.bincount(labels * n_classes + predictions, minlength=n_classes * n_classes)
    confusion_np = confusion.reshape(n_classes, n_classes).cpu().numpy()
    total = len(labels)
    correct = int(np.trace(confusion_np))
    return ClassifierEval(
        accuracy=correct / total if total else 0.0,
        loss=loss_sum / total if total else 0.0,
        confusion=confusion_np,
        predictions=predictions.cpu().numpy(),
        total=total,
        logits=logits.float().cpu().numpy(),
    )


# Test-time augmentation (`--tta`): the image and four copies shifted by one pixel, their logits averaged.
SHIFTS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))  # (down, right) in pixels


def shifted(x: torch.Tensor, down: int, right: int) -> torch.Tensor:
    """Images (N, C, H, W) moved by whole pixels, the edge that comes in blank (0) and the one going out dropped."""
    if down == 0 and right == 0:
        return x
    h, w = x.shape[-2:]
    padded = F.pad(x, (max(right, 0), max(-right, 0), max(down, 0), max(-down, 0)))
    top, left = max(-down, 0), max(-right, 0)
    return padded[..., top : top + h, left : left + w]


class ShiftAveraged(nn.Module):
    """A classifier under test-time augmentation: the mean of its logits over `SHIFTS` (five forward passes).

    Averaging logits (not probabilities) keeps the checkpoint's temperature meaningful: it still
    divides logits. `features` are the model's own, unshifted."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.feature_dim = int(getattr(model, "feature_dim", 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.model(shifted(x, dy, dx)).float() for dy, dx in SHIFTS]).mean(0)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(x)  # type: ignore[operator, no-any-return]


def with_tta(model: nn.Module, tta: bool) -> nn.Module:
    """`model`, or `model` under test-time augmentation when `tta`: `ShiftAveraged`, or for an ensemble each of its
    members so (their calibrated probabilities then vote, as without it)."""
    if not tta:
        return model
    map_members = getattr(model, "map_members", None)  # an ensemble (models/ensemble.py)
    return map_members(ShiftAveraged) if callable(map_members) else ShiftAveraged(model)  # type: ignore[no-any-return]


FeatureFn = Callable[[torch.Tensor], torch.Tensor]  # images (N, 1, 28, 28) in [0, 1] -> features (N, D)


def frozen(model: nn.Module) -> FeatureFn:
    """`model.features` as a function that runs in eval mode (batch norm frozen, dropout off) and leaves
    the model in the mode it was in: a frozen encoder for a probe, or for `dataset_features`."""
    features: FeatureFn = model.features  # type: ignore[assignment]

    def run(x: torch.Tensor) -> torch.Tensor:
        with eval_mode(model):
            return features(x)

    return run


@torch.inference_mode()
def dataset_features(
    source: nn.Module | FeatureFn,
    data: TensorData,
    batch_size: int = EVAL_BATCH,
    on_images: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Features (N, D) of every image in `data`, in order, float32 on the data's device.

    `source` is a model (its `features`, in eval mode: see `frozen`) or any feature function, such as
    the raw pixels. `on_images(n)` hears of each batch of `n` images done (progress for the caller to show).
    """
    features = frozen(source) if isinstance(source, nn.Module) else source
    out = []
    for x, _ in data.batches(batch_size):
        out.append(features(x).float())
        if on_images is not None:
            on_images(len(x))
    return torch.cat(out)


def map_batches(
    model: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor], images: np.ndarray, batch_size: int
) -> np.ndarray:
    """Apply `fn` to float images (N, 28, 28) in [0, 1], batch by batch on the model's device."""
    device = model_device(model)
    out = []
    with torch.inference_mode(), eval_mode(model):
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
    return map_batches(model, lambda x: torch.softmax(model(x) / temperature, dim=1), images, batch_size)


def image_features(model: nn.Module, images: np.ndarray, batch_size: int = EVAL_BATCH) -> np.ndarray:
    """Feature vectors (N, D) from `model.features` for float images (N, 28, 28) in [0, 1]; N >= 1."""
    features: Callable[[torch.Tensor], torch.Tensor] = model.features  # type: ignore[assignment]
    return map_batches(model, features, images, batch_size)
