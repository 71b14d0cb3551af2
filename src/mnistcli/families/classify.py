"""Classification: cross-entropy on the ten digits, accuracy as the metric."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mnistcli.data.augment import random_affine, real_world_view
from mnistcli.data.tensors import TensorData
from mnistcli.families.base import ShuffledBatches
from mnistcli.protocols.inference import evaluate_classifier


class ClassifyTask(ShuffledBatches):
    """Softmax classification of digits (with optional label smoothing and augmentation while training)."""

    name = "classify"

    def __init__(
        self,
        label_smoothing: float = 0.0,
        augment: bool = False,
        generator: torch.Generator | None = None,
        robust: bool = False,
    ) -> None:
        # robust: the affine plus slant, pen width and blur (augment.real_world_view)
        self.label_smoothing, self.augment, self.robust = label_smoothing, augment, robust
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean cross-entropy and the count of correct argmax predictions (after a random affine, if augmenting)."""
        if self.augment:
            x = real_world_view(x, self.generator) if self.robust else random_affine(x, self.generator)
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        return loss, (logits.argmax(dim=1) == y).sum()

    def evaluate(self, model: nn.Module, data: TensorData) -> dict[str, float]:
        """Plain (unsmoothed) loss and accuracy on `data`."""
        result = evaluate_classifier(model, data)
        return {"loss": result.loss, "accuracy": result.accuracy}
