"""Ensembles: classifiers trained apart, answering together (models/ensemble.py holds the vote).

An ensemble is measured and served as a classifier (its output is the log of the combined
probabilities), so it inherits the classify family's test, calibration and predictor. What it adds:
`mnist eval` gives every member's accuracy beside the ensemble's, and how each way of combining
them would have done. Its training is not one loop but one run per member (api/ensembling.py):
`trains_members` sends `mnist train ensemble` there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mnistcli.errors import UsageError
from mnistcli.families import register_family
from mnistcli.families.base import EvalData, EvalOptions, classifier_report, trained_digits
from mnistcli.families.classify import ClassifyFamily, ClassifyParams
from mnistcli.models.ensemble import MAX_MEMBERS, Ensemble, combine_probabilities
from mnistcli.protocols import calibration
from mnistcli.protocols.inference import EVAL_BATCH, ClassifierEval, map_batches, with_tta
from mnistcli.registry import get_entry
from mnistcli.reports import EvalReport
from mnistcli.work import WorkFn, phase

COMBINATIONS = ("soft", "vote", "select")


@dataclass
class EnsembleParams(ClassifyParams):
    """The ensemble's own options; those of ClassifyParams (label smoothing, calibration) go to every member."""

    members: int = 10  # members to train (their seeds: --seed, --seed + 1, ...)
    arch: str = "cnn"  # registered classifiers, comma-separated, given to the members in turn
    combine: str = "soft"  # soft (mean probability), vote (majority), select (weights chosen on validation images)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.members <= MAX_MEMBERS:
            raise UsageError(f"--members must be 1-{MAX_MEMBERS}")
        if self.combine not in COMBINATIONS:
            raise UsageError(f"--combine must be one of {', '.join(COMBINATIONS)}")
        for name in self.architectures():
            if get_entry(name).family != "classify":  # raises ModelError for an unknown name
                raise UsageError(f"--arch {name}: an ensemble's members are classifiers; {name} is not one")

    def architectures(self) -> list[str]:
        """The `--arch` names, in order (at least one)."""
        names = [a.strip() for a in self.arch.split(",") if a.strip()]
        if not names:
            raise UsageError("--arch takes registered classifiers, e.g. cnn or cnn,lenet")
        return names


@register_family
class EnsembleFamily(ClassifyFamily):
    """Several classifiers voting; measured, calibrated and served as one classifier."""

    name = "ensemble"
    Params = EnsembleParams  # type: ignore[assignment]  # a ClassifyParams with fields of its own
    suggested_model = "ensemble"
    trains_members = True
    validate_is_test = False

    def evaluate(
        self, run: Any, model: nn.Module, data: EvalData, options: EvalOptions, on_work: WorkFn | None = None
    ) -> EvalReport:
        """The classifier report of the ensemble, with each member's accuracy and every combination's beside it."""
        assert isinstance(model, Ensemble)
        test = data.test()
        classes = run.info.data.classes
        subset = trained_digits(test, classes)
        t0 = time.perf_counter()
        images = subset.images.float().div(255.0).cpu().numpy()
        viewed = with_tta(model, options.tta)
        assert isinstance(viewed, Ensemble)
        labels = subset.labels.cpu()
        logits = []
        with phase(on_work, "testing the members"):
            for member in viewed.members:
                logits.append(torch.from_numpy(map_batches(member, member, images, EVAL_BATCH)))
        probabilities = torch.stack(
            [torch.softmax(z / t, dim=1) for z, t in zip(logits, model.temperatures.cpu(), strict=True)]
        )
        combined = model.combined(probabilities)
        result = _classifier_eval(combined, labels)
        seconds = time.perf_counter() - t0
        entries = run.info.family_entries.get("members") or []
        weights = model.weights.cpu()
        members = [
            {
                "name": entries[i].get("name", f"member {i + 1}") if i < len(entries) else f"member {i + 1}",
                "model": spec.get("name"),
                "accuracy": _accuracy(z, labels),
                "loss": float(F.cross_entropy(z, labels)),
                "weight": round(float(weights[i] / weights.sum()), 6) if model.combine == "soft" else None,
            }
            for i, (z, spec) in enumerate(zip(logits, run.info.model.args.get("members") or [], strict=True))
        ]
        equal = torch.ones(len(logits))
        ways = {
            "soft": _accuracy(combine_probabilities(probabilities, "soft", equal), labels),
            "vote": _accuracy(combine_probabilities(probabilities, "vote", equal), labels),
        }
        if model.combine == "soft" and not torch.equal(weights / weights.sum(), equal / len(equal)):
            ways["select"] = _accuracy(combine_probabilities(probabilities, "soft", weights), labels)
        errors = calibration.errors(result.logits, labels, run.temperature)  # type: ignore[arg-type]
        return classifier_report(
            run,
            result,
            seconds,
            data.device,
            classes=list(classes) if len(subset) < len(test) else None,
            temperature=run.temperature,
            ece=errors["ece"],
            ece_uncalibrated=errors["ece_uncalibrated"],
            tta=options.tta,
            members=members,
            combinations={"used": _used(model, weights), **ways},
        )


def _used(model: Ensemble, weights: torch.Tensor) -> str:
    """How this ensemble combines: soft, vote, or select (a soft vote with chosen, unequal weights)."""
    if model.combine == "vote":
        return "vote"
    return "soft" if bool((weights == weights[0]).all()) else "select"


def _accuracy(scores: torch.Tensor, labels: torch.Tensor) -> float:
    return int((scores.argmax(dim=1) == labels).sum()) / len(labels) if len(labels) else 0.0


def _classifier_eval(log_probabilities: torch.Tensor, labels: torch.Tensor) -> ClassifierEval:
    """What `evaluate_classifier` gives, from the ensemble's log-probabilities on the labelled images."""
    predictions = log_probabilities.argmax(dim=1)
    confusion = torch.bincount(labels * 10 + predictions, minlength=100).reshape(10, 10).numpy()
    total = len(labels)
    return ClassifierEval(
        accuracy=int(confusion.trace()) / total if total else 0.0,
        loss=float(F.nll_loss(log_probabilities, labels)) if total else 0.0,
        confusion=confusion,
        predictions=predictions.numpy(),
        total=total,
        logits=log_probabilities.numpy(),
    )
