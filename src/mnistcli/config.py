"""The training configuration every family shares: one dataclass, every field commented, recorded in each checkpoint.

A family's own hyper-parameters (a loss's margin, label smoothing, ...) are its `Params` dataclass
(families/); `split` shares options out between the two. Models carry their own recipe (registry
defaults) on top of these values; command-line options override both. No torch here.

The options with a fixed set of values are Enums here, the one place each vocabulary is written:
the CLI takes them as its option types (so `mnist --help` and TAB completion list them without
importing torch) and the checks below read the same values. The fields themselves stay plain
strings, as checkpoints record them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from enum import Enum
from typing import Any

FLAGS = {"calibrate": "--no-calibrate"}  # options whose command-line flag is not --NAME


class Optimizer(str, Enum):
    sgd = "sgd"
    nesterov = "nesterov"
    adam = "adam"
    adamw = "adamw"
    muon = "muon"


class Scheduler(str, Enum):
    none = "none"
    step = "step"
    cosine = "cosine"
    onecycle = "onecycle"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class Backend(str, Enum):
    """What runs a model for `mnist predict`, `read`, `embed` and `oneshot` (api/serving.py)."""

    auto = "auto"
    onnx = "onnx"
    torch = "torch"


class Precision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class Mining(str, Enum):
    """The triplet family's `mining` (families/triplet.py), here so the CLI lists it without importing torch."""

    batch_hard = "batch-hard"
    semi_hard = "semi-hard"


def values(choices: type[Enum]) -> tuple[str, ...]:
    """The values of a vocabulary, in order: ('sgd', 'nesterov', 'adam', 'adamw', 'muon')."""
    return tuple(str(c.value) for c in choices)


OPTIMIZERS, SCHEDULERS, DEVICES = values(Optimizer), values(Scheduler), values(Device)
PRECISIONS, MINING = values(Precision), values(Mining)


MAX_EPOCHS = 100_000  # far beyond what any MNIST training needs: a larger number is a typo


@dataclass
class TrainConfig:
    epochs: int = 5  # passes over the training set
    batch_size: int = 128  # images per optimizer step
    lr: float = 0.01  # learning rate (the peak rate for onecycle)
    optimizer: str = "adam"  # sgd (momentum), nesterov, adam, adamw or muon (matrices; AdamW for the rest)
    momentum: float = 0.9  # for sgd, nesterov and muon (also the first beta of its AdamW part)
    weight_decay: float = 0.0  # L2 penalty (decoupled for adamw and muon)
    scheduler: str = "none"  # none, step (x0.1 at 1/2 and 3/4 of the run), cosine, onecycle; stepped per batch
    augment: bool = False  # random affine (rotation, scale, shift) of whole batches on the device
    val_split: float | None = None  # fraction held out for validation; None: 0.1 with early stopping, else 0
    early_stopping: int = 0  # stop after this many epochs without validation improvement (0: off)
    target_accuracy: float | None = None  # stop as soon as held-out accuracy reaches this (0-1)
    check_every: float = 0.25  # with a target: check it every this fraction of an epoch
    seed: int = 0  # seeds the initialisation, the shuffling, the split and the augmentation
    split_seed: int | None = None  # seeds which images are selected and held out instead (ensemble members share it)
    device: str = "auto"  # auto, cpu, cuda or mps
    classes: tuple[int, ...] | None = None  # train only on these digits (None: all ten)
    per_class: int | None = None  # use at most this many training images per class (None: all)
    accumulate: int = 1  # batches whose gradients add up to one optimizer step (batch_size x accumulate per step)
    precision: str = "fp32"  # fp32; bf16 (autocast); fp16 (CUDA, with a gradient scaler); auto: bf16 where native

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
        if self.epochs > MAX_EPOCHS:
            raise UsageError(f"--epochs must be at most {MAX_EPOCHS:,}")
        if not 0 < self.lr < 1e3:
            raise UsageError("--lr must be positive and below 1000")
        if not 0.0 <= self.momentum < 1.0:
            raise UsageError("--momentum must be in [0, 1), e.g. 0.9")
        if not 0.0 <= self.weight_decay <= 1.0:
            raise UsageError("--weight-decay must be in [0, 1], e.g. 5e-4")
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
        if self.split_seed is not None and not 0 <= self.split_seed < 2**63:
            raise UsageError("--split-seed must be between 0 and 2**63 - 1")
        if self.per_class is not None and self.per_class < 1:
            raise UsageError("--per-class must be at least 1")
        if self.accumulate < 1:
            raise UsageError("--accumulate must be at least 1")
        if self.precision not in PRECISIONS:
            raise UsageError(f"unknown precision {self.precision!r} (choose from {', '.join(PRECISIONS)})")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        d = asdict(self)
        d["classes"] = list(self.classes) if self.classes is not None else None
        return d


def field_names(cls: type) -> set[str]:
    """The fields of a dataclass type."""
    return {f.name for f in fields(cls)}


def split(params_type: type, recipe: dict[str, Any], overrides: dict[str, Any], family: str) -> tuple[TrainConfig, Any]:
    """(TrainConfig, the family's Params): defaults, then the model's `recipe`, then the non-None `overrides`.

    Raises `UsageError` naming an option that neither takes (`family` names the model family in the message).
    """
    from mnistcli.errors import UsageError

    merged = {**recipe, **{k: v for k, v in overrides.items() if v is not None}}
    for key, value in merged.items():  # NaN passes every range check (each comparison is false): refuse it first
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"{flag(key, value)} must be a finite number, not {value}")
    shared, own = field_names(TrainConfig), field_names(params_type)
    unknown = sorted(set(merged) - shared - own)
    if unknown:
        flags = ", ".join(flag(k, merged[k]) for k in unknown)
        raise UsageError(
            f"{flags} {'does' if len(unknown) == 1 else 'do'} not apply to {article(family)} {family} model"
        )
    config = TrainConfig(**{k: v for k, v in merged.items() if k in shared})
    return config, params_type(**{k: v for k, v in merged.items() if k in own})


def flag(name: str, value: Any) -> str:
    """The command-line flag that sets option `name` to `value`: --NAME, or --no-NAME for a switch turned off."""
    if name in FLAGS:
        return FLAGS[name]
    return ("--no-" if value is False else "--") + name.replace("_", "-")


def article(word: str) -> str:
    """'a' or 'an' before `word`."""
    return "an" if word[:1] in ("a", "e", "i", "o", "u") else "a"


@dataclass(frozen=True)
class PredictOptions:
    """`mnist predict`'s options that some families' predictors need (`Family.predict_options` names which)."""

    add: int | None = None  # adder: the number 0-9 added to each digit
    bag: bool | None = None  # multiple-instance (bags): True to predict bags of images (None: not asked for)
    tta: bool = False  # classifiers: test-time augmentation (not a choice of family: `given` leaves it out)

    def __post_init__(self) -> None:
        from mnistcli.errors import UsageError

        if self.add is not None and not 0 <= self.add <= 9:
            raise UsageError(f"--add {self.add}: the number to add must be 0-9")
        if self.add is not None and self.bag:
            raise UsageError("--add is for adder checkpoints and --bag for bags checkpoints; give one of them")

    def given(self) -> frozenset[str]:
        """The names of the options set (not None)."""
        return frozenset(f.name for f in fields(self) if f.name != "tta" and getattr(self, f.name) is not None)
