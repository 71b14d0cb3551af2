"""Two-dimensional maps of embeddings, for pictures: PCA, and t-SNE where groups matter more than distances.

PCA is a faithful linear view, but ten well-separated groups in 128 dimensions need about nine to
keep apart, so two principal components (15% of the variance each for a `siamese` embedding) lay
some of them over each other. t-SNE (van der Maaten and Hinton, 2008) keeps each point's nearest
neighbours near and lets the groups separate; the sizes of the groups and the distances between
them then mean little. This is the exact algorithm (every pair, O(N^2) memory), run on a seeded
sample of 1,500 points. No printing, no file I/O.
"""

from __future__ import annotations

import math

import torch

TSNE_POINTS = 1500  # the sample mapped (every pair is computed: 1,500^2 distances each iteration)
PERPLEXITY = 30.0  # about how many neighbours each point keeps near (the usual default)
ITERATIONS = 500
EXAGGERATION = 12.0  # for the first EXAGGERATED iterations, attraction x this: the groups form first
EXAGGERATED = 250


def pca(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows of `x` projected onto their first two principal components (N, 2), those components' share of the
    variance (2,))."""
    centred = x.double() - x.double().mean(dim=0, keepdim=True)
    _, s, vt = torch.linalg.svd(centred, full_matrices=False)
    var = s**2
    share = var[:2] / var.sum() if float(var.sum()) > 0 else torch.zeros(2, dtype=var.dtype)  # identical rows: none
    points = centred @ vt[:2].T
    if points.shape[1] < 2:  # one-dimensional rows: the second axis is 0
        points = torch.cat([points, torch.zeros(len(points), 2 - points.shape[1], dtype=points.dtype)], dim=1)
        share = torch.cat([share, torch.zeros(2 - len(share), dtype=share.dtype)])
    return points.float(), share.float()


def sample(n: int, size: int = TSNE_POINTS, seed: int = 0) -> torch.Tensor:
    """Sorted indices of a seeded random sample of `size` of `n` rows (all of them when `n` <= `size`)."""
    if n <= size:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:size].sort().values


def _affinities(x: torch.Tensor, perplexity: float) -> torch.Tensor:
    """Symmetric joint probabilities P (N, N) of t-SNE: each row's Gaussian width found by bisection so that the
    row's entropy is log(perplexity)."""
    n = len(x)
    d = torch.cdist(x, x).pow_(2)
    apart = d[d > 0]
    if len(apart):  # the scale does not matter to the bisection, only its range (all identical: all 0)
        d = d / apart.median()
    target = math.log(min(perplexity, (n - 1) / 3))
    beta = torch.ones(n, dtype=d.dtype)
    lo, hi = torch.zeros(n, dtype=d.dtype), torch.full((n,), math.inf, dtype=d.dtype)
    eye = torch.eye(n, dtype=torch.bool)
    for _ in range(64):
        p = torch.exp(-d * beta[:, None]).masked_fill_(eye, 0.0)
        total = p.sum(dim=1).clamp_min(1e-12)
        entropy = torch.log(total) + beta * (d * p).sum(dim=1) / total
        wide = entropy > target  # too many neighbours: narrow the Gaussian (larger beta)
        lo = torch.where(wide, beta, lo)
        hi = torch.where(wide, hi, beta)
        beta = torch.where(torch.isinf(hi), beta * 2, (lo + hi) / 2)
    p = p / total[:, None]
    return ((p + p.T) / (2 * n)).clamp_min_(1e-12)


def tsne(x: torch.Tensor, perplexity: float = PERPLEXITY, iterations: int = ITERATIONS) -> torch.Tensor:
    """A 2-D t-SNE map (N, 2) of the rows of `x` (N >= 4), started from their PCA map: deterministic."""
    x = x.double().cpu()
    n = len(x)
    if n < 4:
        raise ValueError("a t-SNE map needs at least 4 points")
    p = _affinities(x, perplexity).float()  # float64 for the bisection; float32 for the descent (half the time)
    start, _ = pca(x)
    y = start / start[:, 0].std().clamp_min(1e-12) * 1e-4
    update, gains = torch.zeros_like(y), torch.ones_like(y)
    rate = max(n / EXAGGERATION / 4, 50.0)  # scikit-learn's "auto" learning rate
    for it in range(iterations):
        exaggeration, momentum = (EXAGGERATION, 0.5) if it < EXAGGERATED else (1.0, 0.8)
        norms = (y * y).sum(dim=1)
        kernel = (norms[:, None] + norms[None, :]).sub_(y @ y.T, alpha=2.0).clamp_min_(0.0).add_(1.0).reciprocal_()
        kernel.fill_diagonal_(0.0)
        q = (kernel / kernel.sum()).clamp_min_(1e-12)
        pull = q.neg_().add_(p, alpha=exaggeration).mul_(kernel)  # (exaggeration x P - Q) x kernel
        grad = 4.0 * (pull.sum(dim=1, keepdim=True) * y - pull @ y)
        same = torch.sign(grad) == torch.sign(update)
        gains = torch.where(same, gains * 0.8, gains + 0.2).clamp_min_(0.01)
        update = momentum * update - rate * gains * grad
        y = y + update
        y = y - y.mean(dim=0, keepdim=True)
    return y.float()
