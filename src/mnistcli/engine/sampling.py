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
    `extra_size` of a permutation of them drawn at the epoch's start: batches are then (labelled, extra).
    Once `group` has been given groups of the extra items, the extra part is drawn P' x K' over those groups instead
    (self-labelling: families/triplet.py)."""

    def __init__(
        self,
        labels: torch.Tensor,
        per_class: int,
        steps: int,
        extra: int = 0,
        extra_size: int = 0,
        device: torch.device | str = "cpu",
        smallest_group: int = 2,
    ) -> None:
        self.pools = _pools(labels)
        self.k, self.steps, self.extra, self.extra_size = per_class, steps, extra, extra_size
        self.device = torch.device(device)
        self.groups: list[torch.Tensor] | None = None
        self.group_k, self.smallest_group = 0, smallest_group

    def group(self, groups: torch.Tensor | None) -> None:
        """From the next epoch, draw each batch's extra part as K' items of each group of `groups` (one entry per
        extra item, -1 for items left out; K' = `extra_size` // the number of groups, at least `smallest_group`: 2,
        or 2 per process when a batch is shared), or back to the permutation when None. Raises ValueError when no
        group has an item."""
        self.groups = _pools(groups) if groups is not None else None
        if self.groups is not None:
            if not self.groups:
                raise ValueError("no group has an item")
            self.group_k = max(self.smallest_group, self.extra_size // len(self.groups))

    def __len__(self) -> int:
        return self.steps

    def epoch(self, generator: torch.Generator) -> Iterator[Any]:
        grouped = self.groups is not None
        order = torch.randperm(self.extra, generator=generator) if self.extra and not grouped else None
        for step in range(self.steps):
            index = _balanced(self.pools, self.k, generator).to(self.device)
            if self.groups is not None:
                yield index, _balanced(self.groups, self.group_k, generator).to(self.device)
            elif order is None:
                yield index
            else:
                yield index, order[step * self.extra_size : (step + 1) * self.extra_size].to(self.device)


def _pools(labels: torch.Tensor) -> list[torch.Tensor]:
    """The positions of each label of `labels` (negative labels: left out), in the order of the labels."""
    labels = labels.cpu()
    return [torch.nonzero(labels == c).flatten() for c in labels.unique().tolist() if c >= 0]


def _balanced(pools: list[torch.Tensor], k: int, generator: torch.Generator) -> torch.Tensor:
    """K items of each pool: distinct where it has K, drawn with repeats where it has fewer."""
    picks = [
        pool[torch.randperm(len(pool), generator=generator)[:k]]
        if len(pool) >= k
        else pool[torch.randint(len(pool), (k,), generator=generator)]
        for pool in pools
        if len(pool)
    ]
    return torch.cat(picks)
