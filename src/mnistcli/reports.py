"""What the commands return: one dataclass per result. Plain data, for render/ or a Python user.

These are the vocabulary that families (which fill them: a family's `evaluate`) and render/
(which prints them) share, so they sit below both; `mnistcli.api` re-exports them. No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from mnistcli import store


@dataclass
class ModelInfo:
    name: str
    family: str
    description: str
    params: int
    recipe: dict[str, Any]  # the model's own training defaults
    args: dict[str, Any] = field(default_factory=dict)  # its --arg KEY=VALUE arguments and their defaults
    config: dict[str, Any] = field(default_factory=dict)  # the training options of its family: recipe over defaults


@dataclass
class TrainReport:
    run: store.Run
    options: dict[str, Any]  # every training option: the shared TrainConfig's and the family's own
    test_accuracy: float
    test_loss: float | None  # None where the test measure has no loss (few-shot episodes)
    seconds: float  # training loop only
    total_seconds: float  # data loading, training, evaluation and saving
    history: list[dict[str, Any]]
    stopped_early: bool
    device: str
    target: dict[str, Any] | None = None  # with --target-accuracy: target, checked_on, reached, epochs, seconds
    test_measure: str = "accuracy"  # what test_accuracy is: accuracy, linear evaluation, 10-way 1-shot, sum accuracy
    test_extra: dict[str, float] = field(default_factory=dict)  # further test metrics (adder: digit_accuracy)
    loss_curve: list[float] = field(default_factory=list)  # mean training loss of each progress report
    log_path: str | None = None  # the run's log.jsonl
    tensorboard_path: str | None = None  # with --tensorboard: the event files' folder
    calibration: dict[str, Any] | None = None  # classifiers: meta.json's `calibration` (temperature, held-out ECE)
    train_label: str = "accuracy"  # what the family's running training accuracy is
    val_label: str = "accuracy"  # what its validation accuracy is
    test_label: str = "test accuracy"  # what its headline test number is
    test_unit: str = "%"  # "%": the headline is a share, shown as a percentage; "": a ratio (an AUC), shown as is
    resumed_from: int | None = None  # `mnist train --resume`: the epoch the run went on from (`seconds` counts all)
    restarts: list[dict[str, float]] = field(default_factory=list)  # runs that started over: epoch and training loss
    attempts: dict[str, Any] | None = (
        None  # runs trained several times: `losses` (each attempt's last), `kept` (from 1)
    )
    members: list[dict[str, Any]] | None = None  # an ensemble's members: name, model, seed, test_accuracy, seconds
    selection: dict[str, Any] | None = None  # `--combine select`: the weights and the validation losses


@dataclass
class RepeatReport:
    """`mnist train --runs N`: the runs, and the mean and standard deviation of each test number they share."""

    reports: list[TrainReport]
    mean: dict[str, float]  # "test" (the headline) and the family's further test numbers
    std: dict[str, float]  # sample standard deviation (n - 1); 0 for a single run


@dataclass
class EvalReport:
    run: store.Run
    accuracy: float
    loss: float
    per_class: list[dict[str, Any]]
    confusion: list[list[int]]
    total: int
    seconds: float
    device: str
    # "classifier": the model's own head. "linear": a probe on frozen features (self-supervised
    # models), with `labels_per_class` and the same probe on raw pixels (`pixels_accuracy`).
    protocol: str = "classifier"
    labels_per_class: int | None = None
    pixels_accuracy: float | None = None
    classes: list[int] | None = None  # a classifier trained with --classes: judged on the test images of those
    # A classifier's calibration: its temperature T (1.0 if never calibrated) and the expected calibration
    # error of the confidences it reports (softmax(logits / T)) and of the raw softmax, on these test images.
    temperature: float | None = None
    ece: float | None = None
    ece_uncalibrated: float | None = None
    tta: bool = False  # measured under test-time augmentation (`--tta`)
    # An ensemble's members, each {name, model, accuracy, loss, weight}, and the test accuracy of each way of
    # combining them ({"used": "soft", "soft": ..., "vote": ..., "select": ...}).
    members: list[dict[str, Any]] | None = None
    combinations: dict[str, Any] | None = None

    @property
    def images_per_second(self) -> float:
        return self.total / self.seconds if self.seconds > 0 else float("inf")


@dataclass
class FewShotScore:
    """Mean accuracy over episodes of one kind, for the model and for raw pixels on the same episodes."""

    classes: str  # "all" (the ten digits) or "unseen" (the digits the model never had labels for)
    ways: int
    shots: int
    episodes: int
    queries: int  # per class per episode
    accuracy: float
    ci95: float  # half-width of the 95% confidence interval
    pixels_accuracy: float
    pixels_ci95: float

    @property
    def name(self) -> str:
        return f"{self.ways}-way {self.shots}-shot" + (" (unseen)" if self.classes == "unseen" else "")


@dataclass
class FewShotReport:
    """`mnist eval` of an embedding: few-shot episodes on the test set, and nearest neighbour against train."""

    run: store.Run
    scores: list[FewShotScore]
    per_class: list[dict[str, Any]]  # of the first score (10-way 1-shot): digit, correct, total, accuracy
    seen: list[int]  # digits whose labels the model trained on
    unseen: list[int]
    nn_accuracy: float  # each test image labelled by its nearest training image in embedding space
    seconds: float
    device: str
    map_path: str | None = None  # the embedding maps (t-SNE and PCA), when asked for
    protocol: str = "fewshot"


@dataclass
class AdderReport:
    """`mnist eval` of an adder: digit and sum accuracy, the sum broken down by number added and by true sum."""

    run: store.Run
    digit_accuracy: float
    sum_accuracy: float
    loss: float
    by_number: list[dict[str, Any]]  # number, correct, total, accuracy (of the sum)
    by_sum: list[dict[str, Any]]  # sum, correct, total, accuracy
    total: int
    seed: int  # drew the number paired with each test image
    seconds: float
    device: str
    protocol: str = "adder"
    # As EvalReport's, for the sum head (`ece`) and the digit head (`digit_ece`), each with its own T.
    temperature: float = 1.0
    sum_temperature: float = 1.0
    ece: float | None = None
    ece_uncalibrated: float | None = None
    digit_ece: float | None = None
    digit_ece_uncalibrated: float | None = None


@dataclass
class BagsReport:
    """`mnist eval` of a multiple-instance model on test bags drawn from the test images (the MNIST-bags protocol)."""

    run: store.Run
    auc: float  # ROC AUC of the bag scores: the benchmark's number
    bag_accuracy: float  # bags on the right side of probability 0.5
    loss: float  # mean binary cross-entropy of the bags
    attention_hit: float  # share of positive bags whose highest-weighted image is a target digit
    attention_auc: float | None  # ROC AUC of the attention weights for "is a target", over positive bags' images
    bags: int  # test bags (half positive)
    target: int  # the digit that makes a bag positive
    mean_size: float  # images per bag, on average
    seed: int  # drew the test bags
    seconds: float
    device: str
    protocol: str = "bags"


def rounded(probabilities: np.ndarray) -> list[float]:
    """Probabilities as a prediction carries them: floats rounded to 6 places."""
    return [round(float(p), 6) for p in probabilities]


@dataclass
class Prediction:
    path: str
    digit: int
    confidence: float
    probabilities: list[float]

    @classmethod
    def of(cls, path: str, probabilities: np.ndarray) -> Prediction:
        """The answer whose class probabilities (10,) are `probabilities`, as torch and onnxruntime both give it."""
        return cls(path, int(probabilities.argmax()), round(float(probabilities.max()), 6), rounded(probabilities))


@dataclass
class SumPrediction:
    """An adder's answer for one image plus `added`."""

    path: str
    added: int
    digit: int
    digit_confidence: float
    sum: int
    sum_confidence: float
    digit_probabilities: list[float]
    sum_probabilities: list[float]

    @classmethod
    def of(cls, path: str, added: int, digit: np.ndarray, total: np.ndarray) -> SumPrediction:
        """The answer whose digit (10,) and sum (19,) probabilities are `digit` and `total`."""
        return cls(
            path,
            added,
            int(digit.argmax()),
            round(float(digit.max()), 6),
            int(total.argmax()),
            round(float(total.max()), 6),
            rounded(digit),
            rounded(total),
        )


