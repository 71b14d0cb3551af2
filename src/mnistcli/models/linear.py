"""`linear`: single-layer softmax regression, 784 pixels straight to 10 logits."""

from __future__ import annotations

from torch import nn

from mnistcli.models.base import Classifier
from mnistcli.registry import register_model


@register_model(
    "linear",
    family="classify",
    description="single-layer softmax regression (784-10)",
    epochs=10,
    batch_size=128,
    optimizer="adam",
    lr=1e-3,
    scheduler="cosine",
)
def linear() -> Classifier:
    """Softmax regression: the features are the normalised pixels themselves."""
    return Classifier(nn.Flatten(), feature_dim=28 * 28)
