"""The contract between a task and the training loop."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from mnistcli.dataset import TensorData


class Task(Protocol):
    """A task gives the loop its loss on a batch and its held-out metrics."""

    name: str

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (mean loss, number of correct predictions) for one batch, both as tensors."""
        ...

    def evaluate(self, model: nn.Module, data: TensorData) -> dict[str, float]:
        """Return at least `loss` and `accuracy` (0-1) of `model` on `data`."""
        ...
