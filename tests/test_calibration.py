"""Temperature scaling and the expected calibration error: the maths, against hand-computed values and brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mnistcli.protocols import calibration


def brute_force_ece(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE the slow, obvious way: a Python loop over bins (lo, hi]."""
    conf, pred = probs.max(axis=1), probs.argmax(axis=1)
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = (conf > lo) & (conf <= hi) if b else (conf <= hi)
        if inside.any():
            total += inside.sum() / len(labels) * abs((pred[inside] == labels[inside]).mean() - conf[inside].mean())
    return float(total)


def test_ece_by_hand() -> None:
    probs = np.array([[0.9, 0.05, 0.05], [0.1, 0.85, 0.05], [0.2, 0.1, 0.7], [0.7, 0.2, 0.1]])
    labels = np.array([0, 0, 2, 1])
    # bin (13/15, 14/15]: 0.9, right -> |1 - 0.9| = 0.1; bin (12/15, 13/15]: 0.85, wrong -> 0.85;
    # bin (10/15, 11/15]: 0.7 right and 0.7 wrong -> |0.5 - 0.7| = 0.2, over two images.
    expected = (0.1 + 0.85 + 2 * 0.2) / 4
    assert calibration.ece(probs, labels) == pytest.approx(expected, abs=1e-12)
    assert calibration.ece(torch.tensor(probs), torch.tensor(labels)) == pytest.approx(expected, abs=1e-12)


def test_ece_perfect_and_empty() -> None:
    assert calibration.ece(np.eye(3)[[0, 1, 2]], np.array([0, 1, 2])) == 0.0  # sure and right
    assert calibration.ece(np.eye(3)[[0, 1, 2]], np.array([1, 2, 0])) == 1.0  # sure and wrong
    assert calibration.ece(np.zeros((0, 10)), np.zeros(0, dtype=np.int64)) == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ece_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(500, 10)) * rng.uniform(0.5, 4)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = rng.integers(0, 10, size=500)
    labels[:300] = probs[:300].argmax(axis=1)  # mostly right, as a trained model is
    assert calibration.ece(probs, labels) == pytest.approx(brute_force_ece(probs, labels), abs=1e-12)
    assert calibration.ece(probs, labels, bins=7) == pytest.approx(brute_force_ece(probs, labels, 7), abs=1e-12)


def sampled(n: int, scale: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels drawn from softmax(z), returned with logits `scale` x z: the calibrating temperature is `scale`."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 10, generator=g, dtype=torch.float64) * 3
    labels = torch.multinomial(torch.softmax(z, dim=1), 1, generator=g).squeeze(1)
    return z * scale, labels


@pytest.mark.parametrize("scale", [0.4, 1.0, 3.0])
def test_fit_recovers_the_temperature_labels_were_drawn_with(scale: float) -> None:
    logits, labels = sampled(10_000, scale)
    assert calibration.fit_temperature(logits, labels) == pytest.approx(scale, rel=0.05)


def test_fit_is_the_minimum_of_a_brute_force_search() -> None:
    logits, labels = sampled(1_000, 2.5, seed=3)
    grid = np.exp(np.linspace(math.log(calibration.T_MIN), math.log(calibration.T_MAX), 2001))
    best = grid[int(np.argmin([calibration.nll(logits, labels, float(t)) for t in grid]))]
    fitted = calibration.fit_temperature(logits, labels)
    assert fitted == pytest.approx(best, rel=4e-3)  # the grid's step is 0.3% in T
    assert calibration.nll(logits, labels, fitted) <= min(
        calibration.nll(logits, labels, t) for t in (best, fitted * 1.001, fitted / 1.001)
    )


def test_fit_is_deterministic_and_keeps_predictions() -> None:
    logits, labels = sampled(1_000, 0.5, seed=4)
    t = calibration.fit_temperature(logits, labels)
    assert calibration.fit_temperature(logits.float().numpy(), labels.numpy()) == pytest.approx(t, rel=1e-6)
    assert calibration.fit_temperature(logits, labels) == t
    assert (calibration.probabilities(logits, t).argmax(1) == logits.argmax(1).numpy()).all()


def test_fit_edge_cases() -> None:
    assert calibration.fit_temperature(torch.zeros(0, 10), torch.zeros(0, dtype=torch.long)) == 1.0
    logits = torch.eye(10) * 5
    # Every image right: the NLL keeps falling as T -> 0, so the search ends at its lower bound.
    assert calibration.fit_temperature(logits, torch.arange(10)) == pytest.approx(calibration.T_MIN, rel=1e-6)
    # Every image wrong: the flattest probabilities are best.
    assert calibration.fit_temperature(logits, (torch.arange(10) + 1) % 10) == pytest.approx(
        calibration.T_MAX, rel=1e-6
    )


def test_calibrate_reports_the_fit_on_its_images() -> None:
    logits, labels = sampled(3_000, 0.3, seed=5)  # underconfident, like a label-smoothed model
    fit = calibration.calibrate(logits, labels)
    assert fit.temperature == pytest.approx(0.3, rel=0.1)
    assert fit.images == 3_000 and fit.mistakes == int((logits.argmax(1) != labels).sum())
    assert fit.nll_after < fit.nll_before and fit.ece_after < fit.ece_before
    assert fit.ece_before == pytest.approx(calibration.ece(torch.softmax(logits, 1), labels))


def test_ece_of_a_diverged_model_is_nan_without_a_warning() -> None:
    import math
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "invalid value encountered in cast" would fail here
        assert math.isnan(calibration.ece(np.array([[math.nan, math.nan]]), np.array([0])))
