"""`mil`, `mil-gated`, `mil-max`: attention-based multiple-instance learning on bags of digits (Ilse et al., 2018).

A bag is a set of images with one label. Each image goes through the instance network (conv 20
and 50 filters of 5x5 with max-pooling, fc 500, as in the paper); the bag's representation is a
weighted mean of its instances' features, the weights a softmax over the bag of a small
attention network's scores (500 -> 128 tanh -> 1; the gated version multiplies the tanh by a
sigmoid gate). `mil-max` is the instance-level baseline: each instance scores itself and the
bag takes the maximum. Padding instances (mask False) get no weight and never go through the
network.

`instance="simclr"` swaps the instance network for SimCLR's encoder (`cnn_body`, 36 x width
features), so `mnist train mil --encoder RUN` can start from a self-supervised run's weights. Its
batch-norm statistics stay those of the encoder (estimated on 60,000 images; a bag of ten is too
small a batch to estimate them: fine-tuning that updated them did clearly worse on validation
bags, docs/models.md). With `frozen=True` its
weights stay too, and only the attention and the head learn.
"""

from __future__ import annotations

import torch
from torch import nn

from mnistcli.models.base import prepare
from mnistcli.models.cnn import cnn_body
from mnistcli.registry import register_model

# One bag per step as in the paper (padded batches of 8 learned far slower per epoch: see docs/models.md), weight
# decay 1e-4 as published, and what was measured to help on validation bags drawn from held-out training images
# (benchmarks/mil_recipe.py, docs/models.md): a random affine of every image, three remixed bags per training bag
# each epoch, Adam at half the published rate (2.5e-4) and a cosine schedule. The 15 epochs are for 50 training
# bags; the bags family scales them to the number of bags (families/bags.py: `epochs_for`). (`--instance-loss`
# did not help on the previous recipe, one remixed bag, Adam 5e-4, 30 epochs: mean validation AUC over 4 seeds
# 0.820 with weight 1, 0.882 without.)
RECIPE = {
    "epochs": 15,
    "batch_size": 1,
    "optimizer": "adam",
    "lr": 2.5e-4,
    "weight_decay": 1e-4,
    "scheduler": "cosine",
    "augment": True,
    "remix": 3,
    "restarts": 2,
    "attempts": 3,  # at most 50 training bags: three attempts, the best kept, instead of restarts (families/bags.py)
    "pretrain_epochs": 30,  # at most 50 bags, no --encoder: SimCLR on the bags' own images first (families/bags.py)
    "keep": "best",  # the attempt that fits its bags best; from --encoder "mean": those that fit (families/bags.py)
}


def instance_net() -> nn.Sequential:
    """28x28 -> conv 20 -> 24 -> pool 12 -> conv 50 -> 8 -> pool 4 -> 800 -> 500."""
    return nn.Sequential(
        nn.Conv2d(1, 20, 5),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(20, 50, 5),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(800, 500),
        nn.ReLU(inplace=True),
    )


