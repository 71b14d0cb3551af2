"""The training configuration: one dataclass, every field commented, recorded in each checkpoint.

Models carry their own recipe (registry defaults) on top of these values; command-line options
override both. No torch here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

OPTIMIZERS = ("sgd", "nesterov", "adam", "adamw")
SCHEDULERS = ("none", "step", "cosine", "onecycle")
DEVICES = ("auto", "cpu", "cuda", "mps")
MINING = ("batch-hard", "semi-hard")


@dataclass
class TrainConfig:
    epochs: int = 5  # passes over the training set
    batch_size: int = 128  # images per optimizer step
    lr: float = 0.01  # learning rate (the peak rate for onecycle)
    optimizer: str = "adam"  # sgd (momentum), nesterov, adam or adamw
    momentum: float = 0.9  # for sgd and nesterov
    weight_decay: float = 0.0  # L2 penalty (decoupled for adamw)
    scheduler: str = "none"  # none, step (x0.1 at 1/2 and 3/4 of the run), cosine, onecycle; stepped per batch
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    temperature: float = 0.2  # NT-Xent temperature (contrastive models, and metric models' self-supervision)
    margin: float = 0.2  # triplet-loss margin on squared distances between unit vectors (metric models)
    mining: str = "batch-hard"  # triplet mining in each P x K batch: batch-hard or semi-hard (metric models)
    ssl_weight: float = 0.0  # weight of NT-Xent on unlabelled training images beside the triplet loss (0: off)
    augment: bool = False  # random affine (rotation, scale, shift) of whole batches on the device
    robust_augment: bool = False  # with augment, classifiers: also slant, pen width and blur (real-world input)
    val_split: float | None = None  # fraction held out for validation; None: 0.1 with early stopping, else 0
    calibrate: bool = True  # classifiers: fit a temperature on held-out training images (see calibration.py)
    early_stopping: int = 0  # stop after this many epochs without validation improvement (0: off)
    target_accuracy: float | None = None  # stop as soon as held-out accuracy reaches this (0-1)
    check_every: float = 0.25  # with a target: check it every this fraction of an epoch
    seed: int = 0  # seeds the initialisation, the shuffling, the split and the augmentation
    device: str = "auto"  # auto, cpu, cuda or mps
    classes: tuple[int, ...] | None = None  # train only on these digits (None: all ten)
    per_class: int | None = None  # use at most this many training images per class (None: all)

    def __post_init__(self) -> None:
        from mnistcli.errors import UsageError

        if self.optimizer not in OPTIMIZERS:
            raise UsageError(f"unknown optimizer {self.optimizer!r} (choose from {', '.join(OPTIMIZERS)})")
        if self.scheduler not in SCHEDULERS:
            raise UsageError(f"unknown scheduler {self.scheduler!r} (choose from {', '.join(SCHEDULERS)})")
        if self.device not in DEVICES:
            raise UsageError(f"unknown device {self.device!r} (choose from {', '.join(DEVICES)})")
        if self.epochs < 1 or self.batch_size < 1:
            raise UsageError("--epochs and --batch-size must be at least 1")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise UsageError("--label-smoothing must be in [0, 1)")
        if self.mining not in MINING:
            raise UsageError(f"unknown mining {self.mining!r} (choose from {', '.join(MINING)})")
        if self.margin <= 0:
            raise UsageError("--margin must be positive")
        if self.ssl_weight < 0:
            raise UsageError("--ssl-weight must be 0 (off) or positive")
        if self.temperature <= 0:
            raise UsageError("--temperature must be positive")
        if not 0 < self.lr < 1e3:
            raise UsageError("--lr must be positive and below 1000")
        if self.val_split is None:
            self.val_split = 0.1 if self.early_stopping else 0.0
        if not 0.0 <= self.val_split < 1.0:
            raise UsageError("--val-split must be in [0, 1)")
        if self.early_stopping < 0:
            raise UsageError("--early-stopping must be 0 (off) or a positive patience")
        if self.early_stopping and self.val_split == 0.0:
            raise UsageError("--early-stopping needs held-out data (never the test set): use --val-split > 0")
        if self.target_accuracy is not None and not 0.0 < self.target_accuracy <= 1.0:
            raise UsageError("--target-accuracy must be in (0, 1], e.g. 0.99")
        if not 0.0 < self.check_every <= 1.0:
            raise UsageError("--check-every must be in (0, 1] (a fraction of an epoch)")
        if self.classes is not None:
            self.classes = tuple(sorted(set(self.classes)))
            if not self.classes or any(not 0 <= c <= 9 for c in self.classes):
                raise UsageError("--classes takes digits 0-9, e.g. 0,1,2")
        if not 0 <= self.seed < 2**63:
            raise UsageError("--seed must be between 0 and 2**63 - 1")
        if self.per_class is not None and self.per_class < 1:
            raise UsageError("--per-class must be at least 1")

    @classmethod
    def build(cls, recipe: dict[str, Any], overrides: dict[str, Any]) -> TrainConfig:
        """Defaults, then the model's `recipe`, then the non-None `overrides` (command-line options)."""
        names = {f.name for f in fields(cls)}
        merged = {**recipe, **{k: v for k, v in overrides.items() if v is not None}}
        unknown = set(merged) - names
        if unknown:
            from mnistcli.errors import UsageError

            raise UsageError(f"unknown training options: {', '.join(sorted(unknown))}")
        return cls(**merged)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        d = asdict(self)
        d["classes"] = list(self.classes) if self.classes is not None else None
        return d
