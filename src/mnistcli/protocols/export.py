"""What an exported model takes and gives (`Spec`), for each kind of model `mnist export` writes.

A family names its own (`Family.exported`): classifiers their logits divided by the run's temperature (softmax
gives `mnist predict`'s probabilities), embedding models their features, the adder its two heads of an image and a
number, bags models a bag's logit and attention over its images. api/exporting.py writes and checks the file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from mnistcli.store import Run

BAG = 10  # instances per parity bag of a bags model; each bag keeps 1-10 of them (the rest is padding)


Tensors = tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class Spec:
    """What a family's exported file takes and gives."""

    inputs: tuple[str, ...]  # input names; the first axis of each is the batch
    outputs: tuple[str, ...]
    wrap: Callable[[Run, nn.Module], nn.Module]  # the module exported: forward(*inputs) -> outputs
    make_inputs: Callable[[torch.Tensor, torch.Generator], Tensors]  # from float images (N, 1, 28, 28)
    probabilities: Callable[[Tensors], Tensors] | None  # what the tolerance is about; None: the outputs themselves
    describe: str  # the `outputs` metadata entry
    dynamic: tuple[dict[int, str], ...] = ()  # per input, its dynamic axes beyond the batch: {axis: name}


class _Logits(nn.Module):
    """A classifier's logits divided by its temperature: softmax gives `mnist predict`'s probabilities."""

    def __init__(self, model: nn.Module, temperature: float) -> None:
        super().__init__()
        self.model, self.temperature = model, temperature

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(image) / self.temperature  # type: ignore[no-any-return]


class _Adder(nn.Module):
    """An adder's digit and sum logits, each divided by its head's temperature."""

    def __init__(self, model: nn.Module, temperature: float, sum_temperature: float) -> None:
        super().__init__()
        self.model, self.temperature, self.sum_temperature = model, temperature, sum_temperature

    def forward(self, image: torch.Tensor, number: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        digit, total = self.model(image, number)
        return digit / self.temperature, total / self.sum_temperature


class _Embedding(nn.Module):
    """The embedding `mnist embed` gives: the model's `features` (siamese: unit vectors; simclr: the encoder's)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model.features(image)  # type: ignore[operator,no-any-return]


def _images(x: torch.Tensor, g: torch.Generator) -> Tensors:
    return (x,)


def _with_numbers(x: torch.Tensor, g: torch.Generator) -> Tensors:
    return x, torch.randint(0, 10, (len(x),), generator=g)


def _bags(x: torch.Tensor, g: torch.Generator) -> Tensors:
    """Bags of `BAG` images, each keeping a drawn 1-`BAG` of them (the rest padding, masked out)."""
    bags = x[: len(x) // BAG * BAG].reshape(-1, BAG, 1, 28, 28)
    sizes = torch.randint(1, BAG + 1, (len(bags), 1), generator=g)
    return bags, torch.arange(BAG).unsqueeze(0) < sizes


def _softmax(outputs: Tensors) -> Tensors:
    return tuple(torch.softmax(o, dim=1) for o in outputs)


def _bag_probabilities(outputs: Tensors) -> Tensors:
    return torch.sigmoid(outputs[0]), outputs[1]  # the bag's probability; the attention weights already are


LOGITS = Spec(
    ("image",),
    ("logits",),
    lambda run, model: _Logits(model, run.temperature),
    _images,
    _softmax,
    "logits (N, 10), divided by the run's temperature: their softmax is mnist predict's probabilities",
)
EMBEDDING = Spec(
    ("image",),
    ("embedding",),
    lambda run, model: _Embedding(model),
    _images,
    None,
    "embedding (N, D): what mnist embed gives",
)
ADDER = Spec(
    ("image", "number"),
    ("digit_logits", "sum_logits"),
    lambda run, model: _Adder(model, run.temperature, run.sum_temperature),
    _with_numbers,
    _softmax,
    "digit_logits (N, 10) and sum_logits (N, 19) of image and number (int64 0-9), each divided by its head's"
    " temperature: their softmax is mnist predict --add's probabilities",
)
BAGS = Spec(
    ("bags", "mask"),
    ("bag_logit", "attention"),
    lambda run, model: model,
    _bags,
    _bag_probabilities,
    "bag_logit (B,) of bags (B, L, 1, 28, 28) whose mask (B, L, bool) marks the real images, and attention (B, L):"
    " each image's weight, zero for padding",
    ({1: "instances"}, {1: "instances"}),
)
