"""The adder family: each image paired with a number 0-9; cross-entropy on the digit and on the sum.

Training draws a fresh number for every image every epoch from the run's generator; held-out
data gets a fixed number per image from `held_out_numbers(n, seed)`, so every evaluation of a
checkpoint with one seed (training's own test, calibration, `mnist eval`) sees the same pairs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mnistcli.data.augment import random_affine
from mnistcli.data.tensors import TensorData, to_float
from mnistcli.engine.loop import Step
from mnistcli.errors import UsageError
from mnistcli.families import register_family
from mnistcli.families.base import (
    Data,
    EvalData,
    EvalOptions,
    Family,
    PredictOptions,
    TestResult,
    trained_digits,
)
from mnistcli.protocols import calibration
from mnistcli.protocols.export import ADDER
from mnistcli.protocols.inference import EVAL_BATCH, eval_mode, map_batches
from mnistcli.reports import AdderReport, SumPrediction
from mnistcli.work import WorkFn, phase


def held_out_numbers(n: int, seed: int) -> torch.Tensor:
    """The fixed numbers 0-9 paired with `n` held-out images under `seed`."""
    return torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(seed))


@dataclass
class AdderParams:
    label_smoothing: float = 0.0  # cross-entropy label smoothing, on both heads
    calibrate: bool = True  # fit a temperature to each head on held-out training images (api/calibrating.py)

    def __post_init__(self) -> None:
        if not 0.0 <= self.label_smoothing < 1.0:
            raise UsageError("--label-smoothing must be in [0, 1)")


@register_family
class AdderFamily(Family):
    """Digit and sum cross-entropy (summed); "accuracy" is sum accuracy, the network's final answer."""

    exported = ADDER

    name = "adder"
    Params = AdderParams
    calibrated = True
    train_label = val_label = "sum accuracy"
    test_label = "test sum accuracy"
    eval_options = frozenset({"seed"})
    offers_fewshot = False
    predicts = True
    predict_options = frozenset({"add"})
    suggested_model = "adder"
    numbers: torch.Tensor | None = None

    def begin_epoch(self, generator: torch.Generator, epoch: int, model: nn.Module) -> None:
        """A fresh number for every training image."""
        assert self.train is not None
        self.numbers = torch.randint(0, 10, (len(self.train),), generator=generator).to(self.train.labels.device)

    def batch(self, index: Any) -> Any:
        """(images, digits, numbers added)."""
        assert self.train is not None and self.numbers is not None
        return to_float(self.train.images[index]), self.train.labels[index], self.numbers[index]

    def augment(self, batch: Any) -> Any:
        """A random affine of every image, if augmenting."""
        x, digits, numbers = batch
        return (random_affine(x, self.generator) if self.config.augment else x), digits, numbers

    def step(self, model: nn.Module, batch: Any) -> Step:
        """Cross-entropy of the digit plus cross-entropy of the sum; accuracy = correct sums."""
        x, digits, numbers = batch
        digit_logits, sum_logits = model(x, numbers)
        smoothing = self.params.label_smoothing
        sums = digits + numbers
        loss = F.cross_entropy(digit_logits, digits, label_smoothing=smoothing) + F.cross_entropy(
            sum_logits, sums, label_smoothing=smoothing
        )
        return Step(loss, {"accuracy": (sum_logits.argmax(dim=1) == sums).sum()}, len(digits))

    def held_out(self, model: nn.Module, data: TensorData) -> AdderEval:
        """The model on `data`, image i paired with the run seed's fixed number i."""
        return evaluate_adder(model, data, held_out_numbers(len(data), self.config.seed))

    def validate(self, model: nn.Module, data: TensorData) -> dict[str, float]:
        """Loss, sum accuracy (`accuracy`) and digit accuracy on `data`, with the seed's fixed numbers."""
        result = self.held_out(model, data)
        return {"loss": result.loss, "accuracy": result.sum_accuracy, "digit_accuracy": result.digit_accuracy}

    def test(self, model: nn.Module, data: Data, on_work: WorkFn | None = None) -> TestResult:
        """Sum and digit accuracy on the test images, each paired with the seed's fixed number, as `mnist eval` does."""
        with phase(on_work, "testing"):
            result = self.held_out(model, data.test)
        return TestResult(result.sum_accuracy, result.loss, "sum accuracy", {"digit_accuracy": result.digit_accuracy})

    def evaluate(
        self, run: Any, model: nn.Module, data: EvalData, options: EvalOptions, on_work: WorkFn | None = None
    ) -> AdderReport:
        """Digit and sum accuracy on the test images of its digits, each paired with a number drawn from `options.seed`
        (by default the training seed, so the result is training's own), the sum by number added and by true sum."""
        seed = run.info.seed if options.seed is None else options.seed
        test = trained_digits(data.test(), run.info.data.classes)
        t0 = time.perf_counter()
        numbers = held_out_numbers(len(test), seed)
        with phase(on_work, "testing"):
            result = evaluate_adder(model, test, numbers)
        assert result.digit_logits is not None and result.sum_logits is not None
        digits = test.labels.cpu()
        sums = calibration.errors(result.sum_logits, digits + numbers, run.sum_temperature)
        digit = calibration.errors(result.digit_logits, digits, run.temperature)
        return AdderReport(
            run,
            result.digit_accuracy,
            result.sum_accuracy,
            result.loss,
            _rows("number", result.by_number),
            _rows("sum", result.by_sum),
            result.total,
            seed,
            time.perf_counter() - t0,
            data.device,
            temperature=run.temperature,
            sum_temperature=run.sum_temperature,
            ece=sums["ece"],
            ece_uncalibrated=sums["ece_uncalibrated"],
            digit_ece=digit["ece"],
            digit_ece_uncalibrated=digit["ece_uncalibrated"],
        )

    def calibrate(self, model: nn.Module, held: TensorData) -> dict[str, Any]:
        """The digit head's fit at the top level, the sum head's under `sum`."""
        result = self.held_out(model, held)
        digits = held.labels.cpu()
        assert result.digit_logits is not None and result.sum_logits is not None
        entry = calibration.head_entry(result.digit_logits, digits)
        entry["sum"] = calibration.head_entry(result.sum_logits, digits + held_out_numbers(len(held), self.config.seed))
        return entry

    @classmethod
    def check_predict(cls, run_name: str, options: PredictOptions) -> None:
        if options.add is None:
            raise UsageError(f"{run_name} is an adder: give the number to add with --add N (0-9)")

    def predict(
        self, run: Any, model: nn.Module, paths: Sequence[str], images: np.ndarray, options: PredictOptions
    ) -> list[SumPrediction]:
        """The digit and the sum with `options.add`, each head calibrated by its own temperature."""
        assert options.add is not None  # check_predict
        digit_p, sum_p = predict_adder(model, images, options.add, run.temperature, run.sum_temperature)
        return [SumPrediction.of(path, options.add, d, s) for path, d, s in zip(paths, digit_p, sum_p, strict=True)]


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


@torch.inference_mode()
def evaluate_adder(
    model: nn.Module, data: TensorData, numbers: torch.Tensor, batch_size: int = EVAL_BATCH
) -> AdderEval:
    """Evaluate an adder on `data`, image i paired with `numbers[i]` (0-9)."""
    numbers = numbers.to(data.labels.device)
    loss_sum = torch.zeros((), device=data.labels.device)
    digit_hits, sum_hits, digit_out, sum_out = [], [], [], []
    with eval_mode(model):
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

    out = map_batches(model, both, images, batch_size)
    return out[:, :10], out[:, 10:]


def _rows(key: str, counts: list[tuple[int, int]]) -> list[dict[str, Any]]:
    """One row per number or sum; accuracy None where there were no test images of it."""
    return [{key: i, "correct": c, "total": t, "accuracy": c / t if t else None} for i, (c, t) in enumerate(counts)]
