"""Classification: cross-entropy on the ten digits, accuracy as the metric."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mnistcli.dataset import TensorData
from mnistcli.inference import evaluate_classifier


class ClassifyTask:
    """Softmax classification of digits (with optional label smoothing while training)."""

    name = "classify"

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = label_smoothing

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean cross-entropy and the count of correct argmax predictions."""
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        return loss, (logits.argmax(dim=1) == y).sum()

    def evaluate(self, model: nn.Module, data: TensorData) -> dict[str, float]:
        """Plain (unsmoothed) loss and accuracy on `data`."""
        result = evaluate_classifier(model, data)
        return {"loss": result.loss, "accuracy": result.accuracy}
