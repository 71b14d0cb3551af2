"""The triplet family (metric learning): triplet loss with online mining in class-balanced batches, plus self-supervision.

The loss is Schroff et al.'s (FaceNet, 2015): L(a, p, n) = max(|f(a) - f(p)|^2 - |f(a) - f(n)|^2 + margin, 0)
on L2-normalised embeddings, with the triplets mined inside each batch of P classes x K images:
"batch-hard" takes each anchor's farthest positive and nearest negative (Hermans et al., 2017);
"semi-hard" takes, for every anchor-positive pair, the nearest negative that is still farther
than the positive (FaceNet), or the farthest negative when there is none.

A triplet network trained on a few labelled classes collapses every other digit onto their
clusters. So, unless `ssl_weight` is 0, each step also takes a batch of *unlabelled* training
images (labels never read) and adds SimCLR's NT-Xent on two views of them, computed through a
projection head on top of the embedding: the embedding must keep what tells any two digits apart,
not only the seen ones.

That embedding gets the neighbourhoods right (an image's nearest neighbour shows the same digit
98.7% of the time) but not the whole shape: one example of a digit never labelled is a poor
prototype for the rest (80% on 10-way 1-shot episodes). So, with `clusters` > 0 and images whose
labels the run does not read, every epoch from `cluster_from` on begins by grouping all the
unlabelled images by SCAN on the embedding as it is (protocols/clustering.py), and trains that
epoch on the confident ones as labelled (self-labelling): the triplet loss on class-balanced
batches of the groups, beside the labelled batch, in place of NT-Xent. The groups are worked out
afresh from the weights at each such epoch, so a resumed run finds the same ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mnistcli.config import MINING, TrainConfig
from mnistcli.data.augment import contrastive_view, random_affine
from mnistcli.data.tensors import TensorData, to_float
from mnistcli.engine.loop import Step
from mnistcli.engine.sampling import ClassBalanced, Sampler
from mnistcli.errors import UsageError
from mnistcli.families import register_family
from mnistcli.families.base import Data, Family, TestResult
from mnistcli.families.contrastive import nt_xent
from mnistcli.protocols import clustering, fewshot
from mnistcli.protocols.export import EMBEDDING
from mnistcli.protocols.inference import dataset_features
from mnistcli.work import Counter, WorkFn, notify, phase


def squared_distances(e: torch.Tensor) -> torch.Tensor:
    """(B, B) squared Euclidean distances between L2-normalised rows: 2 - 2 cos, clamped at 0."""
    return (2.0 - 2.0 * e @ e.T).clamp_(min=0.0)


def batch_hard(e: torch.Tensor, y: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean triplet loss over anchors with their hardest positive and hardest negative."""
    d = squared_distances(e)
    same = y[:, None] == y[None, :]
    eye = torch.eye(len(y), dtype=torch.bool, device=y.device)
    pos = same & ~eye
    valid = pos.any(dim=1) & (~same).any(dim=1)
    hardest_pos = d.masked_fill(~pos, float("-inf")).amax(dim=1)
    hardest_neg = d.masked_fill(same, float("inf")).amin(dim=1)
    loss = F.relu(hardest_pos - hardest_neg + margin)
    return loss[valid].mean() if valid.any() else e.sum() * 0.0


