"""`ensemble`: several trained classifiers answering as one.

An ensemble holds its members (each built through the registry from its own name and arguments)
and how they vote. Its output is the log of the combined probabilities, so everything that reads a
classifier's logits (cross-entropy, softmax, argmax, temperature scaling) reads it unchanged:
softmax(log p) = p. Each member's probabilities are first calibrated by its own temperature.

- `soft` (the default): the weighted mean of the members' probabilities. Equal weights, or the
  weights `mnist train ensemble --combine select` chose on validation images (protocols/combining.py).
- `vote`: majority voting. A digit's probability is its share of the votes, ties broken by the mean
  probability: p = (votes + mean probability) / (members + 1), whose argmax is the majority digit.

`features` are the members' features side by side (concatenated, not averaged: members of
different architectures have features of different sizes and meanings).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from mnistcli.registry import create_model, get_entry, register_model, saved_args

COMBINE = ("soft", "vote")
MAX_MEMBERS = 100
# The default ensemble; the registered recipe below repeats them as literals (the registry reads recipes from the
# source without importing torch), and tests/test_ensemble.py checks that they agree.
DEFAULT_MEMBERS = 4
DEFAULT_ARCH = "cnn-w32"
TEMPERATURES = (1e-3, 1e3)  # a member's temperature; calibration fits 0.1-10 or so


class Ensemble(nn.Module):
    """Members (classifiers giving ten logits) and their combination; forward gives log-probabilities.

    The weights and temperatures are plain numbers from the checkpoint's description (meta.json's
    model args, checked when it is built), not tensors in the weights file: there is one copy of
    each, and a weights file cannot change them."""

    def __init__(self, members: list[nn.Module], combine: str, weights: list[float], temperatures: list[float]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.combine = combine
        self.weights = list(weights)
        self.temperatures = list(temperatures)
        self.feature_dim = sum(int(getattr(m, "feature_dim", 0)) for m in members)

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's logits, (N, members, 10)."""
        return torch.stack([member(x).float() for member in self.members], dim=1)

    def calibrated(self, logits: torch.Tensor) -> torch.Tensor:
        """The members' probabilities (members, N, 10) from their logits (N, members, 10): softmax(logits / T)."""
        t = torch.tensor(self.temperatures, device=logits.device).reshape(1, -1, 1)
        return torch.softmax(logits / t, dim=2).transpose(0, 1)

    def combined(self, probabilities: torch.Tensor) -> torch.Tensor:
        """Log of the combined probabilities (N, 10) of member probabilities (members, N, 10)."""
        return combine_probabilities(probabilities, self.combine, torch.tensor(self.weights))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Log-probabilities (N, 10): logits whose softmax is the combined answer."""
        return self.combined(self.calibrated(self.member_logits(x)))

    def map_members(self, wrap: Any) -> Ensemble:
        """The same ensemble with each member replaced by `wrap(member)` (test-time augmentation wraps them)."""
        return Ensemble([wrap(m) for m in self.members], self.combine, self.weights, self.temperatures)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's features, concatenated: (N, sum of the members' feature sizes)."""
        return torch.cat([m.features(x) for m in self.members], dim=1)  # type: ignore[operator]


def _numbers(values: Any, what: str) -> list[float]:
    """`values` as finite floats (not booleans). Raises ValueError naming `what`."""
    if not isinstance(values, list) or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
        raise ValueError(f"{what} must be a list of numbers")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{what} must be finite")
    return [float(v) for v in values]


def combine_probabilities(probabilities: torch.Tensor, combine: str, weights: torch.Tensor) -> torch.Tensor:
    """Log of the combined probabilities (N, 10) of member probabilities (members, N, 10) (see the module docstring)."""
    w = weights.to(probabilities).reshape(-1, 1, 1)
    if combine == "soft":
        mean = (probabilities * w).sum(0) / w.sum()
        return mean.clamp_min(1e-12).log()
    votes = nn.functional.one_hot(probabilities.argmax(dim=2), probabilities.shape[2]).sum(0).to(probabilities)
    shares = (votes + probabilities.mean(0)) / (len(probabilities) + 1)
    return shares.clamp_min(1e-12).log()


@register_model(
    "ensemble",
    family="ensemble",
    description="several classifiers (4 cnn-w32 by default, with robust augmentation) trained with different seeds, voting as one;"
    " training options and --arg go to every member",
    members=4,
    arch="cnn-w32",
    robust_augment=True,
    combine="soft",
    val_split=0.05,
)
def ensemble(
    members: list[dict[str, Any]] | None = None,
    combine: str = "soft",
    weights: list[float] | None = None,
    temperatures: list[float] | None = None,
) -> Ensemble:
    """`members`: [{"name": registered classifier, "args": {...}}, ...] (without it, as `mnist train ensemble` trains
    by default: four `cnn-w32`); `weights` of the soft
    vote (default equal) and each member's `temperatures` (default 1) are what training chose and fitted."""
    specs = members if members is not None else [{"name": DEFAULT_ARCH, "args": {}}] * DEFAULT_MEMBERS
    if not 1 <= len(specs) <= MAX_MEMBERS:
        raise ValueError(f"an ensemble has 1-{MAX_MEMBERS} members")
    if combine not in COMBINE:
        raise ValueError(f"combine must be one of {', '.join(COMBINE)}")
    built = []
    for spec in specs:
        name, args = (spec.get("name"), spec.get("args", {})) if isinstance(spec, dict) else (None, None)
        if not isinstance(name, str) or not isinstance(args, dict):
            raise ValueError("each member is {'name': MODEL, 'args': {...}}")
        if get_entry(name).family != "classify":
            raise ValueError(f"member {name!r} is not a classifier")
        built.append(create_model(name, **saved_args(name, args)))
    weights = [1.0] * len(built) if weights is None else _numbers(weights, "weights")
    temperatures = [1.0] * len(built) if temperatures is None else _numbers(temperatures, "temperatures")
    if len(weights) != len(built) or len(temperatures) != len(built):
        raise ValueError("one weight and one temperature per member")
    if any(w < 0 for w in weights) or not sum(weights) > 0:
        raise ValueError("weights must be >= 0, not all 0")
    if any(not TEMPERATURES[0] <= t <= TEMPERATURES[1] for t in temperatures):
        raise ValueError(f"temperatures must be {TEMPERATURES[0]:g}-{TEMPERATURES[1]:g}")
    top = max(weights)
    total = math.fsum(w / top for w in weights)
    weights = [w / top / total for w in weights]  # they sum to 1: no overflow however large they were written
    return Ensemble(built, combine, weights, temperatures)
