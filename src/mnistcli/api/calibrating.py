"""The calibration step of `mnist train`: which held-out images fit a classifier's temperature, and the fit.

Every classifier (and the adder's two heads) is calibrated at the end of training by temperature
scaling on images held out from the TRAINING set, never the test set:

- with a validation split (`--val-split`, or `--early-stopping`'s default 0.1), on it;
- otherwise on `calibration.SPLIT` (5%) of the training images, drawn from the run's seeded
  generator before training starts (so a seed gives the same split and the same T);
- `--no-calibrate` holds nothing out and stores T = 1 (the raw softmax), as do runs too small to
  hold out `calibration.MIN_IMAGES` images and runs with no misclassified held-out image (then
  nothing bounds T from below). A validation split of fewer than MIN_IMAGES is not used either.

The result is the `calibration` object of meta.json (docs/formats.md).
"""

from __future__ import annotations

from typing import Any

import torch

from mnistcli.config import TrainConfig
from mnistcli.data.tensors import TensorData
from mnistcli.families.adder import held_out_numbers
from mnistcli.protocols import calibration
from mnistcli.protocols.inference import evaluate_adder, evaluate_classifier

TASKS = ("classify", "adder")  # the tasks whose outputs are class probabilities


def hold_out(
    task: str, config: TrainConfig, train: TensorData, val: TensorData | None, generator: torch.Generator
) -> tuple[TensorData, TensorData | None, str | None]:
    """(the images left to train on, the held-out images to fit T on or None, "validation" or "calibration")."""
    if task not in TASKS or not config.calibrate:
        return train, None, None
    if val is not None:
        return (train, val, "validation") if len(val) >= calibration.MIN_IMAGES else (train, None, None)
    if round(len(train) * calibration.SPLIT) < calibration.MIN_IMAGES:
        return train, None, None
    rest, held = train.split(calibration.SPLIT, generator)
    return rest, held, "calibration"


def _entry(fit: calibration.TemperatureFit) -> dict[str, Any]:
    return {
        "temperature": fit.temperature,
        "images": fit.images,
        "mistakes": fit.mistakes,
        "nll_before": fit.nll_before,
        "nll_after": fit.nll_after,
        "ece_before": fit.ece_before,
        "ece_after": fit.ece_after,
    }


def _fit_or_not(fit: calibration.TemperatureFit) -> dict[str, Any]:
    """The meta entry of one head: the fit, or T = 1 where the held-out images cannot bound T."""
    if fit.mistakes >= calibration.MIN_MISTAKES:
        return _entry(fit)
    return {
        **_entry(fit),
        "temperature": 1.0,
        "nll_after": fit.nll_before,
        "ece_after": fit.ece_before,
        "note": f"no misclassified image among {fit.images} held out: nothing bounds T from below, so T = 1",
    }


def fit(
    model: torch.nn.Module, task: str, config: TrainConfig, held: TensorData | None, source: str | None
) -> dict[str, Any] | None:
    """The `calibration` entry of meta.json for a trained model (None for tasks without probabilities).

    For an adder, the top-level temperature is its digit head's and `sum` holds its sum head's,
    each test image paired with the numbers `mnist eval` pairs held-out images with.
    """
    if task not in TASKS:
        return None
    if held is None:
        why = "--no-calibrate" if not config.calibrate else f"fewer than {calibration.MIN_IMAGES} held-out images"
        return {"method": "temperature", "temperature": 1.0, "fitted_on": None, "note": why}
    if task == "adder":
        result = evaluate_adder(model, held, held_out_numbers(len(held), config.seed))
        digits, sums = held.labels.cpu(), held.labels.cpu() + held_out_numbers(len(held), config.seed)
        assert result.digit_logits is not None and result.sum_logits is not None
        head = _fit_or_not(calibration.calibrate(result.digit_logits, digits))
        head["sum"] = _fit_or_not(calibration.calibrate(result.sum_logits, sums))
    else:
        logits = evaluate_classifier(model, held).logits
        assert logits is not None
        head = _fit_or_not(calibration.calibrate(logits, held.labels.cpu()))
    return {"method": "temperature", **head, "fitted_on": source}
