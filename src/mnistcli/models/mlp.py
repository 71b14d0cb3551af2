"""`mlp` (the classic 784-490-10) and `mlp-deep` (four linear layers)."""

from __future__ import annotations

from torch import nn

from mnistcli.models.base import Classifier
from mnistcli.registry import register_model


@register_model(
    "mlp",
    family="classify",
    description="one hidden layer of 490 LeakyReLU units (784-490-10)",
    epochs=15,
    batch_size=128,
    optimizer="adam",
    lr=1e-3,
    scheduler="cosine",
)
def mlp(hidden: int = 490) -> Classifier:
    """The classic multilayer perceptron; features are the hidden activations."""
    body = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, hidden), nn.LeakyReLU())
    return Classifier(body, feature_dim=hidden)


@register_model(
    "mlp-deep",
    family="classify",
    description="four linear layers (784-512-256-128-10) with batch norm and dropout",
    epochs=15,
    batch_size=128,
    optimizer="adamw",
    lr=3e-3,
    weight_decay=1e-2,
    scheduler="onecycle",
    augment=True,
)
def mlp_deep(widths: tuple[int, ...] = (512, 256, 128), dropout: float = 0.2) -> Classifier:
    """Three hidden layers (Linear, BatchNorm, ReLU, Dropout) then the linear head."""
    layers: list[nn.Module] = [nn.Flatten()]
    fan_in = 28 * 28
    for width in widths:
        layers += [
            nn.Linear(fan_in, width, bias=False),
            nn.BatchNorm1d(width),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        ]
        fan_in = width
    return Classifier(nn.Sequential(*layers), feature_dim=fan_in)
