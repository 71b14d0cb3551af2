"""Grouping unlabelled embeddings (protocols/clustering.py) and the sampler's self-labelled batches."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mnistcli.engine.sampling import ClassBalanced
from mnistcli.protocols import clustering


def _blobs(groups: int = 5, per: int = 80, dim: int = 16, spread: float = 0.15, seed: int = 0) -> torch.Tensor:
    """`groups` tight blobs of `per` points around random unit centres, in order: (groups x per, dim)."""
    gen = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(groups, dim, generator=gen), dim=1)
    return centres.repeat_interleave(per, dim=0) + spread * torch.randn(groups * per, dim, generator=gen) / dim**0.5


def test_neighbours_match_brute_force_and_never_include_oneself() -> None:
    x = torch.randn(300, 8, generator=torch.Generator().manual_seed(1))
    near = clustering.neighbours(x, k=5, block=64)  # several blocks, the last one short
    e = F.normalize(x, dim=1)
    sim = e @ e.T
    sim.fill_diagonal_(-2.0)
    assert torch.equal(near, sim.topk(5, dim=1).indices)
    assert not (near == torch.arange(300)[:, None]).any()


def test_clustering_finds_separated_groups_and_repeats_with_its_generator() -> None:
    x = _blobs()
    truth = torch.arange(5).repeat_interleave(80)
    first = clustering.cluster(x, 5, torch.Generator().manual_seed(0))
    again = clustering.cluster(x, 5, torch.Generator().manual_seed(0))
    assert torch.equal(first.groups, again.groups) and torch.equal(first.probabilities, again.probabilities)
    assert clustering.cluster_accuracy(first.groups, truth) == 1.0
    assert sorted(torch.bincount(first.groups, minlength=5).tolist()) == [80] * 5  # one group per blob
    summary = first.summary()
    assert summary["kept"] == sum(summary["sizes"]) and 0.5 < summary["share"] <= 1.0  # type: ignore[operator]


def test_only_confident_images_get_a_self_label() -> None:
    probabilities = torch.tensor([[0.995, 0.005], [0.6, 0.4], [0.001, 0.999]])
    confidence, groups = probabilities.max(dim=1)
    head = torch.nn.Linear(2, 2)
    grouping = clustering.Grouping(groups, confidence, probabilities, clustering.CONFIDENCE, head, [0.5, 0.25], 1)
    assert grouping.self_labels().tolist() == [0, -1, 1]
    assert grouping.summary() == {"kept": 2, "share": 2 / 3, "sizes": [1, 1], "head": 1, "losses": [0.5, 0.25]}


def test_the_head_of_least_loss_is_kept_and_answers_for_new_embeddings() -> None:
    x = _blobs()
    grouping = clustering.cluster(x, 5, torch.Generator().manual_seed(3), heads=3)
    assert len(grouping.losses) == 3 and grouping.losses[grouping.kept] == min(grouping.losses)
    assert torch.allclose(grouping.probabilities_of(x), grouping.probabilities)
    near = clustering.neighbours(x, 20)
    layer = clustering.scan_heads(x, near, 5, torch.Generator().manual_seed(3), heads=3)
    losses = clustering.head_losses(layer, x, near, 5, clustering.ENTROPY_WEIGHT)
    assert losses.shape == (3,) and torch.isfinite(losses).all()


def test_clustering_refuses_too_little_and_handles_fewer_images_than_neighbours() -> None:
    try:
        clustering.cluster(torch.randn(5, 4), 1, torch.Generator())
    except ValueError as e:
        assert "2 clusters" in str(e)
    else:
        raise AssertionError("one cluster was accepted")
    small = clustering.cluster(_blobs(2, 6), 2, torch.Generator().manual_seed(0))  # 12 images, 20 neighbours asked
    assert small.groups.shape == (12,)


def test_cluster_accuracy_counts_each_groups_majority() -> None:
    groups = torch.tensor([0, 0, 0, 1, 1, 2])
    labels = torch.tensor([3, 3, 4, 5, 5, 3])
    assert clustering.cluster_accuracy(groups, labels) == 5 / 6


def test_the_sampler_draws_self_labelled_groups_balanced_then_goes_back_to_the_permutation() -> None:
    labels = torch.tensor([0] * 10 + [1] * 10)
    sampler = ClassBalanced(labels, 4, steps=3, extra=50, extra_size=12)
    groups = torch.full((50,), -1)
    groups[:10], groups[20:30], groups[40:43] = 0, 1, 2  # three groups; the rest left out
    sampler.group(groups)
    for labelled, extra in sampler.epoch(torch.Generator().manual_seed(0)):
        assert torch.bincount(labels[labelled]).tolist() == [4, 4]
        assert torch.bincount(groups[extra]).tolist() == [4, 4, 4] and (groups[extra] >= 0).all()
    sampler.group(None)
    extras = torch.cat([extra for _, extra in sampler.epoch(torch.Generator().manual_seed(0))])
    assert len(set(extras.tolist())) == len(extras) == 36  # the next 12 of one permutation per batch
    try:
        sampler.group(torch.full((50,), -1))
    except ValueError as e:
        assert "no group" in str(e)
    else:
        raise AssertionError("groups with no item were accepted")
    shared = ClassBalanced(labels, 4, steps=1, extra=50, extra_size=12, smallest_group=4)  # 2 processes: 2 each
    shared.group(groups)
    _, extra = next(iter(shared.epoch(torch.Generator().manual_seed(0))))
    assert torch.bincount(groups[extra]).tolist() == [4, 4, 4]


def test_tsne_keeps_groups_apart_and_repeats() -> None:
    from mnistcli.protocols import maps

    x = _blobs(groups=4, per=25, dim=32, spread=0.3)
    truth = torch.arange(4).repeat_interleave(25)
    first, again = maps.tsne(x, perplexity=10), maps.tsne(x, perplexity=10)
    assert first.shape == (100, 2) and torch.equal(first, again)
    d = torch.cdist(first, first).fill_diagonal_(float("inf"))
    assert (truth[d.argmin(dim=1)] == truth).all()  # every point's nearest point on the map is of its group
    assert torch.equal(maps.sample(50, size=100), torch.arange(50))
    drawn = maps.sample(1000, size=10)
    assert len(drawn) == 10 and torch.equal(drawn, drawn.sort().values) and torch.equal(drawn, maps.sample(1000, 10))


def test_pca_projects_onto_the_widest_directions() -> None:
    from mnistcli.protocols import maps

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(500, 3, generator=gen) * torch.tensor([5.0, 2.0, 0.1])
    points, ratio = maps.pca(x)
    assert points.shape == (500, 2) and ratio[0] > ratio[1] > 0 and float(ratio.sum()) > 0.99
    assert abs(float(points[:, 0].std()) - 5.0) < 0.5
