"""`simclr`: a CNN encoder and a projection head, trained without labels by the NT-Xent loss.

`features(x)` is the encoder's output (what linear evaluation, `mnist embed` and one-shot use);
`forward(x)` is the projection the contrastive loss sees. The head is thrown away after
pretraining, as in SimCLR (Chen et al., 2020): the layer before it keeps more information.
"""

from __future__ import annotations

import torch
from torch import nn

from mnistcli.models.base import prepare
from mnistcli.models.cnn import cnn_body
from mnistcli.registry import register_model


class SimCLR(nn.Module):
    """Encoder: conv blocks w, 2w, 4w (pool-first, batch norm), flattened; head: MLP to `projection` dims."""

    def __init__(self, width: int = 16, hidden: int = 256, projection: int = 64) -> None:
        super().__init__()
        self.encoder = cnn_body(width)
        self.feature_dim = self.encoder.out_features
        self.projector = nn.Sequential(
            nn.Linear(self.feature_dim, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, projection),
        )
        self.to(memory_format=torch.channels_last)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder features (N, feature_dim) of images in [0, 1]."""
        return self.encoder(prepare(x, channels_last=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Projections (N, projection), not normalised (the loss normalises)."""
        return self.projector(self.features(x))


@register_model(
    "simclr",
    family="contrastive",
    description="SimCLR: CNN encoder (16-32-64) + projection head, NT-Xent on two views, no labels",
    epochs=30,
    batch_size=512,
    optimizer="adamw",
    lr=2e-3,
    weight_decay=1e-4,
    scheduler="onecycle",
    temperature=0.2,
)
def simclr(width: int = 16, hidden: int = 256, projection: int = 64) -> SimCLR:
    return SimCLR(width, hidden, projection)
