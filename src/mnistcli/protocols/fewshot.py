"""Few-shot classification by nearest class prototype, and the N-way K-shot episode protocol.

A class's prototype is the mean embedding of its support examples (Snell et al., 2017); a query
belongs to the class whose prototype is nearest in squared Euclidean distance. Embeddings are
L2-normalised first, whatever model made them, so distances are comparable across models (a
triplet network's embeddings already are).

An episode draws N classes, K support and Q query images of each, all distinct; 1,000 episodes
run as a handful of batched tensor operations. No printing, no file I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mnistcli.errors import DataError

EPISODES = 1000
QUERIES = 15  # queries per class in each episode (the usual choice in the few-shot literature)
SHOTS = (1, 5)  # the default settings of `mnist eval`: 10-way 1-shot and 10-way 5-shot
EPISODE_BLOCK = 100  # episodes computed at once
DEFAULT_SCALE = 10.0  # confidence scale for checkpoints without a calibrated one (see `calibrate`)
Tick = Callable[[int], None]  # told how many more episodes are done (progress for the caller to show)


@dataclass
class EpisodeResult:
    """Accuracy over a set of episodes, with a 95% confidence interval and per-class counts."""

    ways: int
    shots: int
    episodes: int
    queries: int  # per class per episode
    classes: list[int]  # the labels episodes were drawn from
    accuracy: float  # mean over episodes
    ci95: float  # half-width of the 95% confidence interval of the mean
    correct: list[int]  # per entry of `classes`: correct queries over all episodes
    total: list[int]  # per entry of `classes`: queries over all episodes

    def per_class(self) -> list[dict[str, float | int]]:
        """For each class: correct, total and accuracy."""
        return [
            {"digit": c, "correct": n, "total": t, "accuracy": n / t if t else 0.0}
            for c, n, t in zip(self.classes, self.correct, self.total, strict=True)
        ]


def prototypes(support: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Mean normalised embedding per class 0..n_classes-1: (n_classes, D). Every class needs a row."""
    support = F.normalize(support.float(), dim=1)
    sums = torch.zeros(n_classes, support.shape[1], dtype=support.dtype, device=support.device)
    sums.index_add_(0, labels, support)
    counts = torch.bincount(labels, minlength=n_classes).clamp_(min=1).unsqueeze(1)
    return sums / counts