def semi_hard(e: torch.Tensor, y: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean triplet loss over every anchor-positive pair with its semi-hard negative."""
    d = squared_distances(e)
    same = y[:, None] == y[None, :]
    eye = torch.eye(len(y), dtype=torch.bool, device=y.device)
    pos = same & ~eye  # (a, p)
    neg = ~same  # (a, n)
    d_ap = d.unsqueeze(2)  # (a, p, 1)
    d_an = d.unsqueeze(1)  # (a, 1, n)
    farther = neg.unsqueeze(1) & (d_an > d_ap)  # (a, p, n)
    semi = d_an.masked_fill(~farther, float("inf")).amin(dim=2)  # nearest negative beyond the positive
    easiest = d.masked_fill(~neg, float("-inf")).amax(dim=1, keepdim=True).expand_as(semi)
    chosen = torch.where(torch.isinf(semi), easiest, semi)
    valid = pos & neg.any(dim=1, keepdim=True)
    loss = F.relu(d - chosen + margin)
    return loss[valid].mean() if valid.any() else e.sum() * 0.0


def nearest_neighbour_hits(e: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """How many rows' nearest other row (by distance) has the same label."""
    d = squared_distances(e).fill_diagonal_(float("inf"))
    return (y[d.argmin(dim=1)] == y).sum()


@dataclass
class TripletParams:
    margin: float = 0.2  # triplet-loss margin on squared distances between unit vectors
    mining: str = "batch-hard"  # triplet mining in each P x K batch: batch-hard or semi-hard
    ssl_weight: float = 0.0  # weight of NT-Xent on unlabelled training images beside the triplet loss (0: off)
    temperature: float = 0.2  # NT-Xent temperature of that self-supervision
    triplet_weight: float = 1.0  # weight of the triplet loss on the labelled images (0: off, to measure the rest)
    clusters: int = 0  # group the unlabelled images into this many clusters and self-label them (0: off)
    cluster_from: int = 1  # the first epoch that groups and self-labels (with clusters > 0)

    def __post_init__(self) -> None:
        if self.mining not in MINING:
            raise UsageError(f"unknown mining {self.mining!r} (choose from {', '.join(MINING)})")
        if self.margin <= 0:
            raise UsageError("--margin must be positive")
        if self.ssl_weight < 0:
            raise UsageError("--ssl-weight must be 0 (off) or positive")
        if self.temperature <= 0:
            raise UsageError("--temperature must be positive")
        if self.triplet_weight < 0:
            raise UsageError("--triplet-weight must be 0 (off) or positive")
        if self.clusters < 0 or self.clusters == 1:
            raise UsageError("--clusters must be 0 (off) or at least 2")
        if self.cluster_from < 1:
            raise UsageError("--cluster-from must be an epoch, 1 or more")
        if self.triplet_weight == 0 and self.ssl_weight == 0 and self.clusters == 0:
            raise UsageError("with --triplet-weight 0, --ssl-weight 0 and --clusters 0 there is nothing to learn from")


@register_family
class TripletFamily(Family):
    """Triplet loss on P x K labelled batches, optionally with NT-Xent on unlabelled images.

    `batch_size` images per labelled batch are split evenly among the training classes (P =
    number of classes, K = batch_size // P). With `ssl_weight` > 0, or a run that self-labels, an
    epoch is one pass over every training image (labels unread) in batches of `batch_size`, each
    step paired with a fresh labelled batch; otherwise an epoch is len(train) / batch_size labelled
    batches.
    """

    exported = EMBEDDING

    name = "triplet"
    tested_on_its_digits = False  # tested on every digit
    Params = TripletParams
    train_label = "accuracy (nearest in-batch neighbour)"
    val_label = "accuracy (nearest class mean)"
    test_label = "10-way 1-shot (test episodes)"
    fewshot_by_default = True
    suggested_model = "siamese"
    unlabelled: TensorData | None = None
    balanced: ClassBalanced | None = None  # the sampler, told each self-labelling epoch's groups
    self_labels: torch.Tensor | None = None  # the current epoch's group of every unlabelled image (-1: left out)
    unread = False  # whether some training images' labels are not read (--classes, --per-class)
    groups_images = False  # whether this run groups and self-labels (`clusters`, such images, epochs enough)

    @classmethod
    def check(cls, params: Any, config: TrainConfig) -> None:
        if config.batch_size < 2:
            raise UsageError("--batch-size must be at least 2 for a triplet model (the other images are its negatives)")
        if config.classes is not None and len(config.classes) < 2:
            raise UsageError(
                "a triplet model needs at least 2 classes in --classes (another class gives the negatives)"
            )
        classes = len(config.classes or range(10))
        if config.batch_size < 2 * classes:
            raise UsageError(
                f"--batch-size must be at least {2 * classes} for a triplet model on {classes} classes"
                " (a batch holds at least 2 images of each)"
            )
        if cls._may_self_label(params, config) and params.clusters > config.batch_size // 2:
            raise UsageError(
                f"--clusters {params.clusters}: at most {config.batch_size // 2} with --batch-size {config.batch_size}"
                " (a self-labelled batch holds at least 2 images of every group)"
            )
        if params.triplet_weight == 0 and params.ssl_weight == 0 and params.clusters > 0 and params.cluster_from > 1:
            raise UsageError(
                "with --triplet-weight 0 and --ssl-weight 0 nothing is learnt before --cluster-from: use --cluster-from 1"
            )

    @staticmethod
    def _may_self_label(params: Any, config: TrainConfig) -> bool:
        """Whether the options let a run self-label: clusters, epochs that reach --cluster-from, and some images
        whose labels are not read (--classes short of ten digits, or --per-class)."""
        some = config.per_class is not None or (config.classes is not None and len(set(config.classes)) < 10)
        return params.clusters > 0 and config.epochs >= params.cluster_from and some

    @classmethod
    def check_processes(cls, world: int, config: TrainConfig) -> None:
        classes = len(config.classes or range(10))
        if world > 1 and config.batch_size // classes < 2 * world:
            raise UsageError(
                f"--batch-size {config.batch_size} is the global batch: with {world} processes it must hold at least "
                f"{2 * world * classes} images ({2 * world} of each of the {classes} classes, so that every process "
                "has 2 of each)"
            )

    def prepare(self, data: Data) -> None:
        fewshot.check_episodes(data.full_test.labels, max(fewshot.SHOTS))  # before training, not after it
        super().prepare(data)
        # Self-labelling only where there are images whose labels the run does not read.
        held = len(data.train) + (len(data.val) if data.val is not None else 0)
        self.unread = len(data.full_train) > held
        self.groups_images = self.params.clusters > 0 and self.unread and self.config.epochs >= self.params.cluster_from
        if self.groups_images and len(data.full_train) < 2 * self.params.clusters:
            raise UsageError(
                f"--clusters {self.params.clusters}: at most {len(data.full_train) // 2} groups of the"
                f" {len(data.full_train)} training images (2 images each)"
            )
        if self.params.triplet_weight == 0 and self.params.ssl_weight == 0 and not self.groups_images:
            raise UsageError(
                "with --triplet-weight 0 and --ssl-weight 0 only self-labelling is left, and this run has none"
                " (it needs --clusters, --epochs reaching --cluster-from, and images whose labels it does not read)"
            )
        # Self-supervision and self-labelling may use every training image; their labels are never read.
        self.unlabelled = data.full_train if self.params.ssl_weight > 0 or self.groups_images else None

    def sampler(self, batch_size: int) -> Sampler:
        assert self.train is not None
        n = len(self.unlabelled) if self.unlabelled is not None else len(self.train)
        steps = max(1, n // batch_size)
        k = max(2, batch_size // len(self.train.labels.unique()))  # check() refuses batches under 2 x classes
        extra = len(self.unlabelled) if self.unlabelled is not None else 0
        device = self.train.labels.device
        self.balanced = ClassBalanced(self.train.labels, k, steps, extra, batch_size, device, 2 * self.processes)
        return self.balanced

    def self_labelling(self, epoch: int) -> bool:
        """Whether epoch `epoch` trains on self-labels."""
        return self.groups_images and epoch >= self.params.cluster_from

    def begin_epoch(self, generator: torch.Generator, epoch: int, model: nn.Module) -> None:
        """In a self-labelling epoch, group the unlabelled images by SCAN on `model`'s embedding and hand the confident
        groups to the sampler (from a generator of the seed and epoch alone: the run's draws are not touched)."""
        assert self.balanced is not None
        if epoch == 1 and self.params.clusters > 0 and self.unread and self.config.epochs < self.params.cluster_from:
            notify(
                self.on_work,
                f"no self-labelling: --epochs {self.config.epochs} ends before --cluster-from {self.params.cluster_from}",
            )
        if not self.self_labelling(epoch):
            self.balanced.group(None)
            self.self_labels = None
            return
        assert self.unlabelled is not None
        with phase(self.on_work, f"epoch {epoch}: grouping the unlabelled images"):
            embedded = dataset_features(model, self.unlabelled)
            draws = torch.Generator().manual_seed((self.config.seed * 1_000_003 + epoch) % 2**63)
            grouping = clustering.cluster(embedded, self.params.clusters, draws)
        sizes = grouping.sizes()
        if int((sizes >= 2).sum()) < 2:  # no negatives to learn from: this epoch trains as the ones before
            self.balanced.group(None)
            self.self_labels = None
            notify(
                self.on_work,
                f"epoch {epoch}: too few confident groups to self-label ({int(sizes.sum())} images);"
                " this epoch trains as the ones before",
            )
            return
        self.self_labels = grouping.self_labels().to(self.unlabelled.labels.device)
        self.balanced.group(self.self_labels)
        notify(
            self.on_work,
            f"epoch {epoch}: {int(sizes.sum()):,} of the {len(self.unlabelled):,} training images self-labelled"
            f" into {int((sizes > 0).sum())} groups (their labels unread)",
        )

    def batch(self, index: Any) -> Any:
        """(labelled images, their labels, unlabelled images or None, their self-labels or None)."""
        assert self.train is not None
        labelled, extra = index if isinstance(index, tuple) else (index, None)
        x, y = to_float(self.train.images[labelled]), self.train.labels[labelled]
        if self.unlabelled is None or extra is None or (self.self_labels is None and self.params.ssl_weight == 0):
            return x, y, None, None  # (unlabelled images that nothing in this epoch would look at are not gathered)
        u = to_float(self.unlabelled.images[extra])
        return x, y, u, self.self_labels[extra] if self.self_labels is not None else None

    def triplet(self, e: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The triplet loss of normalised embeddings `e` under the chosen mining."""
        fn = batch_hard if self.params.mining == "batch-hard" else semi_hard
        return fn(e, y, self.params.margin)

    def leaves_parameters_unused(self) -> bool:
        # without self-supervision the projection head is never used (self-labelling epochs keep it in the graph)
        return self.unlabelled is None or self.params.ssl_weight == 0

    def augment(self, batch: Any) -> Any:
        """(labelled images, after a random affine if augmenting; their labels; then for the unlabelled images, two
        contrastive views of each and None, or, when they carry self-labels, each after a random affine if
        augmenting, None and their self-labels; or None, None, None)."""
        xl, yl, xu, groups = batch
        if self.config.augment:
            xl = random_affine(xl, self.generator)
        if xu is None or (groups is None and self.params.ssl_weight == 0):
            return xl, yl, None, None, None
        if groups is not None:
            return xl, yl, random_affine(xu, self.generator) if self.config.augment else xu, None, groups
        return xl, yl, contrastive_view(xu, self.generator), contrastive_view(xu, self.generator), None

    def step(self, model: nn.Module, batch: Any) -> Step:
        """triplet_weight x the triplet loss of the labelled images, + ssl_weight x NT-Xent of the unlabelled ones'
        views, or + the triplet loss of the self-labelled ones; accuracy = labelled images whose in-batch nearest
        labelled neighbour shares their label."""
        xl, yl, first, second, groups = batch
        weight = self.params.triplet_weight
        if first is None:
            e = model.embed(xl)  # type: ignore[operator]
            loss = weight * self.triplet(e, yl)
        elif groups is not None:
            h = model.hidden(torch.cat([xl, first]))  # type: ignore[operator]
            both = F.normalize(h, dim=1)
            e = both[: len(xl)]
            loss = weight * self.triplet(e, yl) + self.triplet(both[len(xl) :], groups)
            if self.params.ssl_weight > 0:  # the projection head stays in the graph, with a zero gradient, so that
                # data-parallel training need not look for unused parameters in every step
                loss = loss + 0.0 * model.project(h[:1]).sum()  # type: ignore[operator]
        else:
            h = model.hidden(torch.cat([xl, first, second]))  # type: ignore[operator]
            e = F.normalize(h[: len(xl)], dim=1)
            ssl, _ = nt_xent(model.project(h[len(xl) :]), self.params.temperature)  # type: ignore[operator]
            loss = weight * self.triplet(e, yl) + self.params.ssl_weight * ssl
        size = len(yl) + (len(first) if first is not None else 0)
        # counted per labelled image, weighted like the loss by every image of the batch
        hits = nearest_neighbour_hits(e.detach(), yl).float() * (size / len(yl))
        return Step(loss, {"accuracy": hits}, size)

    @torch.inference_mode()
    def validate(self, model: nn.Module, data: TensorData) -> dict[str, float]:
        """Nearest-class-mean accuracy on `data` (the means of `data` itself) and the triplet loss of 1,000 of its images.

        A quick held-out signal for validation and targets; `mnist eval` runs the episode protocol.
        """
        e = dataset_features(model, data)
        classes, y = data.labels.unique(return_inverse=True)  # only the classes present, numbered 0..C-1
        protos = fewshot.prototypes(e, y, len(classes))
        accuracy = float((torch.cdist(e, protos).argmin(dim=1) == y).float().mean())
        sample = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))[:1000].to(y.device)
        return {"loss": float(batch_hard(e[sample], y[sample], self.params.margin)), "accuracy": accuracy}

    def test(self, model: nn.Module, data: Data, on_work: WorkFn | None = None) -> TestResult:
        """10-way 1-shot episodes over all ten test digits (the headline of `mnist eval`), and the confidence scale
        `mnist oneshot` uses, fitted on labelled training images (held-out ones where there is a validation split)."""
        test = data.full_test
        queries = fewshot.default_queries(test.labels, max(fewshot.SHOTS))  # as `mnist eval` draws them
        with phase(on_work, "test: 10-way 1-shot episodes"):
            score = fewshot.run_episodes(
                dataset_features(model, test), test.labels, list(range(10)), 10, 1, queries=queries
            )
        meta: dict[str, Any] = {}
        # Only with the labels of all ten digits: fitted on the few classes a model trained on, the scale is far
        # too sharp for new ones (0,1,2 model: 97% mean confidence at 80% accuracy on 10-way test episodes).
        if len(self.config.classes or range(10)) == 10:
            held = data.val if data.val is not None else data.train
            embedding = Counter(on_work, "calibrating one-shot confidences", len(held))
            scale = fewshot.calibrate(dataset_features(model, held, on_images=embedding.add), held.labels)
            embedding.finish()
            if scale is not None:
                meta["oneshot"] = {"scale": scale, "calibrated_on": "validation" if data.val is not None else "train"}
        return TestResult(score.accuracy, None, "10-way 1-shot", meta=meta)