class AttentionMIL(nn.Module):
    """Bags (B, L, 1, 28, 28) with a mask (B, L) -> (bag logits (B,), instance weights (B, L))."""

    def __init__(
        self,
        pooling: str = "attention",
        hidden: int = 128,
        instance: str = "lenet",
        width: int = 16,
        frozen: bool = False,
    ) -> None:
        super().__init__()
        if pooling not in ("attention", "gated", "max"):
            raise ValueError(f"pooling must be attention, gated or max, not {pooling!r}")
        if instance not in ("lenet", "simclr"):
            raise ValueError(f"instance must be lenet or simclr, not {instance!r}")
        if hidden < 1 or width < 1:
            raise ValueError("hidden and width must be at least 1")
        self.pooling, self.frozen = pooling, frozen
        self.fixed_statistics = frozen or instance == "simclr"  # see the module docstring
        self.channels_last = instance == "simclr"
        if instance == "simclr":
            body = cnn_body(width)
            self.body: nn.Module = body.to(memory_format=torch.channels_last)
            self.feature_dim = body.out_features
        else:
            self.body, self.feature_dim = instance_net(), 500
        if frozen:
            self.body.requires_grad_(False)
        d = self.feature_dim
        attends = pooling != "max"
        self.score = nn.Sequential(nn.Linear(d, hidden), nn.Tanh()) if attends else None
        self.gate = nn.Sequential(nn.Linear(d, hidden), nn.Sigmoid()) if pooling == "gated" else None
        self.weight = nn.Linear(hidden, 1) if attends else None
        self.head = nn.Linear(d, 1)

    def train(self, mode: bool = True) -> AttentionMIL:
        super().train(mode)
        if self.fixed_statistics:
            self.body.eval()  # batch norm normalises with its running statistics and leaves them be
        return self

    def redraw(self, body: bool = True) -> None:
        """Draw fresh initial weights (from the global random state) for the attention and the head, and for the
        instance network too if `body` (not when it came from an encoder)."""
        parts = [m for m in (self.score, self.gate, self.weight, self.head) if m is not None]
        for part in [*parts, *([self.body] if body else [])]:
            for module in part.modules():
                reset = getattr(module, "reset_parameters", None)  # linear, conv and batch-norm layers
                if callable(reset):
                    reset()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Instance features (N, feature_dim) of images (N, 1, 28, 28) in [0, 1]."""
        return self.body(prepare(x, self.channels_last))

    def forward(self, bags: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(bag logits (B,), instance weights (B, L): zero for padding, summing to one over each bag)."""
        logits, weights, _ = self.pool(bags, mask)
        return logits, weights

    def pool(self, bags: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(bag logits, instance weights, instance logits (B, L); -inf for padding).

        The head is linear, so an attention bag's logit is the weighted mean of its instances' logits
        (the head applied to each image's features); a max bag's is their maximum."""
        h = bags.new_zeros(*mask.shape, self.feature_dim)
        h[mask] = self.features(bags[mask]).to(h.dtype)  # padding never goes through the network
        instance = self.head(h).squeeze(-1).masked_fill(~mask, float("-inf"))
        if self.pooling == "max":
            weights = torch.softmax(instance, dim=1)  # what each instance contributes to the decision, for display
            return instance.amax(dim=1), weights, instance
        assert self.score is not None and self.weight is not None
        a = self.score(h)
        if self.gate is not None:
            a = a * self.gate(h)
        weights = torch.softmax(self.weight(a).squeeze(-1).masked_fill(~mask, float("-inf")), dim=1)
        bag = (weights.unsqueeze(-1) * h).sum(dim=1)
        return self.head(bag).squeeze(-1), weights, instance


class MILCommittee(nn.Module):
    """Attention-MIL models trained apart (the attempts of one run, `--keep mean`) answering as one: a bag's
    probability is the mean of theirs, each image's attention weight the mean of theirs, and an image's features
    theirs side by side. It is built from a checkpoint like any model and measured, predicted and embedded as one;
    it is never trained itself."""

    def __init__(self, members: list[AttentionMIL]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError("a committee needs at least 2 members")
        self.members = nn.ModuleList(members)
        self.pooling = members[0].pooling
        self.feature_dim = sum(m.feature_dim for m in members)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The members' instance features side by side (N, sum of their feature_dim)."""
        return torch.cat([m.features(x) for m in self.members], dim=1)  # type: ignore[operator]

    def forward(self, bags: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, weights, _ = self.pool(bags, mask)
        return logits, weights

    def pool(self, bags: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(the log-odds of the members' mean bag probability, their mean weights, their mean instance logits)."""
        outs = [m.pool(bags, mask) for m in self.members]  # type: ignore[operator]
        probability = torch.stack([torch.sigmoid(o[0].float()) for o in outs]).mean(0)
        weights = torch.stack([o[1] for o in outs]).mean(0)
        instance = torch.stack([o[2] for o in outs]).mean(0)  # padding stays -inf
        return torch.logit(probability, eps=1e-7), weights, instance


def build(pooling: str, hidden: int, instance: str, width: int, frozen: bool, committee: int) -> nn.Module:
    """One attention-MIL model, or with `committee` above 1 a `MILCommittee` of that many."""
    if not 1 <= committee <= 10:
        raise ValueError("committee must be 1-10 (the attempts a run may train)")
    if committee == 1:
        return AttentionMIL(pooling, hidden, instance, width, frozen)
    return MILCommittee([AttentionMIL(pooling, hidden, instance, width, frozen) for _ in range(committee)])


@register_model(
    "mil", family="bags", description="attention MIL (Ilse et al. 2018): conv 20-50, fc 500, attention 128", **RECIPE
)
def mil(
    hidden: int = 128, instance: str = "lenet", width: int = 16, frozen: bool = False, committee: int = 1
) -> nn.Module:
    return build("attention", hidden, instance, width, frozen, committee)


@register_model("mil-gated", family="bags", description="gated attention MIL: attention with a sigmoid gate", **RECIPE)
def mil_gated(
    hidden: int = 128, instance: str = "lenet", width: int = 16, frozen: bool = False, committee: int = 1
) -> nn.Module:
    return build("gated", hidden, instance, width, frozen, committee)


@register_model(
    "mil-max",
    family="bags",
    description="instance-level MIL baseline: each digit scores itself, the bag takes the max",
    **RECIPE,
)
def mil_max(instance: str = "lenet", width: int = 16, frozen: bool = False, committee: int = 1) -> nn.Module:
    return build("max", 128, instance, width, frozen, committee)
