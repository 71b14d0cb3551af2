"""`mnist read`: every digit in an image, left to right, read as one number.

Each image is turned into an ink map (data/images.py), cut into digit crops (data/segment.py),
each crop fitted to 28x28 like a single digit for `predict`, and all crops classified in batches.
No torch at import: the fast path (api/serving.py) reads with onnxruntime through `read_with`.
Unreadable or blank images become `Failure`s and the rest still go through, in input order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from mnistcli.api.common import in_input_order, load_checkpoint
from mnistcli.data.images import BLANK, extract_ink, fit_digit, open_gray
from mnistcli.data.segment import segment
from mnistcli.errors import ImageError, UsageError
from mnistcli.reports import Box, Failure, ReadDigit, Reading, ReadReport
from mnistcli.store import Run

NO_IMAGES = "no images given (pass files, folders, or - to read paths from stdin)"
CHUNK = 256  # images segmented before one classification pass: bounds memory on big folders


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
    """Read the number in each image with a classifier (default: the latest classify run, else the bundled cnn), on
    torch (api/serving.py reads with onnxruntime when it can).

    Raises `UsageError` if no paths are given, `CheckpointError` if the checkpoint cannot be used.
    """
    from mnistcli.families import families_where, family_names, get_family
    from mnistcli.protocols.inference import predict_proba

    if not paths:
        raise UsageError(NO_IMAGES)
    classifiers = families_where(lambda f: f.classifies)
    suggest = next(get_family(n).suggested_model for n in family_names() if n in classifiers)
    run, model, _ = load_checkpoint(ref, classifiers, device, suggest=suggest)
    return read_with(run, paths, lambda images: predict_proba(model, images, run.temperature))


def read_with(run: Run, paths: Sequence[str], probabilities: Callable[[np.ndarray], np.ndarray]) -> ReadReport:
    """Read `paths` with `probabilities` (float digits (N, 28, 28) in [0, 1] -> calibrated class probabilities
    (N, 10)), in chunks of `CHUNK` images: what torch and onnxruntime share."""
    report = ReadReport(run)
    for start in range(0, len(paths), CHUNK):
        report.results += _read_chunk(probabilities, paths[start : start + CHUNK])
    return report


def _read_chunk(probabilities: Callable[[np.ndarray], np.ndarray], paths: Sequence[str]) -> list[Reading | Failure]:
    """Segment and read `paths`, classifying all their digits in one pass."""
    found: list[tuple[str, tuple[list[Box], np.ndarray] | ImageError]] = []
    for path in paths:
        try:
            found.append((path, digit_crops(path)))
        except ImageError as e:
            found.append((path, e))

    def read_all(readable: list[str], crops: list[tuple[list[Box], np.ndarray]]) -> list[Reading]:
        probs = probabilities(np.concatenate([arrays for _, arrays in crops]))
        each = np.split(probs, np.cumsum([len(boxes) for boxes, _ in crops])[:-1])  # one block of rows per image
        return [
            Reading(path, [ReadDigit(int(p.argmax()), float(p.max()), box) for box, p in zip(boxes, rows, strict=True)])
            for path, (boxes, _), rows in zip(readable, crops, each, strict=True)
        ]

    return in_input_order(found, read_all)
