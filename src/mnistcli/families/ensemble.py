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

from mnistcli.data.tensors import TensorData
from mnistcli.errors import UsageError
from mnistcli.families import register_family
from mnistcli.families.base import EvalData, EvalOptions, classifier_report, trained_digits
from mnistcli.families.classify import ClassifyFamily, ClassifyParams
from mnistcli.models.ensemble import DEFAULT_ARCH, DEFAULT_MEMBERS, MAX_MEMBERS, Ensemble, combine_probabilities
from mnistcli.protocols import calibration
from mnistcli.protocols.inference import EVAL_BATCH, map_batches, score_logits, with_tta
from mnistcli.registry import get_entry
from mnistcli.reports import EvalReport
from mnistcli.work import WorkFn, phase

COMBINATIONS = ("soft", "vote", "select")


@dataclass
class EnsembleParams(ClassifyParams):
    """The ensemble's own options; those of ClassifyParams (label smoothing, calibration) go to every member."""

    members: int = DEFAULT_MEMBERS  # members to train (their seeds: --seed, --seed + 1, ...)
    arch: str = DEFAULT_ARCH  # registered classifiers, comma-separated, given to the members in turn
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
        viewed = with_tta(model, options.tta)
        assert isinstance(viewed, Ensemble)
        with phase(on_work, "testing the members"):
            logits = member_logits(viewed, subset)
        labels = subset.labels.cpu()
        probabilities = model.calibrated(logits)
        result = score_logits(model.combined(probabilities), labels)
        seconds = time.perf_counter() - t0
        entries = run.info.family_entries.get("members") or []
        weights = torch.tensor(model.weights)
        members = [
            {
                "name": str(entries[i].get("name")) if len(entries) == len(model.members) else f"member {i + 1}",
                "model": spec.get("name"),
                "accuracy": _accuracy(logits[:, i], labels),
                "loss": float(F.cross_entropy(logits[:, i], labels)),
                "weight": round(float(weights[i] / weights.sum()), 6) if model.combine == "soft" else None,
            }
            for i, spec in enumerate(run.info.model.args.get("members") or [])
        ]
        equal = torch.ones(len(model.members))
        ways = {
            "soft": _accuracy(combine_probabilities(probabilities, "soft", equal), labels),
            "vote": _accuracy(combine_probabilities(probabilities, "vote", equal), labels),
        }
        used = "select" if run.info.config.get("combine") == "select" else model.combine
        if used == "select":
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
            combinations={"used": used, **ways},
        )


def member_logits(model: Ensemble, data: TensorData) -> torch.Tensor:
    """Every member's logits on `data`, (N, members, 10) on the CPU, in eval mode and batches."""
    images = data.images.float().div(255.0).cpu().numpy()
    return torch.from_numpy(map_batches(model, model.member_logits, images, EVAL_BATCH))


def _accuracy(scores: torch.Tensor, labels: torch.Tensor) -> float:
    return int((scores.argmax(dim=1) == labels).sum()) / len(labels) if len(labels) else 0.0
