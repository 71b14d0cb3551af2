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


def contrastive_view(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One SimCLR view of each image: a strong random affine and pixel noise or blur.

    Zoom in or out by up to 25% with a shift of up to 4 pixels (the digit's analogue of a random
    resized crop), rotation up to 15 degrees, shear up to 15 degrees; then, independently for each
    image, a 3x3 blur with probability one half and Gaussian noise (std up to 0.2) with probability
    one half (so a quarter get both and a quarter neither). Never a flip.
    """
    view = random_affine(x, generator, degrees=15.0, scale=0.25, shift=4.0, shear=15.0)
    n = view.shape[0]
    draws = torch.rand(n, 3, generator=generator).to(x.device)
    noise = torch.randn(view.shape, generator=generator).to(x.device) * (0.2 * draws[:, 0]).view(n, 1, 1, 1)
    kernel = torch.tensor([1.0, 2.0, 1.0], device=x.device)
    kernel = (kernel[:, None] * kernel[None, :] / 16).view(1, 1, 3, 3)
    blurred = F.conv2d(view, kernel, padding=1)
    use_noise = (draws[:, 1] < 0.5).view(n, 1, 1, 1)
    use_blur = (draws[:, 2] < 0.5).view(n, 1, 1, 1)
    view = torch.where(use_blur, blurred, view)
    return torch.where(use_noise, view + noise, view).clamp_(0.0, 1.0)


def real_world_view(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The classifier's augmentation for real-world input: the usual affine plus slant, pen width and focus.

    Per image: rotation up to 10 degrees, scale 1 +- 0.1, shift up to 2 pixels and shear (slant) up to
    15 degrees; then the strokes grown by a random fraction of a pixel (a blend towards a 3x3 max
    filter: a broader pen) or thinned (their soft edge cut away: a finer pen), and for half the images a random share of a 3x3
    blur (a photo slightly out of focus).
    """
    view = random_affine(x, generator, shear=15.0)
    n = view.shape[0]
    draws = torch.rand(n, 3, generator=generator).to(x.device)
    width = (draws[:, 0] * 2 - 1).view(n, 1, 1, 1)  # > 0: thicker, < 0: thinner
    grown = view + width * (F.max_pool2d(view, 3, stride=1, padding=1) - view)
    # A finer pen keeps a bright core and loses the soft edge: raise the black point by up to a half.
    cut = -0.5 * width
    thinned = ((view - cut) / (1 - cut)).clamp(min=0.0)
    view = torch.where(width > 0, grown, thinned)
    kernel = torch.tensor([1.0, 2.0, 1.0], device=x.device)
    kernel = (kernel[:, None] * kernel[None, :] / 16).view(1, 1, 3, 3)
    focus = (draws[:, 1] * (draws[:, 2] < 0.5)).view(n, 1, 1, 1)
    return (view + focus * (F.conv2d(view, kernel, padding=1) - view)).clamp_(0.0, 1.0)
