"""What an exported model takes and gives (`Spec`), for each kind of model `mnist export` writes.

A family names its own (`Family.exported`): classifiers their logits divided by the run's temperature (softmax
gives `mnist predict`'s probabilities), embedding models their features, the adder its two heads of an image and a
number, bags models a bag's logit and attention over its images. Each also names what it adds to the run's
description in the file (`Spec.metadata`): a temperature only where the outputs are divided by one, the classes only
where they are logits over digits. api/exporting.py writes and checks the file.

Inputs a model was never meant to take answer the same in both formats, and the summary documents it: an adder's
number outside 0-9 gives NaN sum logits (the digit logits, which do not read it, stay as they are), and a bag with no
image (its mask all False) a NaN bag logit and zero attention.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from mnistcli.store import Run

BAG = 10  # instances per parity bag of a bags model; each bag keeps 1-10 of them (the rest is padding)


Tensors = tuple[torch.Tensor, ...]


def no_keys(run: Run) -> dict[str, Any]:
    """A `Spec.metadata` that adds nothing."""
    return {}


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
    metadata: Callable[[Run], dict[str, Any]] = field(default=no_keys)  # its own keys beside every file's


class _Logits(nn.Module):
    """A classifier's logits divided by its temperature: softmax gives `mnist predict`'s probabilities."""

    def __init__(self, model: nn.Module, temperature: float) -> None:
        super().__init__()
        self.model, self.temperature = model, temperature

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(image) / self.temperature  # type: ignore[no-any-return]


class _Adder(nn.Module):
    """An adder's digit and sum logits, each divided by its head's temperature; NaN sum logits for a number outside
    0-9 (the model's one-hot raises in torch and gives zeros or garbage in ONNX Runtime: now both give NaN)."""

    def __init__(self, model: nn.Module, temperature: float, sum_temperature: float) -> None:
        super().__init__()
        self.model, self.temperature, self.sum_temperature = model, temperature, sum_temperature

    def forward(self, image: torch.Tensor, number: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        valid = ((number >= 0) & (number <= 9)).unsqueeze(1)
        digit, total = self.model(image, number.clamp(0, 9))
        total = torch.where(valid, total, torch.full_like(total, float("nan")))
        return digit / self.temperature, total / self.sum_temperature


class _Bags(nn.Module):
    """A bags model's bag logit and attention; a bag with no image gives a NaN logit and zero attention (the model
    itself gives NaN, or -inf with max pooling, and NaN attention)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, bags: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logit, attention = self.model(bags, mask)
        empty = ~mask.any(dim=1)
        logit = torch.where(empty, torch.full_like(logit, float("nan")), logit)
        return logit, torch.where(empty.unsqueeze(1), torch.zeros_like(attention), attention)


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


def _classes(run: Run) -> dict[str, Any]:
    return {"classes": list(run.info.data.classes), "temperature": run.temperature}


def _adder_keys(run: Run) -> dict[str, Any]:
    return {**_classes(run), "sum_temperature": run.sum_temperature, "number_range": [0, 9]}


LOGITS = Spec(
    ("image",),
    ("logits",),
    lambda run, model: _Logits(model, run.temperature),
    _images,
    _softmax,
    "logits (N, 10), divided by the run's temperature: their softmax is mnist predict's probabilities",
    metadata=_classes,
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
    " temperature: their softmax is mnist predict --add's probabilities; a number outside 0-9 gives NaN sum_logits",
    metadata=_adder_keys,
)
BAGS = Spec(
    ("bags", "mask"),
    ("bag_logit", "attention"),
    lambda run, model: _Bags(model),
    _bags,
    _bag_probabilities,
    "bag_logit (B,) of bags (B, L, 1, 28, 28) whose mask (B, L, bool) marks the real images: the log-odds that the"
    " bag holds the target digit; and attention (B, L): each image's weight, zero for padding; a bag with no image"
    " gives a NaN bag_logit and zero attention",
    ({1: "instances"}, {1: "instances"}),
)