@dataclass
class BagPrediction:
    """A multiple-instance model's answer for one bag of images: is the target digit among them, and which image
    the model looked at."""

    bag: str | None  # the folder, or None for loose image files given together
    paths: list[str]  # its images, in the order read (a folder's: sorted by name)
    probability: float  # that the bag holds the target digit: sigmoid of the bag logit
    positive: bool  # probability >= 0.5 (the bag logit >= 0)
    target: int  # the digit a positive bag holds (the checkpoint's --target)
    attention: list[float]  # each image's weight in the bag's decision, in `paths` order; they sum to 1
    ignored: list[str] = field(default_factory=list)  # files in the folder that are not images (never read)

    @property
    def top(self) -> int:
        """The index (into `paths`) of the image with the most attention."""
        return max(range(len(self.attention)), key=self.attention.__getitem__)


@dataclass
class Failure:
    path: str
    error: str


@dataclass
class PredictReport:
    run: store.Run
    results: list[Prediction | SumPrediction | BagPrediction | Failure] = field(default_factory=list)
    shown: list[str] = field(default_factory=list)  # --show-input: the 28x28 pictures written, in input order

    @property
    def failures(self) -> list[Failure]:
        return [r for r in self.results if isinstance(r, Failure)]


Box = tuple[int, int, int, int]  # x, y, width, height in the image's pixels


