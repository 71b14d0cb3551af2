"""MNIST as tensors in memory, batched by indexing (the airbench way).

The images stay uint8 on the training device (a quarter of the bytes of float32, so indexing a
batch out of 60,000 images moves less memory) and become floats in [0, 1] one batch at a time.
There is no DataLoader and no per-sample Python: a batch is `images[perm[i:i+b]]`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class TensorData:
    """Images (N, 28, 28) uint8 and labels (N,) int64, on one device; `source`, where they were read (for messages)."""

    images: torch.Tensor
    labels: torch.Tensor
    source: str | None = field(default=None, compare=False)

    @classmethod
    def from_numpy(
        cls, images: np.ndarray, labels: np.ndarray, device: torch.device, source: str | None = None
    ) -> TensorData:
        """Numpy arrays as tensors on `device`: a writable C-ordered uint8 array (an inflated .gz file) is taken as it
        is, anything else (a read-only memory-mapped IDX file) copied."""
        images = np.asarray(images)
        if not (images.dtype == np.uint8 and images.flags.c_contiguous and images.flags.writeable):
            images = np.array(images, dtype=np.uint8, order="C")
        labels = np.array(labels, dtype=np.int64)
        return cls(torch.from_numpy(images).to(device), torch.from_numpy(labels).to(device), source)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> TensorData:
        """The rows at `index` (a new tensor pair)."""
        index = index.to(self.labels.device)
        return TensorData(self.images[index], self.labels[index])

    def select(self, classes: tuple[int, ...] | None, per_class: int | None, generator: torch.Generator) -> TensorData:
        """Keep only `classes` and at most `per_class` images of each (a seeded random choice)."""
        if classes is None and per_class is None:
            return self
        labels = self.labels.cpu()
        keep = []
        for c in classes if classes is not None else range(10):
            idx = torch.nonzero(labels == c).flatten()
            if per_class is not None and len(idx) > per_class:
                idx = idx[torch.randperm(len(idx), generator=generator)[:per_class]].sort().values
            keep.append(idx)
        return self.subset(torch.cat(keep).sort().values)

    def split(self, fraction: float, generator: torch.Generator) -> tuple[TensorData, TensorData | None]:
        """Hold out a random `fraction` for validation; returns (train, val or None)."""
        if fraction <= 0:
            return self, None
        perm = torch.randperm(len(self), generator=generator)
        n_val = max(1, round(len(self) * fraction))
        return self.subset(perm[n_val:]), self.subset(perm[:n_val])

    def num_batches(self, batch_size: int, shuffle: bool) -> int:
        """How many batches `batches` yields."""
        return len(batch_starts(len(self), batch_size, shuffle))

    def batches(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (float images (B, 1, 28, 28) in [0, 1], labels); shuffled when `generator` is given.

        When shuffling (training), a last batch of a single image is folded into the one before:
        batch norm cannot normalise one sample.
        """
        n = len(self)
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
        order = order.to(self.labels.device)
        starts = batch_starts(n, batch_size, shuffle=generator is not None)
        for start, end in zip(starts, [*starts[1:], n] if starts else [], strict=True):  # no images: no batch
            index = order[start:end]
            yield to_float(self.images[index]), self.labels[index]


def batch_starts(n: int, batch_size: int, shuffle: bool) -> list[int]:
    """Start indices of the batches over `n` items (see `TensorData.batches`)."""
    starts = list(range(0, n, batch_size))
    if shuffle and len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return starts


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28) in [0, 1]."""
    return images.unsqueeze(1).float().div_(255.0)
