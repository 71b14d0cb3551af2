"""Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks") and its measure.

One scalar T > 0 divides a classifier's logits; it is the T that minimises the negative
log-likelihood (NLL) of held-out labels under softmax(logits / T). T changes no prediction (the
argmax of logits / T is the argmax of logits), only how sure the probabilities say the model is:
T < 1 sharpens them (a model trained with label smoothing is underconfident), T > 1 softens them.

The NLL is convex in 1/T, so it has a single minimum in log T, found here by a golden-section
search: no gradient, no learning rate, the same answer on every device. When every held-out image
is classified correctly there is no minimum (the NLL keeps falling as T -> 0); the search then
stops at `T_MIN`, and callers should not trust such a fit (`mistakes` counts the evidence).

The expected calibration error (ECE) bins the top-1 confidences into equal-width bins over
(0, 1] and averages |accuracy - mean confidence| of each bin, weighted by its share of images.
Plain numpy in float64 (tensors are accepted and copied to the CPU); no printing, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

import numpy as np

if TYPE_CHECKING:
    import torch

T_MIN, T_MAX = 0.05, 20.0  # the search interval for T: 20x sharper to 20x softer
ITERATIONS = 40  # golden-section steps: each shrinks the interval by 0.618, so T is found to ~1e-8
BINS = 15  # ECE bins, as in Guo et al.
SPLIT = 0.05  # of the training images held out to fit T when the run has no validation split
MIN_IMAGES = 50  # fewer held-out images than this fit nothing worth storing
MIN_MISTAKES = 1  # with no misclassified held-out image, nothing bounds T from below


@dataclass(frozen=True)
class TemperatureFit:
    """A fitted temperature and what it did to the held-out images it was fitted on."""

    temperature: float
    images: int
    mistakes: int  # misclassified held-out images (the evidence that bounds T from below)
    nll_before: float  # mean NLL at T = 1
    nll_after: float
    ece_before: float
    ece_after: float


Array = Union[np.ndarray, "torch.Tensor"]


def _array(values: Array, dtype: type) -> np.ndarray:
    """float64 or int64 numpy (single-threaded and quick on a busy CPU, unlike small float64 torch ops)."""
    if hasattr(values, "detach"):  # a torch tensor, wherever it lives
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=dtype)


def _logsumexp(z: np.ndarray) -> np.ndarray:
    top = z.max(axis=1, keepdims=True)
    return (top + np.log(np.exp(z - top).sum(axis=1, keepdims=True))).squeeze(1)


def nll(logits: Array, labels: Array, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of `labels` under softmax(logits / temperature), in float64."""
    z = _array(logits, np.float64) / temperature
    y = _array(labels, np.int64)
    return float((_logsumexp(z) - z[np.arange(len(y)), y]).mean()) if len(y) else 0.0


def fit_temperature(logits: Array, labels: Array) -> float:
    """The T in [T_MIN, T_MAX] minimising `nll(logits, labels, T)`; 1.0 for no images.

    `logits` is (N, C), `labels` (N,) in 0..C-1. Deterministic: a golden-section search on log T
    (the NLL is unimodal in log T because it is convex in 1/T).
    """
    z = _array(logits, np.float64)
    y = _array(labels, np.int64)
    if not len(y):
        return 1.0
    true = z[np.arange(len(y)), y]

    def loss(log_t: float) -> float:
        beta = math.exp(-log_t)
        return float((_logsumexp(z * beta) - true * beta).mean())

    lo, hi = math.log(T_MIN), math.log(T_MAX)
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = loss(a), loss(b)
    for _ in range(ITERATIONS):
        if fa <= fb:  # the minimum lies in [lo, b]
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = loss(a)
        else:  # in [a, hi]
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = loss(b)
    return math.exp((lo + hi) / 2)


def ece(probs: Array, labels: Array, bins: int = BINS) -> float:
    """Expected calibration error of the top-1 confidences of `probs` (N, C): 0 (calibrated) to 1.

    Bin b holds the confidences in (b / bins, (b + 1) / bins]; each bin contributes its share of
    images times |its accuracy - its mean confidence|. 0.0 for no images.
    """
    p = _array(probs, np.float64)
    y = _array(labels, np.int64)
    if not len(y):
        return 0.0
    confidence, predicted = p.max(axis=1), p.argmax(axis=1)
    if not np.isfinite(confidence).all():  # a diverged model's: no calibration error to speak of
        return math.nan
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    gap = np.bincount(index, weights=(predicted == y) - confidence, minlength=bins)  # sum of (right - confidence)
    return float(np.abs(gap).sum() / len(y))


def probabilities(logits: Array, temperature: float = 1.0) -> np.ndarray:
    """softmax(logits / temperature) as float64 (N, C)."""
    z = _array(logits, np.float64) / temperature
    e = np.exp(z - z.max(axis=1, keepdims=True)) if len(z) else z
    return e / e.sum(axis=1, keepdims=True) if len(z) else z


def calibrate(logits: Array, labels: Array) -> TemperatureFit:
    """Fit T on held-out `logits` and `labels`; returns it with the held-out NLL and ECE before and after."""
    z = _array(logits, np.float64)
    y = _array(labels, np.int64)
    t = fit_temperature(z, y)
    mistakes = int((z.argmax(axis=1) != y).sum()) if len(y) else 0
    return TemperatureFit(
        temperature=t,
        images=len(y),
        mistakes=mistakes,
        nll_before=nll(z, y),
        nll_after=nll(z, y, t),
        ece_before=ece(probabilities(z), y),
        ece_after=ece(probabilities(z, t), y),
    )


def head_entry(logits: Array, labels: Array) -> dict[str, Any]:
    """The checkpoint's record of one output head's temperature fit (docs/formats.md, `calibration`).

    Where the held-out images hold no mistake, nothing bounds T from below: the entry keeps T = 1
    and says so in a `note`.
    """
    fit = calibrate(logits, labels)
    entry = {
        "temperature": fit.temperature,
        "images": fit.images,
        "mistakes": fit.mistakes,
        "nll_before": fit.nll_before,
        "nll_after": fit.nll_after,
        "ece_before": fit.ece_before,
        "ece_after": fit.ece_after,
    }
    if fit.mistakes >= MIN_MISTAKES:
        return entry
    return {
        **entry,
        "temperature": 1.0,
        "nll_after": fit.nll_before,
        "ece_after": fit.ece_before,
        "note": f"no misclassified image among {fit.images} held out: nothing bounds T from below, so T = 1",
    }


def errors(logits: Array, labels: Array, temperature: float) -> dict[str, float]:
    """The temperature, and the ECE of the probabilities reported with it (`ece`) and without (`ece_uncalibrated`)."""
    return {
        "temperature": temperature,
        "ece": ece(probabilities(logits, temperature), labels),
        "ece_uncalibrated": ece(probabilities(logits), labels),
    }
