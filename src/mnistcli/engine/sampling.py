"""Samplers: which training items each batch of an epoch holds, as index tensors drawn from the run's generator.

The loop owns the sampler and shards every batch it draws across processes (engine/dist.py);
a family turns a batch of indices into tensors (`Family.batch`). Drawing indices, not tensors,
keeps the dataset in memory as one uint8 tensor and a batch one indexing away (airbench).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import torch


class Sampler(Protocol):
    """One epoch of batches of indices; `len` is the number of batches."""

    def __len__(self) -> int: ...

    def epoch(self, generator: torch.Generator) -> Iterator[Any]:
        """The batches of one epoch (index tensors, or tuples of them), drawn lazily from `generator`."""
        ...


def batch_starts(n: int, batch_size: int, smallest: int = 2) -> list[int]:
    """Start indices of batches over `n` items; a last batch of fewer than `smallest` items joins the one before
    (batch norm cannot normalise a single sample, and a batch shared among P processes needs 2P items to give each
    two; with batches of one, as MIL trains, every batch stays one)."""
    starts = list(range(0, n, batch_size))
    if batch_size > 1 and len(starts) > 1 and n - starts[-1] < smallest:
        starts.pop()
    return starts


class Shuffled:
    """Every item once per epoch, in batches of a seeded permutation (the permutation is drawn when the
    epoch's first batch is asked for); a last batch of fewer than `smallest` items joins the one before."""

    def __init__(self, n: int, batch_size: int, device: torch.device | str = "cpu", smallest: int = 2) -> None:
        self.n, self.batch_size, self.device = n, batch_size, torch.device(device)
        self.starts = batch_starts(n, batch_size, smallest)

    def __len__(self) -> int:
        return len(self.starts)

    def epoch(self, generator: torch.Generator) -> Iterator[torch.Tensor]:
        order = torch.randperm(self.n, generator=generator).to(self.device)
        for start, end in zip(self.starts, [*self.starts[1:], self.n], strict=True):
            yield order[start:end]


class ClassBalanced:
    """P x K batches: K distinct items of each of the P classes (repeats only where a class has fewer than K),
    `steps` batches an epoch. With `extra` items (an unlabelled pool), each batch also takes the next
    `extra_size` of a permutation of them drawn at the epoch's start: batches are then (labelled, extra)."""

    def __init__(
        self,
        labels: torch.Tensor,
        per_class: int,
        steps: int,
        extra: int = 0,
        extra_size: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        labels = labels.cpu()
        self.pools = [torch.nonzero(labels == c).flatten() for c in labels.unique().tolist()]
        self.k, self.steps, self.extra, self.extra_size = per_class, steps, extra, extra_size
        self.device = torch.device(device)

    def __len__(self) -> int:
        return self.steps

    def epoch(self, generator: torch.Generator) -> Iterator[Any]:
        order = torch.randperm(self.extra, generator=generator) if self.extra else None
        k = self.k
        for step in range(self.steps):
            picks = [
                pool[torch.randperm(len(pool), generator=generator)[:k]]
                if len(pool) >= k
                else pool[torch.randint(len(pool), (k,), generator=generator)]
                for pool in self.pools
            ]
            index = torch.cat(picks).to(self.device)
            if order is None:
                yield index
            else:
                yield index, order[step * self.extra_size : (step + 1) * self.extra_size].to(self.device)
