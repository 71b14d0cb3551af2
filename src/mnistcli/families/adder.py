"""The adder task: each image paired with a random number 0-9; cross-entropy on the digit and on the sum.

The loop passes (images, labels) around; here a batch's labels carry both numbers, packed as
`digit + 10 * number` (`pack` / `unpack`), so the loop stays the same for every task. Training
draws a fresh number for every image every epoch from the run's generator; held-out data gets a
fixed number per image from `held_out_numbers(n, seed)`, so every evaluation of a checkpoint with
one seed sees the same pairs.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from mnistcli.data.augment import random_affine
from mnistcli.data.tensors import TensorData
from mnistcli.families.base import ShuffledBatches
from mnistcli.protocols.inference import evaluate_adder


def pack(digits: torch.Tensor, numbers: torch.Tensor) -> torch.Tensor:
    """One label per image carrying both the digit and the number added to it."""
    return digits + 10 * numbers


def unpack(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(digits, numbers) from `pack`ed labels."""
    return labels % 10, labels // 10


def held_out_numbers(n: int, seed: int) -> torch.Tensor:
    """The fixed numbers 0-9 paired with `n` held-out images under `seed`."""
    return torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(seed))


class AdderTask(ShuffledBatches):
    """Digit and sum cross-entropy (summed); "accuracy" is sum accuracy, the network's final answer."""

    name = "adder"

    def __init__(
        self,
        label_smoothing: float = 0.0,
        augment: bool = False,
        generator: torch.Generator | None = None,
        seed: int = 0,
    ) -> None:
        self.label_smoothing, self.augment, self.seed = label_smoothing, augment, seed
        self.generator = generator if generator is not None else torch.Generator().manual_seed(seed)

    def batches(
        self, train: TensorData, batch_size: int, generator: torch.Generator
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The usual shuffled batches, each image with a number drawn afresh this epoch."""
        numbers = torch.randint(0, 10, (len(train),), generator=generator).to(train.labels.device)
        paired = TensorData(train.images, pack(train.labels, numbers))
        return paired.batches(batch_size, generator)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy of the digit plus cross-entropy of the sum; hits = correct sums."""
        digits, numbers = unpack(y)
        if self.augment:
            x = random_affine(x, self.generator)
        digit_logits, sum_logits = model(x, numbers)
        loss = F.cross_entropy(digit_logits, digits, label_smoothing=self.label_smoothing) + F.cross_entropy(
            sum_logits, digits + numbers, label_smoothing=self.label_smoothing
        )
        return loss, (sum_logits.argmax(dim=1) == digits + numbers).sum()

    def evaluate(self, model: nn.Module, data: TensorData) -> dict[str, float]:
        """Loss, sum accuracy (`accuracy`) and digit accuracy on `data`, with the seed's fixed numbers."""
        result = evaluate_adder(model, data, held_out_numbers(len(data), self.seed))
        return {"loss": result.loss, "accuracy": result.sum_accuracy, "digit_accuracy": result.digit_accuracy}
