"""Metric learning: triplet loss with online mining in class-balanced batches, plus self-supervision.

The loss is Schroff et al.'s (FaceNet, 2015): L(a, p, n) = max(|f(a) - f(p)|^2 - |f(a) - f(n)|^2 + margin, 0)
on L2-normalised embeddings, with the triplets mined inside each batch of P classes x K images:
"batch-hard" takes each anchor's farthest positive and nearest negative (Hermans et al., 2017);
"semi-hard" takes, for every anchor-positive pair, the nearest negative that is still farther
than the positive (FaceNet), or the farthest negative when there is none.

A triplet network trained on a few labelled classes collapses every other digit onto their
clusters. So, unless `ssl_weight` is 0, each step also takes a batch of *unlabelled* training
images (labels never read) and adds SimCLR's NT-Xent on two views of them, computed through a
projection head on top of the embedding: the embedding must keep what tells any two digits apart,
not only the seen ones.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from mnistcli import config
from mnistcli.data.augment import contrastive_view, random_affine
from mnistcli.data.tensors import TensorData, to_float
from mnistcli.families.contrastive import nt_xent
from mnistcli.protocols.fewshot import prototypes
from mnistcli.protocols.inference import embed_data

UNLABELLED = -1  # the label given to the self-supervised half of a batch


def squared_distances(e: torch.Tensor) -> torch.Tensor:
    """(B, B) squared Euclidean distances between L2-normalised rows: 2 - 2 cos, clamped at 0."""
    return (2.0 - 2.0 * e @ e.T).clamp_(min=0.0)


def batch_hard(e: torch.Tensor, y: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean triplet loss over anchors with their hardest positive and hardest negative."""
    d = squared_distances(e)
    same = y[:, None] == y[None, :]
    eye = torch.eye(len(y), dtype=torch.bool, device=y.device)
    pos = same & ~eye
    valid = pos.any(dim=1) & (~same).any(dim=1)
    hardest_pos = d.masked_fill(~pos, float("-inf")).amax(dim=1)
    hardest_neg = d.masked_fill(same, float("inf")).amin(dim=1)
    loss = F.relu(hardest_pos - hardest_neg + margin)
    return loss[valid].mean() if valid.any() else e.sum() * 0.0


