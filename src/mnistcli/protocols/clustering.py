"""Grouping unlabelled images by their embeddings: nearest neighbours, a SCAN clustering head, confident self-labels.

SCAN (Van Gansbeke et al., "SCAN: Learning to Classify Images without Labels", ECCV 2020) clusters
in two steps on top of a self-supervised embedding. First it mines each image's k nearest
neighbours, which on a good embedding nearly always show the same class (here, on a `siamese`
embedding trained with the labels of 0, 1, 2 only: 98.7% for the nearest; benchmarks/selflabel.py). Then it
trains a clustering head whose class probabilities must agree between an image and its neighbours
(the dot product of the two distributions, as a log loss), while the mean distribution over a
batch is kept spread over every cluster (its entropy, weighted). Images whose largest probability
is above a threshold are then confident enough to be trained on as labelled: self-labelling.

The settings are the paper's: 20 neighbours, entropy weight 5, confidence 0.99, and several heads
trained at once from different starts, of which the one with the least loss is kept. Each head here
is one linear layer on the frozen, L2-normalised embedding, trained for a few seconds; the network
itself learns the groups afterwards, from the self-labels (families/triplet.py). The heads matter:
on one embedding (seed 1, epoch 5) five heads matched the digits for 91.0-97.5% of the training
images, and the loss told the good ones apart (0.042 against 0.060). No labels are read
anywhere in this module. No printing, no file I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

NEIGHBOURS = 20  # SCAN's k
ENTROPY_WEIGHT = 5.0  # SCAN's weight of the entropy of the mean cluster distribution
CONFIDENCE = 0.99  # SCAN's threshold for self-labelling
HEAD_PASSES = 30  # passes of the clustering head over the embeddings (60,000 images: 3,540 steps, 4 s on 2 CPU cores)
HEADS = 5  # clustering heads trained at once from different starts; the one of least loss is kept (SCAN's way)
HEAD_MIN_STEPS = 1000  # but at least this many optimizer steps (a few hundred images: 1-2 s), to grow confident
HEAD_BATCH = 512
HEAD_LR = 1e-2
BLOCK = 2048  # rows of the similarity matrix computed at once when mining neighbours (2048 x 60,000 floats: 0.5 GB)


@dataclass
class Grouping:
    """What clustering found: a group for each image, and which groups are confident enough to train on."""

    groups: torch.Tensor  # (N,) int64: each image's most probable cluster
    confidence: torch.Tensor  # (N,) float: that cluster's probability
    probabilities: torch.Tensor  # (N, clusters)
    threshold: float
    head: nn.Linear  # the head kept: normalised embeddings (N, D) -> cluster logits (N, clusters)
    losses: list[float]  # every head's SCAN loss
    kept: int  # which head was kept (the least loss)

    def self_labels(self) -> torch.Tensor:
        """(N,) int64: each image's cluster where its confidence passes the threshold, else -1 (left out)."""
        return torch.where(self.confidence > self.threshold, self.groups, torch.full_like(self.groups, -1))

    def sizes(self) -> torch.Tensor:
        """(clusters,) int64: how many images each cluster keeps (those whose confidence passes the threshold)."""
        labels = self.self_labels()
        return torch.bincount(labels[labels >= 0], minlength=self.probabilities.shape[1])

    def summary(self) -> dict[str, object]:
        """Kept images, their share, the size of each cluster among them, which head was kept, every head's loss."""
        sizes = self.sizes()
        kept = int(sizes.sum())
        return {
            "kept": kept,
            "share": float(kept) / max(len(self.groups), 1),
            "sizes": sizes.tolist(),
            "head": self.kept,
            "losses": self.losses,
        }

    def probabilities_of(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(N, clusters): the kept head's cluster probabilities of other embeddings (N, D)."""
        with torch.no_grad():
            return self.head(F.normalize(embeddings.float(), dim=1)).softmax(dim=1)


def neighbours(embeddings: torch.Tensor, k: int = NEIGHBOURS, block: int = BLOCK) -> torch.Tensor:
    """(N, k) int64: for each row, the k other rows of largest cosine similarity, nearest first."""
    if not 1 <= k < len(embeddings):
        raise ValueError(f"{k} neighbours need more than {k} embeddings (got {len(embeddings)})")
    e = F.normalize(embeddings.float(), dim=1)
    out = []
    for start in range(0, len(e), block):
        sim = e[start : start + block] @ e.T
        rows = torch.arange(len(sim), device=e.device)
        sim[rows, rows + start] = -2.0  # never one's own neighbour (cosines are >= -1)
        out.append(sim.topk(k, dim=1).indices)
    return torch.cat(out)


def scan_loss(p: torch.Tensor, q: torch.Tensor, entropy_weight: float) -> torch.Tensor:
    """SCAN's loss for cluster probabilities `p` (..., N, K) of a batch and `q` of a neighbour of each: -mean log
    <p, q> plus `entropy_weight` x the negative entropy of the batch's mean distribution (so that no cluster is left
    empty); one loss per leading index (one per head)."""
    consistency = -torch.log((p * q).sum(dim=-1).clamp_min(1e-8)).mean(dim=-1)
    mean = p.mean(dim=-2)
    return consistency + entropy_weight * (mean * mean.clamp_min(1e-8).log()).sum(dim=-1)


def _probabilities(heads: nn.Linear, e: torch.Tensor, clusters: int) -> torch.Tensor:
    """(heads, N, clusters): every head's cluster probabilities of the normalised embeddings `e` (N, D)."""
    return heads(e).view(len(e), -1, clusters).softmax(dim=-1).transpose(0, 1)


def scan_heads(
    embeddings: torch.Tensor,
    near: torch.Tensor,
    clusters: int,
    generator: torch.Generator,
    heads: int = HEADS,
    steps: int | None = None,
    entropy_weight: float = ENTROPY_WEIGHT,
) -> nn.Linear:
    """`heads` linear clustering heads on the normalised `embeddings` (N, D), as one layer (D -> heads x clusters),
    each trained by `scan_loss` for `steps` batches (default: HEAD_PASSES passes, at least HEAD_MIN_STEPS) with each
    image paired with a random one of its neighbours `near` (N, k), in passes of a seeded order. The heads differ
    only in their start. Deterministic given `generator`."""
    e = F.normalize(embeddings.float(), dim=1).detach()
    layer = nn.Linear(e.shape[1], heads * clusters, device="meta").to_empty(device=e.device)
    with torch.no_grad():  # drawn from `generator` alone: the global RNG is never touched
        bound = 1.0 / e.shape[1] ** 0.5
        layer.weight.copy_(torch.rand(layer.weight.shape, generator=generator) * 2 * bound - bound)
        layer.bias.copy_(torch.rand(layer.bias.shape, generator=generator) * 2 * bound - bound)
    optimizer = torch.optim.Adam(layer.parameters(), lr=HEAD_LR)
    if steps is None:
        steps = max(HEAD_MIN_STEPS, HEAD_PASSES * -(-len(e) // HEAD_BATCH))
    done = 0
    with torch.enable_grad():
        while done < steps:
            order = torch.randperm(len(e), generator=generator).to(e.device)
            for start in range(0, len(e), HEAD_BATCH):
                i = order[start : start + HEAD_BATCH]
                j = near[i, torch.randint(near.shape[1], (len(i),), generator=generator).to(e.device)]
                both = _probabilities(layer, torch.cat([e[i], e[j]]), clusters)
                loss = scan_loss(both[:, : len(i)], both[:, len(i) :], entropy_weight).sum()  # heads learn apart
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                done += 1
                if done == steps:
                    break
    return layer.eval()


@torch.no_grad()
def head_losses(
    layer: nn.Linear, embeddings: torch.Tensor, near: torch.Tensor, clusters: int, entropy_weight: float
) -> torch.Tensor:
    """(heads,): each head's SCAN loss over every image and every one of its neighbours: how well it keeps
    neighbours together, the criterion SCAN picks its head by (no label involved)."""
    p = _probabilities(layer, F.normalize(embeddings.float(), dim=1), clusters)  # (H, N, K)
    agree = torch.stack([(p * p[:, near[:, n]]).sum(dim=-1) for n in range(near.shape[1])], dim=-1)  # (H, N, k)
    consistency = -torch.log(agree.clamp_min(1e-8)).mean(dim=(1, 2))
    mean = p.mean(dim=1)
    return consistency + entropy_weight * (mean * mean.clamp_min(1e-8).log()).sum(dim=-1)


def cluster(
    embeddings: torch.Tensor,
    clusters: int,
    generator: torch.Generator,
    k: int = NEIGHBOURS,
    threshold: float | None = None,
    heads: int = HEADS,
) -> Grouping:
    """Group `embeddings` (N, D) into `clusters` by SCAN: neighbours, `heads` clustering heads, and the
    probabilities of the head of least loss (`head_losses`); self-labels above `threshold` (default CONFIDENCE)."""
    if clusters < 2 or len(embeddings) < 2:
        raise ValueError("clustering needs at least 2 clusters and 2 embeddings")
    near = neighbours(embeddings, min(k, len(embeddings) - 1))
    layer = scan_heads(embeddings, near, clusters, generator, heads)
    losses = head_losses(layer, embeddings, near, clusters, ENTROPY_WEIGHT)
    best = int(losses.argmin())
    head = nn.Linear(layer.in_features, clusters, device="meta").to_empty(device=layer.weight.device).eval()
    with torch.no_grad():
        rows = slice(best * clusters, (best + 1) * clusters)
        head.weight.copy_(layer.weight[rows])
        head.bias.copy_(layer.bias[rows])
        probabilities = head(F.normalize(embeddings.float(), dim=1)).softmax(dim=1)
    confidence, groups = probabilities.max(dim=1)
    kept = CONFIDENCE if threshold is None else threshold
    return Grouping(groups, confidence, probabilities, kept, head, losses.tolist(), best)


def cluster_accuracy(groups: torch.Tensor, labels: torch.Tensor) -> float:
    """The share of items whose group's most common label is their own (purity): how well groups match classes,
    for measuring only (it reads the labels)."""
    table = torch.zeros(int(groups.max()) + 1, int(labels.max()) + 1, dtype=torch.long)
    table.index_put_((groups.cpu(), labels.cpu()), torch.ones(len(groups), dtype=torch.long), accumulate=True)
    return float(table.max(dim=1).values.sum()) / max(len(groups), 1)
