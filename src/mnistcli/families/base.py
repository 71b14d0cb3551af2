"""The contract between a task and the training loop, and the batching most tasks share."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import torch
from torch import nn

from mnistcli.data.tensors import TensorData


class Task(Protocol):
    """A task gives the loop its batches, its loss on a batch and its held-out metrics."""

    name: str

    def num_batches(self, train: TensorData, batch_size: int) -> int:
        """Optimizer steps in one epoch over `train`."""
        ...

    def batches(
        self, train: TensorData, batch_size: int, generator: torch.Generator
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of (float images (B, 1, 28, 28) in [0, 1], labels) batches, shuffled by `generator`."""
        ...

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (mean loss, number of correct predictions) for one batch, both as tensors.

        Augmentation, if any, happens here, on the whole batch.
        """
        ...

    def evaluate(self, model: nn.Module, data: TensorData) -> dict[str, float]:
        """Return at least `loss` and `accuracy` (0-1) of `model` on `data`."""
        ...


class ShuffledBatches:
    """The usual epoch: every training image once, in batches of a seeded permutation."""

    def num_batches(self, train: TensorData, batch_size: int) -> int:
        return train.num_batches(batch_size, shuffle=True)

    def batches(
        self, train: TensorData, batch_size: int, generator: torch.Generator
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return train.batches(batch_size, generator)
