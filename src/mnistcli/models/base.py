"""What every classifier shares: MNIST normalisation inside the model, features, then a head.

Every model takes (N, 1, 28, 28) float images in [0, 1] (white ink on black) and normalises them
itself, so a checkpoint needs no preprocessing beyond "pixels / 255". `features(x)` gives the
penultimate layer (what `mnist embed` prints); `forward(x)` gives the logits.
"""

from __future__ import annotations

import torch
from torch import nn

MEAN, STD = 0.1307, 0.3081  # of the MNIST training pixels, in [0, 1]


def prepare(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """Normalise images in [0, 1] with the MNIST mean and std, channels-last if the convs want it."""
    x = (x - MEAN) / STD
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


class Classifier(nn.Module):
    """`body` maps normalised images to (N, feature_dim) features; a linear `head` gives logits."""

    def __init__(self, body: nn.Module, feature_dim: int, num_classes: int = 10, channels_last: bool = False) -> None:
        super().__init__()
        self.body = body
        self.head = nn.Linear(feature_dim, num_classes)
        self.feature_dim = feature_dim
        self.channels_last = channels_last
        if channels_last:
            # For one input channel NCHW and NHWC share a layout, so only the weights change;
            # mkldnn and cuDNN convolutions run 1.5-2x faster in this format on a CPU here.
            self.to(memory_format=torch.channels_last)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features, shape (N, feature_dim)."""
        return self.body(prepare(x, self.channels_last))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, shape (N, num_classes)."""
        return self.head(self.features(x))
