"""Bags of MNIST digits for multiple-instance learning: the balanced MNIST-bags protocol (Ilse et al., 2018).

A bag is positive if it holds at least one target digit. Sizes are drawn from a normal
distribution (mean 10, standard deviation 2, at least 2); positive and negative bags alternate,
so the set is balanced; a negative bag holds no target; a positive bag is drawn from all digits
and, if the draw holds no target, one of its images is replaced by a random target. Everything
is drawn from the generator given, so a seed gives the same bags.
"""

from __future__ import annotations

import torch

from mnistcli.errors import DataError


def make_bags(
    labels: torch.Tensor, count: int, target: int, mean: float, std: float, generator: torch.Generator
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """(`count` bags as index tensors into `labels`, their labels 0/1), alternating positive and negative."""
    labels = labels.cpu()
    is_target = labels == target
    targets, others = torch.nonzero(is_target).flatten(), torch.nonzero(~is_target).flatten()
    if not len(targets) or not len(others):
        which = f"no image of digit {target}" if not len(targets) else f"only images of digit {target}"
        raise DataError(f"cannot draw bags: {which} (a positive bag holds a {target}, a negative bag none)")
    sizes = (torch.randn(count, generator=generator) * std + mean).round().clamp(min=2).long().tolist()
    bags, bag_labels = [], []
    for i, size in enumerate(sizes):
        positive = i % 2 == 0
        if positive:
            index = torch.randint(len(labels), (size,), generator=generator)
            if not is_target[index].any():
                index[torch.randint(size, (1,), generator=generator)] = targets[
                    torch.randint(len(targets), (1,), generator=generator)
                ]
        else:
            index = others[torch.randint(len(others), (size,), generator=generator)]
        bags.append(index)
        bag_labels.append(int(positive))
    return bags, torch.tensor(bag_labels)


def pad(images: torch.Tensor, bags: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(float bags (B, L, 1, 28, 28) in [0, 1], zero-padded to the longest, mask (B, L)) from uint8 `images`."""
    longest = max(len(b) for b in bags)
    x = torch.zeros(len(bags), longest, 1, 28, 28, device=images.device)
    mask = torch.zeros(len(bags), longest, dtype=torch.bool, device=images.device)
    for i, bag in enumerate(bags):
        x[i, : len(bag), 0] = images[bag.to(images.device)].float().div_(255.0)
        mask[i, : len(bag)] = True
    return x, mask
