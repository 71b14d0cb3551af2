"""Contrastive self-supervision (SimCLR): two views of each image, the NT-Xent loss, no labels.

For a batch of N images the model sees 2N views; each view's positive is the other view of its
image and the 2N - 2 others are its negatives. The reported "accuracy" is how often a view's most
similar other view is its positive (top-1 of 2N - 1), a cheap sign that learning is going well.
The labels in a batch are never looked at.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mnistcli.data.augment import contrastive_view, random_affine
from mnistcli.data.tensors import TensorData
from mnistcli.families.base import ShuffledBatches


def nt_xent(z: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """NT-Xent over 2N projections (views i and i + N are a pair); returns (mean loss, top-1 hits)."""
    n = z.shape[0] // 2
    z = F.normalize(z.float(), dim=1)
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))  # a view is not its own positive or negative
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target), (sim.argmax(dim=1) == target).sum()


class ContrastiveTask(ShuffledBatches):
    """SimCLR pretraining; views drawn from a generator seeded by the run's seed."""

    name = "contrastive"

    def __init__(
        self, temperature: float = 0.2, seed: int = 0, augment: bool = False, generator: torch.Generator | None = None
    ) -> None:
        self.temperature = temperature
        self.generator = torch.Generator().manual_seed(seed + 1)
        # --augment: an extra mild affine of each image before its views (off in the simclr recipe)
        self.augment, self.affine_generator = augment, generator or torch.Generator().manual_seed(seed)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """NT-Xent of two fresh views of the batch; `y` is ignored. Hits count over 2N views."""
        if self.augment:
            x = random_affine(x, self.affine_generator)
        views = torch.cat([contrastive_view(x, self.generator), contrastive_view(x, self.generator)])
        loss, hits = nt_xent(model(views), self.temperature)
        return loss, hits.float() / 2  # per image, so the loop's running "accuracy" stays in [0, 1]

    @torch.inference_mode()
    def evaluate(self, model: nn.Module, data: TensorData) -> dict[str, float]:
        """Mean NT-Xent and top-1 pair accuracy on `data`, in batches of 512 images, fixed views."""
        was_training = model.training
        model.eval()
        generator = torch.Generator().manual_seed(0)
        loss_sum, hits, views = 0.0, 0, 0
        for x, _ in data.batches(512):
            pair = torch.cat([contrastive_view(x, generator), contrastive_view(x, generator)])
            loss, n_hits = nt_xent(model(pair), self.temperature)
            loss_sum += float(loss) * len(pair)
            hits += int(n_hits)
            views += len(pair)
        model.train(was_training)
        return {"loss": loss_sum / max(views, 1), "accuracy": hits / max(views, 1)}
