"""`adder`: an image and a number 0-9 in; the digit in the image and the sum of the two out.

The image goes through `cnn`'s conv blocks (16-32-64, 576 features) to a digit head (10 logits).
The number enters as a one-hot vector. The sum head does not see the image features: it sees the
*outer product* of the digit probabilities and the one-hot number (100 values: "how likely is it
that the digit is d and the number is n"), through one linear layer to 19 logits. That layer must
still learn the addition table from the training data; once it has, it makes no mistake the digit
head does not make: whatever the digit head believes, the sum head turns into a sum. The reported
version (image features and number concatenated into a shared hidden layer) reached 99.24% on the
digit and only 92.5% on the sum: it had to learn to recognise digits twice, once per head.

`--arg head=concat` builds that reported design instead (image features and one-hot number
concatenated, a 128-unit ReLU layer, 19 logits), for comparison.

`forward(x, n)` returns (digit logits, sum logits); `features(x)` the 576 image features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mnistcli.models.base import prepare
from mnistcli.models.cnn import RECIPE, cnn_body
from mnistcli.registry import register_model

SUMS = 19  # 0 + 0 ... 9 + 9


HEADS = ("product", "concat")


class Adder(nn.Module):
    """Digit head on CNN features; sum head on (digit probabilities x one-hot number), or `head="concat"`."""

    def __init__(self, width: int = 16, head: str = "product") -> None:
        super().__init__()
        if width < 1:
            raise ValueError("width must be at least 1")
        if head not in HEADS:
            raise ValueError(f"head must be one of {', '.join(HEADS)}")
        self.body = cnn_body(width)
        self.feature_dim = self.body.out_features
        self.head = head
        self.digit_head = nn.Linear(self.feature_dim, 10)
        self.sum_head: nn.Module = (
            nn.Linear(100, SUMS)
            if head == "product"
            else nn.Sequential(nn.Linear(self.feature_dim + 10, 128), nn.ReLU(inplace=True), nn.Linear(128, SUMS))
        )
        self.to(memory_format=torch.channels_last)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Image features (N, 576) of images in [0, 1]."""
        return self.body(prepare(x, channels_last=True))

    def forward(self, x: torch.Tensor, n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(digit logits (N, 10), sum logits (N, 19)) for images `x` and numbers `n` (N,) in 0-9."""
        features = self.features(x)
        digit_logits = self.digit_head(features)
        number = F.one_hot(n, 10).to(digit_logits.dtype)
        if self.head == "concat":
            return digit_logits, self.sum_head(torch.cat([features, number], dim=1))
        joint = torch.softmax(digit_logits, dim=1).unsqueeze(2) * number.unsqueeze(1)  # (N, 10 digits, 10 numbers)
        return digit_logits, self.sum_head(joint.flatten(1))


@register_model(
    "adder",
    family="adder",
    description="image + number 0-9 -> digit and sum: CNN (16-32-64) digit head, sum head on digit x number",
    **RECIPE,
)
def adder(width: int = 16, head: str = "product") -> Adder:
    return Adder(width, head)
