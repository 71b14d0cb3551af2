"""What a model family is: one bundle that the engine, the api and the renderer ask everything family-specific.

A family (classify, contrastive, triplet, adder, ...) says how it batches (from the sampler's
indices), its step (a loss and named metric totals), its own hyper-parameters (a small `Params`
dataclass), its test protocol (used by `mnist train` and by `mnist eval`, so the two agree by
construction), whether its outputs are calibrated probabilities, the words the renderer uses
for its numbers, and, for the families `mnist predict` answers with, its predictor. `families/__init__.py` registers each under its name; a model registers with
`family=NAME` (registry.py).

Adding a family: a file here with a `Family` subclass decorated `@register_family`, its model
file in models/, and the import in `families/__init__.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from mnistcli.config import PredictOptions, TrainConfig, field_names, split
from mnistcli.data.tensors import TensorData, to_float
from mnistcli.engine.loop import Step
from mnistcli.engine.sampling import Sampler, Shuffled
from mnistcli.errors import DataError, UsageError
from mnistcli.protocols.export import Spec
from mnistcli.protocols.inference import ClassifierEval
from mnistcli.reports import EvalReport
from mnistcli.work import WorkFn


@dataclass
class Data:
    """The images of one run, as tensors on the training device."""

    train: TensorData  # what the model trains on (after --classes, --per-class and the held-out splits)
    val: TensorData | None  # the validation split, if any
    test: TensorData  # the test images of the digits trained on
    full_train: TensorData  # every training image (self-supervision, linear evaluation)
    full_test: TensorData  # every test image


@dataclass
class TestResult:
    """A family's test measurement of a trained model: the headline number and what it means."""

    accuracy: float
    loss: float | None  # None where the measure has no loss (few-shot episodes)
    measure: str  # "accuracy", "linear evaluation", "10-way 1-shot", "sum accuracy", ...
    extra: dict[str, float] = field(default_factory=dict)  # further test numbers (adder: digit_accuracy)
    meta: dict[str, Any] = field(default_factory=dict)  # the family's own checkpoint entries (triplet: oneshot)


@dataclass
class EvalData:
    """The images `mnist eval` may read, loaded only when a protocol asks for them."""

    test: Callable[[], TensorData]  # every test image
    train: Callable[[], TensorData]  # every training image
    device: str  # where the model runs


@dataclass
class EvalOptions:
    """`mnist eval`'s options that some families' protocols take (`Family.eval_options` names which)."""

    labels_per_class: int | None = None  # self-supervised: the probe trains on K labels per digit
    seed: int | None = None  # what the protocol draws (probe labels; an adder's numbers); None: its default
    tta: bool = False  # classifiers: test-time augmentation (protocols/inference.py `with_tta`)


def classifier_report(run: Any, result: ClassifierEval, seconds: float, device: str, **fields: Any) -> EvalReport:
    """`mnist eval`'s report of a classifier's measurement on the test images (its own head, or a linear probe)."""
    return EvalReport(
        run,
        result.accuracy,
        result.loss,
        result.per_class(),
        result.confusion.tolist(),
        result.total,
        seconds,
        device,
        **fields,
    )


def trained_digits(test: TensorData, classes: tuple[int, ...]) -> TensorData:
    """The test images of `classes` (all of them for all ten digits): what a run trained on `--classes` is judged on.
    Raises `DataError` if `test` holds none of them: a measure of no image would be no measure."""
    chosen = test.select(classes, None, torch.Generator()) if len(classes) < 10 else test
    if not len(chosen):  # a split with no image is refused when read (mnist.load_split): some digits are missing
        digits = ",".join(map(str, classes))
        raise DataError(f"{test.source or 'the test images'} hold no image of digits {digits}, those the run learnt")
    return chosen


@dataclass(frozen=True)
class NoParams:
    """A family without hyper-parameters of its own."""