@dataclass
class ReadDigit:
    """One digit of a number: what it is, how sure the model is, and where it is."""

    digit: int
    confidence: float
    box: Box


@dataclass
class Reading:
    """The number read in one image."""

    path: str
    digits: list[ReadDigit]

    @property
    def text(self) -> str:
        return "".join(str(d.digit) for d in self.digits)

    @property
    def confidence(self) -> float:
        """The least confident digit's confidence: how far the whole number can be trusted."""
        return min(d.confidence for d in self.digits)


@dataclass
class ReadReport:
    run: store.Run
    results: list[Reading | Failure] = field(default_factory=list)

    @property
    def failures(self) -> list[Failure]:
        return [r for r in self.results if isinstance(r, Failure)]


@dataclass
class EmbedReport:
    run: store.Run
    paths: list[str]  # the images embedded, in input order
    vectors: np.ndarray  # (len(paths), D) float32
    failures: list[Failure]


@dataclass
class Match:
    """One query's one-shot answer: the nearest class prototype."""

    path: str
    label: str
    distance: float  # Euclidean, between unit-length embedding and prototype
    confidence: float  # softmax over classes of -scale * squared distance
    distances: dict[str, float]  # to every class


@dataclass
class OneShotReport:
    run: store.Run
    support: dict[str, int]  # class label -> support images used
    scale: float  # the softmax scale behind the confidences
    calibrated: bool  # whether `scale` was fitted for this checkpoint (else a default)
    results: list[Match | Failure] = field(default_factory=list)
    skipped: list[Failure] = field(default_factory=list)  # unreadable support images (their class had others)

    @property
    def failures(self) -> list[Failure]:
        return [r for r in self.results if isinstance(r, Failure)]


@dataclass
class ExportReport:
    """`mnist export`: the file written and how closely its answers matched torch's."""

    run: store.Run
    path: str
    format: str  # onnx or torchscript
    size_bytes: int
    inputs: list[str]  # the file's input names
    outputs: list[str]  # its output names
    metadata: dict[str, Any]  # the run's description, as read back from the file
    compared: int  # inputs both answered: images, or bags (`compared_unit`)
    compared_unit: str
    data: str  # what they were: "MNIST test images", or synthetic ones when no MNIST was found
    max_output_diff: float  # the largest absolute difference between the file's outputs and torch's
    max_probability_diff: float | None  # the same in probabilities (None for an embedding, which has none)
    tolerance: float  # the most the probability (an embedding: its value) may differ
    seconds: float