def distances(queries: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances (Q, C) from normalised queries to prototypes."""
    return torch.cdist(F.normalize(queries.float(), dim=1), protos).pow(2)


def default_queries(labels: torch.Tensor, max_shots: int) -> int:
    """Queries per class for episodes of up to `max_shots` shots: QUERIES, or fewer on a small set (at least 1)."""
    fewest = int(torch.bincount(labels.cpu(), minlength=10).min())
    return max(1, min(QUERIES, fewest - max_shots))


def check_episodes(labels: torch.Tensor, max_shots: int) -> None:
    """Raise `DataError` unless every digit has more than `max_shots` images (a support and a query)."""
    fewest = int(torch.bincount(labels.cpu(), minlength=10).min())
    if fewest <= max_shots:
        raise DataError(
            f"few-shot episodes of {max_shots} shots need more than {max_shots} test images of every digit; "
            f"the test set has {fewest} of one"
        )


def _draw(
    labels: torch.Tensor, classes: list[int], ways: int, per: int, episodes: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Episode draws: (chosen (E, ways) indices into `classes`, picks (E, ways, per) image indices).

    The draws depend only on the labels and the arguments, so a model and the pixel baseline
    given the same arguments see the very same episodes.
    """
    if ways > len(classes) or ways < 2:
        raise ValueError(f"{ways}-way episodes need between 2 and {len(classes)} classes")
    gen = torch.Generator().manual_seed(seed)
    labels = labels.cpu()
    pools = [torch.nonzero(labels == c).flatten() for c in classes]
    if min(len(p) for p in pools) < per:
        raise ValueError(f"each class needs at least {per} images for these episodes")
    chosen = torch.rand(episodes, len(classes), generator=gen).argsort(dim=1)[:, :ways]
    picks = torch.empty(episodes, ways, per, dtype=torch.long)
    for k, pool in enumerate(pools):
        where = chosen == k
        n = int(where.sum())
        if n:  # distinct images within a class: a random prefix of a permutation of its pool
            picks[where] = pool[torch.rand(n, len(pool), generator=gen).argsort(dim=1)[:, :per]]
    return chosen, picks


def _episode_distances(
    emb: torch.Tensor, picks: torch.Tensor, shots: int, on_episodes: Tick | None = None
) -> torch.Tensor:
    """Squared distances (E, ways * queries, ways) from each query to each prototype, episode by episode."""
    out = []
    for block in picks.split(EPISODE_BLOCK):  # bounded memory: pixels are 784 floats per image
        x = emb[block]  # (e, ways, per, D)
        protos = x[:, :, :shots].mean(dim=2)
        q = x[:, :, shots:].flatten(1, 2)
        out.append(torch.cdist(q, protos).pow_(2))
        if on_episodes is not None:
            on_episodes(len(block))
    return torch.cat(out)


def episode_distances(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    classes: list[int],
    ways: int,
    shots: int,
    episodes: int,
    queries: int,
    seed: int = 0,
    on_episodes: Tick | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw the episodes and measure them: (squared distances (E, ways * queries, ways) from each
    query to each prototype, the true prototype of each query (E, ways * queries), the classes
    chosen (E, ways) as indices into `classes`)."""
    chosen, picks = _draw(labels, classes, ways, shots + queries, episodes, seed)
    d = _episode_distances(F.normalize(embeddings.float().cpu(), dim=1), picks, shots, on_episodes)
    truth = torch.arange(ways).repeat_interleave(queries).expand(episodes, -1)
    return d, truth, chosen


def run_episodes(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    classes: list[int],
    ways: int,
    shots: int,
    episodes: int = EPISODES,
    queries: int | None = None,
    seed: int = 0,
    on_episodes: Tick | None = None,
) -> EpisodeResult:
    """Mean accuracy of `episodes` `ways`-way `shots`-shot episodes over `classes` of (embeddings, labels).

    Each episode picks `ways` of `classes`, then `shots` + `queries` distinct images of each
    (`queries` defaults to QUERIES, or fewer if a class has too few images). Raises ValueError
    if there are too few classes or images. `on_episodes(n)` hears of each block of episodes done.
    """
    if queries is None:
        queries = min(QUERIES, min((int((labels == c).sum()) for c in classes), default=0) - shots)
    if queries < 1:
        raise ValueError(f"{shots}-shot episodes need more images of every class")
    d, truth, chosen = episode_distances(embeddings, labels, classes, ways, shots, episodes, queries, seed, on_episodes)
    hit = d.argmin(dim=2) == truth
    acc = hit.float().mean(dim=1)
    ci = 1.96 * float(acc.std()) / math.sqrt(episodes) if episodes > 1 else 0.0
    by_class = chosen.unsqueeze(2).expand(-1, -1, queries).reshape(episodes, -1)
    correct = torch.bincount(by_class[hit], minlength=len(classes))
    total = torch.bincount(by_class.flatten(), minlength=len(classes))
    return EpisodeResult(
        ways, shots, episodes, queries, list(classes), float(acc.mean()), ci, correct.tolist(), total.tolist()
    )


def confidences(d2: torch.Tensor, scale: float) -> torch.Tensor:
    """Softmax over classes of -scale x squared distance: (Q, C) -> (Q, C)."""
    return torch.softmax(-scale * d2, dim=-1)


def best_scale(d2: torch.Tensor, truth: torch.Tensor) -> float:
    """The scale of least log loss for squared distances (E, Q, C) and true classes (E, Q).

    A one-dimensional search over a log-spaced grid (0.1 to 1,000): simple, and the log loss is
    smooth in the scale.
    """
    grid = torch.logspace(-1, 3, 81)
    losses = [float(F.cross_entropy((-s * d2).flatten(0, 1), truth.flatten())) for s in grid]
    return float(grid[int(torch.tensor(losses).argmin())])


def calibrate(embeddings: torch.Tensor, labels: torch.Tensor, episodes: int = 200, seed: int = 0) -> float | None:
    """The `scale` whose `confidences` best fit 1-shot episodes among the classes in `labels`.

    Returns None if there are too few images to draw episodes.
    """
    classes = sorted(int(c) for c in labels.unique())
    fewest = min(int((labels == c).sum()) for c in classes) if classes else 0
    if len(classes) < 2 or fewest < 2:
        return None
    ways, queries = min(10, len(classes)), min(QUERIES, fewest - 1)
    d, truth, _ = episode_distances(embeddings, labels, classes, ways, 1, episodes, queries, seed)
    return best_scale(d, truth)
