"""`mnist read`: every digit in an image, left to right, read as one number.

Each image is turned into an ink map (data/images.py), cut into digit crops (data/segment.py),
each crop fitted to 28x28 like a single digit for `predict`, and all crops classified in batches.
Unreadable or blank images become `Failure`s and the rest still go through, in input order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from mnistcli import store
from mnistcli.api.common import in_input_order, load_checkpoint
from mnistcli.data.images import BLANK, extract_ink, fit_digit, open_gray
from mnistcli.data.segment import segment
from mnistcli.errors import ImageError, UsageError
from mnistcli.families import families_where, family_names, get_family
from mnistcli.protocols.inference import predict_proba
from mnistcli.reports import Failure

NO_IMAGES = "no images given (pass files, folders, or - to read paths from stdin)"
CHUNK = 256  # images segmented before one classification pass: bounds memory on big folders
Box = tuple[int, int, int, int]  # x, y, width, height in the image's pixels


@dataclass
class ReadDigit:
    """One digit of a number: what it is, how sure the model is, and where it is."""

    digit: int
    confidence: float
    box: Box


@dataclass
class Reading:
    """The number read in one image."""

    path: str
    digits: list[ReadDigit]

    @property
    def text(self) -> str:
        return "".join(str(d.digit) for d in self.digits)

    @property
    def confidence(self) -> float:
        """The least confident digit's confidence: how far the whole number can be trusted."""
        return min(d.confidence for d in self.digits)


@dataclass
class ReadReport:
    run: store.Run
    results: list[Reading | Failure] = field(default_factory=list)

    @property
    def failures(self) -> list[Failure]:
        return [r for r in self.results if isinstance(r, Failure)]


def digit_crops(path: str) -> tuple[list[Box], np.ndarray]:
    """An image file -> (digit boxes left to right, their 28x28 MNIST-style arrays (n, 28, 28)).

    Raises `ImageError` naming the file if it cannot be read or holds no digit.
    """
    boxes, arrays = [], []
    for crop in segment(extract_ink(open_gray(path))):
        fitted = fit_digit(crop.ink)
        if fitted is not None:
            boxes.append(crop.box)
            arrays.append(fitted)
    if not arrays:
        raise ImageError(path, BLANK)
    return boxes, np.stack(arrays)


def read(paths: Sequence[str], ref: str | None = None, device: str = "auto") -> ReadReport:
    """Read the number in each image with a classifier (default: the latest classify run, else the bundled cnn).

    Raises `UsageError` if no paths are given, `CheckpointError` if the checkpoint cannot be used.
    """
    if not paths:
        raise UsageError(NO_IMAGES)
    classifiers = families_where(lambda f: f.classifies)
    suggest = next(get_family(n).suggested_model for n in family_names() if n in classifiers)
    run, model, _ = load_checkpoint(ref, classifiers, device, suggest=suggest)
    report = ReadReport(run)
    for start in range(0, len(paths), CHUNK):
        report.results += _read_chunk(model, paths[start : start + CHUNK], run.temperature)
    return report


def _read_chunk(model: torch.nn.Module, paths: Sequence[str], temperature: float) -> list[Reading | Failure]:
    """Segment and read `paths`, classifying all their digits in one pass (calibrated by `temperature`)."""
    found: list[tuple[str, tuple[list[Box], np.ndarray] | ImageError]] = []
    for path in paths:
        try:
            found.append((path, digit_crops(path)))
        except ImageError as e:
            found.append((path, e))

    def read_all(readable: list[str], crops: list[tuple[list[Box], np.ndarray]]) -> list[Reading]:
        probs = predict_proba(model, np.concatenate([arrays for _, arrays in crops]), temperature)
        each = np.split(probs, np.cumsum([len(boxes) for boxes, _ in crops])[:-1])  # one block of rows per image
        return [
            Reading(path, [ReadDigit(int(p.argmax()), float(p.max()), box) for box, p in zip(boxes, rows, strict=True)])
            for path, (boxes, _), rows in zip(readable, crops, each, strict=True)
        ]

    return in_input_order(found, read_all)
