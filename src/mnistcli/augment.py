"""Whole-batch augmentation on the training device: one random affine warp per image.

A batch of 256 images is warped by one `affine_grid` + `grid_sample` call (about 1 ms on a CPU
here) instead of 256 PIL transforms. Digits are never flipped: a mirrored 2 is not a 2.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_affine(
    x: torch.Tensor,
    generator: torch.Generator,
    degrees: float = 10.0,
    scale: float = 0.1,
    shift: float = 2.0,
    shear: float = 0.0,
) -> torch.Tensor:
    """Rotate by up to `degrees`, scale by 1 +- `scale`, shift by up to `shift` pixels, shear by up to `shear` degrees.

    `x` is (N, C, H, W) float; the random draws come from the CPU `generator` (so runs repeat on
    any device) and the warp runs where `x` is. Returns a new tensor of the same shape.
    """
    n, _, h, w = x.shape
    draws = torch.rand(n, 5, generator=generator).mul_(2).sub_(1).to(x.device)  # uniform in [-1, 1]
    angle = draws[:, 0] * math.radians(degrees)
    factor = 1.0 + draws[:, 1] * scale
    tx, ty = draws[:, 2] * (2 * shift / w), draws[:, 3] * (2 * shift / h)  # grid units span 2
    sh = torch.tan(draws[:, 4] * math.radians(shear))
    cos, sin = torch.cos(angle) / factor, torch.sin(angle) / factor
    theta = torch.stack(
        [torch.stack([cos, -sin + sh * cos, tx], dim=1), torch.stack([sin, cos + sh * sin, ty], dim=1)], dim=1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