class Family:
    """Base class: the usual shuffled epoch over `data.train`, batches of float images and labels."""

    name: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    calibrated: ClassVar[bool] = False  # outputs class probabilities, fitted with a temperature (see api/calibrating)
    # Tested on the test images of the digits it learnt (`--classes`), so refused if there are none; not those tested
    # on every digit (an embedding's episodes, a linear probe, bags).
    tested_on_its_digits: ClassVar[bool] = True
    classifies: ClassVar[bool] = False  # model(images) gives the ten digits' logits (confusion matrix, `mnist read`)
    validate_is_test: ClassVar[bool] = (
        False  # `validate` on the test images is `test` (a target check can stand for it)
    )
    per_image_validation: ClassVar[bool] = False  # `validate`'s figures are means over images: chunks add up
    train_label: ClassVar[str] = "accuracy"  # what the running training "accuracy" is, for the summary
    val_label: ClassVar[str] = "accuracy"  # what validation accuracy is
    test_label: ClassVar[str] = "test accuracy"  # the headline of the training summary
    test_unit: ClassVar[str] = "%"  # how the headline reads: "%" (a share) or "" (a ratio such as an AUC)
    eval_options: ClassVar[frozenset[str]] = frozenset()  # which of EvalOptions' fields its `evaluate` takes
    fewshot_by_default: ClassVar[bool] = False  # `mnist eval` runs the few-shot protocol (api/evaluation.py)
    offers_fewshot: ClassVar[bool] = True  # `mnist eval --fewshot` may measure its features
    learns_labels: ClassVar[bool] = True  # trains with the labels of its digits (not self-supervised)
    predicts: ClassVar[bool] = False  # `mnist predict` answers with its `predict`
    predict_options: ClassVar[frozenset[str]] = frozenset()  # the PredictOptions fields its `predict` needs
    suggested_model: ClassVar[str] = ""  # what to `mnist train` when a command needs a run of this family
    encoder_family: ClassVar[str | None] = None  # the family of the runs `--encoder RUN` starts it from
    trains_members: ClassVar[bool] = False  # trained as several runs, not one loop (ensembles: api/ensembling.py)
    exported: ClassVar[Spec | None] = None  # what `mnist export` writes of its model (protocols/export.py); None: none
    onnx_limit: ClassVar[str | None] = None  # why torch.export may fail on some of its models, said when it does
    processes: int = 1  # how many processes share every batch (data-parallel training, engine/dist.py; set by the api)

    def __init__(self, params: Any, config: TrainConfig, generator: torch.Generator | None = None) -> None:
        self.params, self.config = params, config
        # The run's generator: shuffling, and the augmentation of families that draw from it.
        self.generator = generator if generator is not None else torch.Generator().manual_seed(config.seed)
        self.train: TensorData | None = None
        self.on_work: WorkFn | None = None  # where work besides training steps is reported (set by `api.train`)

    @classmethod
    def from_checkpoint(cls, config: dict[str, Any]) -> Family:
        """The family as a checkpoint's training options (meta.json's `config`) set it up, for measuring it."""
        shared = {k: v for k, v in config.items() if k in field_names(TrainConfig)}
        own = {k: v for k, v in config.items() if k in field_names(cls.Params)}
        return cls(cls.Params(**own), TrainConfig(**shared))

    @classmethod
    def check(cls, params: Any, config: TrainConfig) -> None:
        """Raise `UsageError` for option combinations this family cannot honour (before any data work)."""

    @classmethod
    def check_processes(cls, world: int, config: TrainConfig) -> None:
        """Raise `UsageError` if a run of this family cannot share its batches among `world` processes."""
        if world > 1 and config.batch_size < 2 * world:
            raise UsageError(
                f"--batch-size {config.batch_size} is the global batch: with {world} processes it must hold at least "
                f"{2 * world} images (2 for each)"
            )

    @classmethod
    def recipe_for(cls, recipe: dict[str, Any], params: Any) -> dict[str, Any]:
        """The model's recipe for these family options (options given on the command line still win over it)."""
        return recipe

    @classmethod
    def configure(cls, recipe: dict[str, Any], options: dict[str, Any]) -> tuple[TrainConfig, Any]:
        """(TrainConfig, Params) of a run: defaults, the model's `recipe` as `recipe_for` adapts it to the family
        options, then the non-None `options` (what `mnist train` uses and `mnist models NAME` shows)."""
        config, params = split(cls.Params, recipe, options, cls.name)
        adapted = cls.recipe_for(recipe, params)
        return (config, params) if adapted == recipe else split(cls.Params, adapted, options, cls.name)

    @classmethod
    def encoder_args(cls, args: dict[str, Any]) -> dict[str, Any]:  # pragma: no cover - families with encoders
        """The model arguments that give it the architecture of an `encoder_family` model built with `args`."""
        raise NotImplementedError

    @classmethod
    def adopt_encoder(cls, model: nn.Module, encoder: nn.Module) -> None:  # pragma: no cover
        """Copy the weights of `encoder` (an `encoder_family` model) into `model`'s matching part."""
        raise NotImplementedError

    # -- training ---------------------------------------------------------------------------------

    def prepare(self, data: Data) -> None:
        """Take the run's data before training (raise `DataError`/`UsageError` if it cannot be used)."""
        self.train = data.train

    def sampler(self, batch_size: int) -> Sampler:
        """The batches of an epoch over the training data."""
        assert self.train is not None
        return Shuffled(len(self.train), batch_size, self.train.labels.device, smallest=2 * self.processes)

    def begin_epoch(self, generator: torch.Generator, epoch: int, model: nn.Module) -> None:
        """Draw what the family draws once an epoch, or work out from `model` what epoch `epoch` (1, 2, ...) trains
        on (nothing, by default)."""

    def batch(self, index: Any) -> Any:
        """(float images (B, 1, 28, 28) in [0, 1], labels) of the sampled indices."""
        assert self.train is not None
        return to_float(self.train.images[index]), self.train.labels[index]

    def augment(self, batch: Any) -> Any:
        """The batch as `step` trains on it: randomly augmented, if the family augments (none, by default). The loop
        augments the whole global batch before a process keeps its share (engine/dist.py), so its draws from the
        family's generators are those of one process."""
        return batch

    def step(self, model: nn.Module, batch: Any) -> Step:  # pragma: no cover - every family has its own
        raise NotImplementedError

    def leaves_parameters_unused(self) -> bool:
        """Whether some of the model's parameters take no part in `step` (data-parallel training must then look for
        them every step); no, by default."""
        return False

    def pretrain(self, model: nn.Module) -> dict[str, Any] | None:
        """Train `model` before its first epoch, in a run that starts afresh (not a resumed one), reporting the work to
        `on_work`; a summary for the run log, or None when there is nothing to do (the default)."""
        return None

    def restart_rule(self) -> tuple[int, float, int, str] | None:
        """(epoch, loss, times, measure): start the run over with fresh weights (`fresh_start`) if its mean training
        loss in that epoch (or the mean of `measure`, one of the step's sums, if it reports one) is above that loss,
        at most that many times (engine.callbacks.Restart); None: never."""
        return None

    def attempt_rule(self) -> tuple[int, str, int, float] | None:
        """(attempts, measure, more, fit): train the run that many times, each from fresh weights (`fresh_start`), and
        keep the attempt whose last epoch's mean training loss (or mean of `measure`, one of the step's sums, if it
        reports one) is lowest; if none ended below `fit`, up to `more` further attempts until one does
        (engine.callbacks.BestAttempt); None: once."""
        return None

    def keeps_every_attempt(self) -> bool:
        """With an `attempt_rule`: keep every attempt and answer with their combination (`combine_attempts`) instead
        of the one attempt that fits best."""
        return False

    def combine_attempts(
        self, model_name: str, model_args: dict[str, Any], states: list[dict[str, torch.Tensor]]
    ) -> tuple[nn.Module, dict[str, Any]]:  # pragma: no cover - families that keep every attempt
        """(one model answering for the attempts whose weights are `states`, the arguments that build it again)."""
        raise NotImplementedError

    @classmethod
    def check_args(cls, model_args: dict[str, Any]) -> None:
        """Raise `UsageError` for model arguments (--arg) that a run of this family cannot train with."""

    def fresh_start(self, model: nn.Module) -> None:  # pragma: no cover - families with a restart or attempt rule
        """Redraw `model`'s weights for a new attempt (they are back to where the run started)."""
        raise NotImplementedError

    def generators(self) -> dict[str, torch.Generator]:
        """The family's own random generators beside the run's (saved when a run is snapshotted)."""
        return {}

    # -- measuring --------------------------------------------------------------------------------

    def validate(self, model: nn.Module, data: TensorData) -> dict[str, float]:  # pragma: no cover
        """At least `loss` and `accuracy` (0-1) of `model` on held-out `data` (validation, target checks)."""
        raise NotImplementedError

    def test(self, model: nn.Module, data: Data, on_work: WorkFn | None = None) -> TestResult:  # pragma: no cover
        """The family's test measurement (the one `mnist eval` reports first)."""
        raise NotImplementedError

    def calibrate(self, model: nn.Module, held: TensorData) -> dict[str, Any]:  # pragma: no cover
        """The `calibration` entry of a calibrated family's checkpoint, fitted on `held` (held-out training images)."""
        raise NotImplementedError

    def evaluate(
        self, run: Any, model: nn.Module, data: EvalData, options: EvalOptions, on_work: WorkFn | None = None
    ) -> Any:  # pragma: no cover
        """`mnist eval` of the checkpoint `run` by this family's protocol: a report (mnistcli/reports.py) whose
        headline is the number `test` gave when the run was trained."""
        raise NotImplementedError

    # -- predicting (the families with `predicts`) -----------------------------------------------

    @classmethod
    def check_predict(cls, run_name: str, options: PredictOptions) -> None:
        """Raise `UsageError` if `options` lack what this family's `predict` needs (run `run_name` is to answer)."""

    def predict(
        self, run: Any, model: nn.Module, paths: Sequence[str], images: np.ndarray, options: PredictOptions
    ) -> list[Any]:  # pragma: no cover
        """`mnist predict`'s answer for each of the float images (N, 28, 28) in [0, 1], N >= 1, read from `paths`:
        a result of mnistcli/reports.py each, in order, with the checkpoint `run`'s calibration applied."""
        raise NotImplementedError

    def predict_bag(
        self, run: Any, model: nn.Module, bag: str | None, paths: Sequence[str], images: np.ndarray
    ) -> Any:  # pragma: no cover - the families whose `predict_options` hold "bag"
        """`mnist predict --bag`'s answer for one bag: the float images (N, 28, 28) in [0, 1], N >= 1, read from
        `paths` (the folder `bag`, or loose files when None) -> one `BagPrediction` (mnistcli/reports.py)."""
        raise NotImplementedError


Builder = Callable[..., Family]