def semi_hard(e: torch.Tensor, y: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean triplet loss over every anchor-positive pair with its semi-hard negative."""
    d = squared_distances(e)
    same = y[:, None] == y[None, :]
    eye = torch.eye(len(y), dtype=torch.bool, device=y.device)
    pos = same & ~eye  # (a, p)
    neg = ~same  # (a, n)
    d_ap = d.unsqueeze(2)  # (a, p, 1)
    d_an = d.unsqueeze(1)  # (a, 1, n)
    farther = neg.unsqueeze(1) & (d_an > d_ap)  # (a, p, n)
    semi = d_an.masked_fill(~farther, float("inf")).amin(dim=2)  # nearest negative beyond the positive
    easiest = d.masked_fill(~neg, float("-inf")).amax(dim=1, keepdim=True).expand_as(semi)
    chosen = torch.where(torch.isinf(semi), easiest, semi)
    valid = pos & neg.any(dim=1, keepdim=True)
    loss = F.relu(d - chosen + margin)
    return loss[valid].mean() if valid.any() else e.sum() * 0.0


def nearest_neighbour_hits(e: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """How many rows' nearest other row (by distance) has the same label."""
    d = squared_distances(e).fill_diagonal_(float("inf"))
    return (y[d.argmin(dim=1)] == y).sum()


class MetricTask:
    """Triplet loss on P x K labelled batches, optionally with NT-Xent on unlabelled images.

    `batch_size` images per labelled batch are split evenly among the training classes (P =
    number of classes, K = batch_size // P). With `unlabelled` data and `ssl_weight` > 0, an epoch
    is one pass over the unlabelled images in batches of `batch_size`, each step paired with a
    fresh labelled batch; otherwise an epoch is len(train) / batch_size labelled batches.
    """

    name = "metric"

    def __init__(
        self,
        margin: float,
        mining: str,
        generator: torch.Generator,
        augment: bool = True,
        unlabelled: TensorData | None = None,
        ssl_weight: float = 0.0,
        temperature: float = 0.2,
    ) -> None:
        if mining not in config.MINING:
            raise ValueError(f"unknown mining {mining!r}")
        self.margin, self.mining, self.generator, self.augment = margin, mining, generator, augment
        self.unlabelled = unlabelled if ssl_weight > 0 else None
        self.ssl_weight, self.temperature = ssl_weight, temperature

    def triplet(self, e: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The triplet loss of normalised embeddings `e` under the chosen mining."""
        fn = batch_hard if self.mining == "batch-hard" else semi_hard
        return fn(e, y, self.margin)

    # -- batches -------------------------------------------------------------------------------

    def num_batches(self, train: TensorData, batch_size: int) -> int:
        """Steps per epoch (see the class docstring)."""
        n = len(self.unlabelled) if self.unlabelled is not None else len(train)
        return max(1, n // batch_size)

    def batches(
        self, train: TensorData, batch_size: int, generator: torch.Generator
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (images, labels): a P x K labelled batch, then any unlabelled images (label -1)."""
        labels = train.labels.cpu()
        classes = labels.unique().tolist()
        pools = [torch.nonzero(labels == c).flatten() for c in classes]
        k = max(2, batch_size // len(classes))  # the api refuses batch sizes under 2 x classes
        steps = self.num_batches(train, batch_size)
        if self.unlabelled is not None:
            order = torch.randperm(len(self.unlabelled), generator=generator)
        for step in range(steps):
            # K distinct images of each class (with repeats only if a class has fewer than K)
            picks = [
                pool[torch.randperm(len(pool), generator=generator)[:k]]
                if len(pool) >= k
                else pool[torch.randint(len(pool), (k,), generator=generator)]
                for pool in pools
            ]
            index = torch.cat(picks).to(train.labels.device)
            x, y = to_float(train.images[index]), train.labels[index]
            if self.unlabelled is not None:
                u = order[step * batch_size : (step + 1) * batch_size].to(self.unlabelled.images.device)
                x = torch.cat([x, to_float(self.unlabelled.images[u])])
                y = torch.cat([y, torch.full((len(u),), UNLABELLED, dtype=y.dtype, device=y.device)])
            yield x, y

    # -- loss and metrics ----------------------------------------------------------------------

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Triplet loss (+ ssl_weight x NT-Xent); hits = labelled images whose in-batch nearest neighbour shares their label."""
        labelled = y != UNLABELLED
        xl, yl = x[labelled], y[labelled]
        if self.augment:
            xl = random_affine(xl, self.generator)
        if self.unlabelled is None or bool(labelled.all()):
            e = model.embed(xl)  # type: ignore[operator]
            loss = self.triplet(e, yl)
        else:
            xu = x[~labelled]
            views = torch.cat([contrastive_view(xu, self.generator), contrastive_view(xu, self.generator)])
            h = model.hidden(torch.cat([xl, views]))  # type: ignore[operator]
            e = F.normalize(h[: len(xl)], dim=1)
            ssl, _ = nt_xent(model.project(h[len(xl) :]), self.temperature)  # type: ignore[operator]
            loss = self.triplet(e, yl) + self.ssl_weight * ssl
        # the loop averages hits over len(y); scale so the running figure is per labelled image
        hits = nearest_neighbour_hits(e.detach(), yl).float() * (len(y) / len(yl))
        return loss, hits

    @torch.inference_mode()
    def evaluate(self, model: nn.Module, data: TensorData) -> dict[str, float]:
        """Nearest-class-mean accuracy on `data` (the means of `data` itself) and the triplet loss of 1,000 of its images.

        A quick held-out signal for validation and targets; `mnist eval` runs the episode protocol.
        """
        e = embed_data(model, data)
        classes, y = data.labels.unique(return_inverse=True)  # only the classes present, numbered 0..C-1
        protos = prototypes(e, y, len(classes))
        accuracy = float((torch.cdist(e, protos).argmin(dim=1) == y).float().mean())
        sample = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))[:1000].to(y.device)
        return {"loss": float(batch_hard(e[sample], y[sample], self.margin)), "accuracy": accuracy}
