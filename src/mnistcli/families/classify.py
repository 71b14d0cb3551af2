"""Classification: cross-entropy on the ten digits, accuracy as the metric, a calibrated softmax."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch.nn.functional as F
from torch import nn

from mnistcli.data.augment import random_affine, real_world_view
from mnistcli.data.tensors import TensorData
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
    classifier_report,
    trained_digits,
)
from mnistcli.protocols import calibration
from mnistcli.protocols.export import LOGITS
from mnistcli.protocols.inference import evaluate_classifier, predict_proba, with_tta
from mnistcli.reports import EvalReport, Prediction
from mnistcli.work import WorkFn, phase


@dataclass
class ClassifyParams:
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    robust_augment: bool = False  # with augment: also slant, pen width and blur (real-world input)
    calibrate: bool = True  # fit a temperature to the softmax on held-out training images (api/calibrating.py)

    def __post_init__(self) -> None:
        if not 0.0 <= self.label_smoothing < 1.0:
            raise UsageError("--label-smoothing must be in [0, 1)")


@register_family
class ClassifyFamily(Family):
    """Softmax classification of digits (label smoothing and whole-batch augmentation while training)."""

    exported = LOGITS

    name = "classify"
    Params = ClassifyParams
    calibrated = True
    per_image_validation = True
    predicts = True
    suggested_model = "cnn"
    classifies = True
    validate_is_test = True
    eval_options = frozenset({"tta"})

    def augment(self, batch: Any) -> Any:
        """A random affine of every image (with --robust-augment, slant, pen width and blur too), if augmenting."""
        x, y = batch
        if self.config.augment:
            x = real_world_view(x, self.generator) if self.params.robust_augment else random_affine(x, self.generator)
        return x, y

    def step(self, model: nn.Module, batch: Any) -> Step:
        """Mean cross-entropy and the count of correct argmax predictions."""
        x, y = batch
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.params.label_smoothing)
        return Step(loss, {"accuracy": (logits.argmax(dim=1) == y).sum()}, len(y))

    def validate(self, model: nn.Module, data: TensorData) -> dict[str, float]:
        """Plain (unsmoothed) loss and accuracy on `data`."""
        result = evaluate_classifier(model, data)
        return {"loss": result.loss, "accuracy": result.accuracy}

    def test(self, model: nn.Module, data: Data, on_work: WorkFn | None = None) -> TestResult:
        """Accuracy and loss on the test images of the trained digits (what `mnist eval` reports)."""
        with phase(on_work, "testing"):
            result = evaluate_classifier(model, data.test)
        return TestResult(result.accuracy, result.loss, "accuracy")

    def evaluate(
        self, run: Any, model: nn.Module, data: EvalData, options: EvalOptions, on_work: WorkFn | None = None
    ) -> EvalReport:
        """Accuracy, per-digit table, confusion matrix and calibration error on the test images of its digits."""
        test = data.test()
        classes = run.info.data.classes
        subset = trained_digits(test, classes)
        t0 = time.perf_counter()
        with phase(on_work, "testing"):
            result = evaluate_classifier(with_tta(model, options.tta), subset)
        assert result.logits is not None
        errors = calibration.errors(result.logits, subset.labels.cpu(), run.temperature)
        return classifier_report(
            run,
            result,
            time.perf_counter() - t0,
            data.device,
            classes=list(classes) if len(subset) < len(test) else None,
            temperature=run.temperature,
            ece=errors["ece"],
            ece_uncalibrated=errors["ece_uncalibrated"],
            tta=options.tta,
        )

    def calibrate(self, model: nn.Module, held: TensorData) -> dict[str, Any]:
        logits = evaluate_classifier(model, held).logits
        assert logits is not None
        return calibration.head_entry(logits, held.labels.cpu())

    def predict(
        self, run: Any, model: nn.Module, paths: Sequence[str], images: np.ndarray, options: PredictOptions
    ) -> list[Prediction]:
        """The digit, its probability and every digit's: softmax(logits / the checkpoint's temperature), the logits
        averaged over shifted copies with `options.tta`."""
        probabilities = predict_proba(with_tta(model, options.tta), images, run.temperature)
        return [Prediction.of(path, p) for path, p in zip(paths, probabilities, strict=True)]
