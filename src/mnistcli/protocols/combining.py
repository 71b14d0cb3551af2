"""Choosing how an ensemble's members combine, on held-out images: weights that minimise the validation loss.

`select_weights` is ensemble selection with replacement (Caruana et al., ICML 2004, "Ensemble
selection from libraries of models"): start from nothing and, round after round, add the member
(possibly again) whose addition gives the soft vote with the lowest validation loss; keep the
round with the lowest loss. A member's weight is how often it was added, so members that do not
help get weight 0 and good ones count more. It is fitted on the validation split the members held
out of the training set (never the test set); with few images it can fit their noise, which is why
the soft vote with equal weights stays the default.
"""

from __future__ import annotations

import torch

ROUNDS_PER_MEMBER = 2  # rounds of selection: twice the number of members (Caruana et al. use a fixed 100 or so)


def nll(log_probabilities: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean negative log-likelihood of `labels` under log-probabilities (N, classes)."""
    return float(torch.nn.functional.nll_loss(log_probabilities, labels))


def select_weights(probabilities: torch.Tensor, labels: torch.Tensor, rounds: int | None = None) -> list[float]:
    """Weights (summing to 1) of members whose probabilities on held-out images are (members, N, 10), chosen by
    greedy forward selection with replacement to minimise the soft vote's loss on `labels`. Ties go to the
    earlier member; `rounds` defaults to twice the number of members."""
    members = len(probabilities)
    rounds = rounds or ROUNDS_PER_MEMBER * members
    counts = torch.zeros(members, dtype=torch.float64)
    total = torch.zeros_like(probabilities[0], dtype=torch.float64)
    best_loss, best_counts = float("inf"), counts.clone()
    p64 = probabilities.double()
    for step in range(1, rounds + 1):
        # The loss of the vote with each member added once more (total / step is the weighted mean).
        losses = [nll(((total + p64[m]) / step).clamp_min(1e-12).log(), labels) for m in range(members)]
        chosen = min(range(members), key=lambda m: (losses[m], m))
        total += p64[chosen]
        counts[chosen] += 1
        if losses[chosen] < best_loss:
            best_loss, best_counts = losses[chosen], counts.clone()
    weights = best_counts / best_counts.sum()
    return [round(float(w), 6) for w in weights]
