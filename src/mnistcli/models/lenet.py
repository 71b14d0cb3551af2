"""`lenet`: a LeNet-style CNN, conv 6 and 12 filters of 5x5 with max-pooling, then 192-120-60-10."""

from __future__ import annotations

from torch import nn

from mnistcli.models.base import Classifier
from mnistcli.registry import register_model


@register_model(
    "lenet",
    family="classify",
    description="LeNet-style CNN: conv 6@5x5, pool, conv 12@5x5, pool, 192-120-60-10",
    epochs=12,
    batch_size=128,
    optimizer="adam",
    lr=2e-3,
    scheduler="onecycle",
)
def lenet() -> Classifier:
    """28x28 -> conv 6 -> 24x24 -> pool -> 12x12 -> conv 12 -> 8x8 -> pool -> 4x4x12 = 192."""
    body = nn.Sequential(
        nn.Conv2d(1, 6, 5),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 12, 5),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(192, 120),
        nn.ReLU(inplace=True),
        nn.Linear(120, 60),
        nn.ReLU(inplace=True),
    )
    return Classifier(body, feature_dim=60)
