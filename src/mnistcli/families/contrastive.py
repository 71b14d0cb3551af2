"""Contrastive self-supervision (SimCLR): two views of each image, the NT-Xent loss, no labels.

For a batch of N images the model sees 2N views; each view's positive is the other view of its
image and the 2N - 2 others are its negatives. The reported "accuracy" is how often a view's most
similar other view is its positive (top-1 of 2N - 1), a cheap sign that learning is going well.
The labels in a batch are never looked at.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mnistcli.config import TrainConfig
from mnistcli.data.augment import contrastive_view, random_affine
from mnistcli.data.tensors import TensorData
from mnistcli.engine.loop import Step
from mnistcli.errors import UsageError
from mnistcli.families import register_family
from mnistcli.families.base import Data, EvalData, EvalOptions, Family, TestResult, classifier_report
from mnistcli.protocols.export import EMBEDDING
from mnistcli.protocols.inference import eval_mode
from mnistcli.protocols.linear_probe import frozen, linear_evaluation, pixels
from mnistcli.reports import EvalReport
from mnistcli.work import WorkFn


def nt_xent(z: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """NT-Xent over 2N projections (views i and i + N are a pair); returns (mean loss, top-1 hits)."""
    n = z.shape[0] // 2
    z = F.normalize(z.float(), dim=1)
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))  # a view is not its own positive or negative
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target), (sim.argmax(dim=1) == target).sum()


def pretrain(
    features: Callable[[torch.Tensor], torch.Tensor],
    parameters: Iterable[nn.Parameter],
    dim: int,
    images: torch.Tensor,
    generator: torch.Generator,
    epochs: int,
    batch: int = 128,
    lr: float = 1e-3,
    temperature: float = 0.5,
) -> list[float]:
    """SimCLR on a few images, no label read: train the network behind `features` (float images (N, 1, 28, 28) ->
    (N, `dim`); its `parameters`) for `epochs` over `images` (uint8 (N, 28, 28)), through a projection head
    (`dim` -> 128 -> 64) that is thrown away after. Two `contrastive_view`s of each image per step, batches of
    `batch` images in a fresh order each epoch, Adam (`lr`, weight decay 1e-4). Returns each epoch's mean NT-Xent.

    The bags family starts its instance network this way from the training bags' own images (families/bags.py).
    """
    params = list(parameters)
    device = params[0].device
    head = nn.Sequential(nn.Linear(dim, 128), nn.ReLU(inplace=True), nn.Linear(128, 64)).to(device)
    optimizer = torch.optim.Adam([*params, *head.parameters()], lr=lr, weight_decay=1e-4)
    losses = []
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator).to(images.device)
        total, steps = 0.0, 0
        for start in range(0, len(images), batch):
            index = order[start : start + batch]
            if len(index) < 2:  # a lone image has no negatives
                continue
            x = images[index].unsqueeze(1).float().div_(255.0)
            views = torch.cat([contrastive_view(x, generator), contrastive_view(x, generator)])
            loss, _ = nt_xent(head(features(views)), temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, steps = total + float(loss.detach()), steps + 1
        losses.append(total / max(steps, 1))
    return losses


@dataclass
class ContrastiveParams:
    temperature: float = 0.2  # NT-Xent temperature

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise UsageError("--temperature must be positive")


@register_family
class ContrastiveFamily(Family):
    """SimCLR pretraining; views drawn from a generator of their own, seeded by the run's seed + 1."""

    exported = EMBEDDING

    name = "contrastive"
    tested_on_its_digits = False  # tested on every digit
    Params = ContrastiveParams
    train_label = val_label = "pair accuracy (a view's nearest view is its pair)"
    test_label = "linear evaluation (test)"
    eval_options = frozenset({"labels_per_class", "seed"})
    learns_labels = False

    def __init__(self, params: Any, config: TrainConfig, generator: torch.Generator | None = None) -> None:
        super().__init__(params, config, generator)
        self.views = torch.Generator().manual_seed(config.seed + 1)

    @classmethod
    def check(cls, params: Any, config: TrainConfig) -> None:
        if config.target_accuracy is not None:
            raise UsageError(
                "--target-accuracy is for classifiers; a contrastive model has no accuracy while it trains"
            )
        if config.batch_size < 2:
            raise UsageError(
                "--batch-size must be at least 2 for a contrastive model (the other images are its negatives)"
            )

    def generators(self) -> dict[str, torch.Generator]:
        return {"views": self.views}

    def augment(self, batch: Any) -> Any:
        """Two fresh views of every image (labels unread)."""
        x, _ = batch
        if self.config.augment:  # --augment: an extra mild affine of each image before its views (off in the recipe)
            x = random_affine(x, self.generator)
        return contrastive_view(x, self.views), contrastive_view(x, self.views)

    def step(self, model: nn.Module, batch: Any) -> Step:
        """NT-Xent of the two views of the batch; accuracy = pair hits per image (2N views)."""
        first, second = batch
        loss, hits = nt_xent(model(torch.cat([first, second])), self.params.temperature)
        return Step(loss, {"accuracy": hits.float() / 2}, len(first))

    @torch.inference_mode()
    def validate(self, model: nn.Module, data: TensorData) -> dict[str, float]:
        """Mean NT-Xent and top-1 pair accuracy on `data`, in batches of 512 images, fixed views."""
        generator = torch.Generator().manual_seed(0)
        loss_sum, hits, views = 0.0, 0, 0
        with eval_mode(model):
            for x, _ in data.batches(512):
                pair = torch.cat([contrastive_view(x, generator), contrastive_view(x, generator)])
                loss, n_hits = nt_xent(model(pair), self.params.temperature)
                loss_sum += float(loss) * len(pair)
                hits += int(n_hits)
                views += len(pair)
        return {"loss": loss_sum / max(views, 1), "accuracy": hits / max(views, 1)}

    def test(self, model: nn.Module, data: Data, on_work: WorkFn | None = None) -> TestResult:
        """Linear evaluation with every training label, all ten digits: what `mnist eval` reports by default."""
        probe = linear_evaluation(frozen(model), data.full_train, data.full_test, on_work=on_work)
        return TestResult(probe.accuracy, probe.loss, "linear evaluation")

    def evaluate(
        self, run: Any, model: nn.Module, data: EvalData, options: EvalOptions, on_work: WorkFn | None = None
    ) -> EvalReport:
        """Linear evaluation as in `test` (or on `options.labels_per_class` labels per digit, drawn with
        `options.seed`), beside the same probe on raw pixels."""
        train, test = data.train(), data.test()
        k, seed = options.labels_per_class, options.seed or 0
        fewest = int(torch.bincount(train.labels, minlength=10).min())
        if k is not None and k > fewest:
            raise UsageError(f"--labels-per-class {k}: at most {fewest} (the fewest training images of any digit)")
        t0 = time.perf_counter()
        result = linear_evaluation(frozen(model), train, test, k, seed, on_work)
        base = linear_evaluation(pixels, train, test, k, seed, on_work, "raw-pixel baseline")
        return classifier_report(
            run,
            result,
            time.perf_counter() - t0,
            data.device,
            protocol="linear",
            labels_per_class=k,
            pixels_accuracy=base.accuracy,
        )
