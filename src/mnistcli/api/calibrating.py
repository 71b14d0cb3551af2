"""The calibration step of `mnist train`: which held-out images fit a family's temperature, and the entry it makes.

Every calibrated family (classifiers, and the adder's two heads) is calibrated at the end of
training by temperature scaling on images held out from the TRAINING set, never the test set:

- with a validation split (`--val-split`, or `--early-stopping`'s default 0.1), on it;
- otherwise on `calibration.SPLIT` (5%) of the training images, drawn from the run's seeded
  generator before training starts (so a seed gives the same split and the same T);
- `--no-calibrate` holds nothing out and stores T = 1 (the raw softmax), as do runs too small to
  hold out `calibration.MIN_IMAGES` images and runs with no misclassified held-out image (then
  nothing bounds T from below). A validation split of fewer than MIN_IMAGES is not used either.

The result is the `calibration` object of meta.json (docs/formats.md); the family fits each head.
"""

from __future__ import annotations

from typing import Any

import torch

from mnistcli.data.tensors import TensorData
from mnistcli.families import Family
from mnistcli.protocols import calibration


def wanted(family: Family) -> bool:
    """Whether this run fits a temperature (a calibrated family, without --no-calibrate)."""
    return family.calibrated and bool(getattr(family.params, "calibrate", True))


def hold_out(
    family: Family, train: TensorData, val: TensorData | None, generator: torch.Generator
) -> tuple[TensorData, TensorData | None, str | None]:
    """(the images left to train on, the held-out images to fit T on or None, "validation" or "calibration")."""
    if not wanted(family):
        return train, None, None
    if val is not None:
        return (train, val, "validation") if len(val) >= calibration.MIN_IMAGES else (train, None, None)
    if round(len(train) * calibration.SPLIT) < calibration.MIN_IMAGES:
        return train, None, None
    rest, held = train.split(calibration.SPLIT, generator)
    return rest, held, "calibration"


def fit(model: torch.nn.Module, family: Family, held: TensorData | None, source: str | None) -> dict[str, Any] | None:
    """The `calibration` entry of meta.json for a trained model (None for a family without probabilities)."""
    if not family.calibrated:
        return None
    if held is None:
        why = "--no-calibrate" if not wanted(family) else f"fewer than {calibration.MIN_IMAGES} held-out images"
        return {"method": "temperature", "temperature": 1.0, "fitted_on": None, "note": why}
    return {"method": "temperature", **family.calibrate(model, held), "fitted_on": source}
