"""The checkpoint description (`meta.json`): typed, versioned, one reader (`Checkpoint.from_json`) and one writer.

A checkpoint describes itself well enough to rebuild its model through the registry with nothing
else known (nanoGPT's habit): the model (name, arguments, family), the data it saw, the training
options, the per-epoch history, the test result, the family's own entries (a calibration, a
one-shot scale) and the versions that made it. Format 2 names the model's family (`family`);
format 1 (mnistcli 0.1, and the bundled checkpoint) called it `task`, and the triplet family
`metric`: it is read the same way. docs/formats.md documents the fields.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnistcli.errors import CheckpointError

FORMAT = "mnistcli-checkpoint/2"
READABLE = ("mnistcli-checkpoint/1", FORMAT)
OLD_FAMILIES = {"metric": "triplet"}  # format 1's names
# Top-level entries a family adds: calibrated families; triplet; an ensemble's members and its chosen weights.
FAMILY_KEYS = ("calibration", "oneshot", "members", "selection")


@dataclass(frozen=True)
class ModelSpec:
    name: str  # registry name
    args: dict[str, Any] = field(default_factory=dict)  # the builder's keyword arguments (`--arg`)
    family: str = "classify"  # families/: how it was trained and is measured
    params: int | None = None  # number of parameters


@dataclass(frozen=True)
class DataSpec:
    folder: str | None = None  # the MNIST folder it trained from
    train_images: int = 0
    val_images: int = 0
    calibration_images: int = 0  # held out to fit the temperature (when there was no validation split)
    test_images: int = 0
    unlabelled_images: int = 0  # self-supervision's images (labels never read)
    classes: tuple[int, ...] = tuple(range(10))  # the digits whose labels it trained with


@dataclass(frozen=True)
class Results:
    test_accuracy: float | None = None  # the family's headline test number (0-1)
    test_loss: float | None = None
    test_measure: str = "accuracy"  # what test_accuracy is: accuracy, linear evaluation, 10-way 1-shot, sum accuracy
    extra: dict[str, float] = field(default_factory=dict)  # further test numbers (adder: digit_accuracy)
    best_epoch: int | None = None
    stopped_early: bool = False
    target: dict[str, Any] | None = None  # --target-accuracy: target, checked_on, reached, accuracy, epochs, seconds


@dataclass(frozen=True)
class Checkpoint:
    """Everything `meta.json` says about a run."""

    model: ModelSpec
    config: dict[str, Any] = field(default_factory=dict)  # training options: TrainConfig's and the family's Params'
    data: DataSpec = field(default_factory=DataSpec)
    history: list[dict[str, Any]] = field(default_factory=list)  # engine.loop.EpochInfo per epoch
    results: Results = field(default_factory=Results)
    family_entries: dict[str, Any] = field(default_factory=dict)  # "calibration", "oneshot"
    preprocessing: dict[str, Any] = field(default_factory=dict)
    seconds: float | None = None  # training time
    device: str | None = None
    processes: int = 1  # how many processes trained it together (data-parallel: engine/dist.py)
    created: str = ""  # UTC, ISO 8601
    versions: dict[str, str] = field(default_factory=dict)
    name: str = ""

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))

    @property
    def calibration(self) -> dict[str, Any] | None:
        return self.family_entries.get("calibration")

    @property
    def temperature(self) -> float:
        """T of the calibrated probabilities softmax(logits / T); 1.0 for a run never calibrated."""
        return float((self.calibration or {}).get("temperature", 1.0))

    @property
    def sum_temperature(self) -> float:
        """An adder's T for its sum head (`temperature` is its digit head's); 1.0 if never calibrated."""
        return float(((self.calibration or {}).get("sum") or {}).get("temperature", 1.0))

    @property
    def oneshot_scale(self) -> float | None:
        """The confidence scale a triplet run fitted for `mnist oneshot`, if it did."""
        entry = self.family_entries.get("oneshot")
        return float(entry["scale"]) if isinstance(entry, dict) and "scale" in entry else None

    def to_json(self) -> dict[str, Any]:
        """The `meta.json` object (format 2)."""
        r = self.results
        return {
            "format": FORMAT,
            "name": self.name,
            "model": {
                "name": self.model.name,
                "args": self.model.args,
                "family": self.model.family,
                "params": self.model.params,
            },
            "preprocessing": self.preprocessing,
            "config": self.config,
            "data": {**self.data.__dict__, "classes": list(self.data.classes)},
            "history": self.history,
            "metrics": {
                "test_accuracy": r.test_accuracy,
                "test_loss": r.test_loss,
                "test_measure": r.test_measure,
                **r.extra,
                "best_epoch": r.best_epoch,
                "stopped_early": r.stopped_early,
                "target": r.target,
            },
            **self.family_entries,
            "seconds": self.seconds,
            "device": self.device,
            "processes": self.processes,
            "created": self.created,
            "versions": self.versions,
        }

    @classmethod
    def from_json(cls, meta: Any, where: Path | str) -> Checkpoint:
        """Read a parsed `meta.json` (format 1 or 2). Raises `CheckpointError` naming `where` and the problem."""
        spec = meta.get("model") if isinstance(meta, dict) else None
        if not isinstance(meta, dict) or meta.get("format") not in READABLE or not isinstance(spec, dict):
            raise CheckpointError(f"{where}: not a {FORMAT} checkpoint")
        if not isinstance(spec.get("name"), str) or not isinstance(spec.get("args", {}), dict):
            raise CheckpointError(f"{where}: 'model' must hold a name (text) and args (an object)")
        family = spec.get("family", spec.get("task", "classify"))
        family = OLD_FAMILIES.get(family, family) if isinstance(family, str) else "classify"
        entries = {k: meta[k] for k in FAMILY_KEYS if meta.get(k) is not None}
        _check_calibration(entries.get("calibration"), where)
        members = entries.get("members")
        if members is not None and not (
            isinstance(members, list) and all(isinstance(m, dict) and isinstance(m.get("name"), str) for m in members)
        ):
            raise CheckpointError(f"{where}: 'members' must be a list of objects, each with a name (text)")
        metrics = _object(meta.get("metrics"))
        known = {"test_accuracy", "test_loss", "test_measure", "best_epoch", "stopped_early", "target"}
        data = _object(meta.get("data"))
        return cls(
            model=ModelSpec(spec["name"], dict(spec.get("args", {})), family, spec.get("params")),
            config=_object(meta.get("config")),
            data=DataSpec(
                folder=data.get("folder"),
                classes=tuple(int(c) for c in data.get("classes") or range(10)),
                **{k: int(data.get(k) or 0) for k in _COUNTS},
            ),
            history=list(meta.get("history") or []),
            results=Results(
                metrics.get("test_accuracy"),
                metrics.get("test_loss"),
                str(metrics.get("test_measure", "accuracy")),
                {k: v for k, v in metrics.items() if k not in known and isinstance(v, (int, float))},
                metrics.get("best_epoch"),
                bool(metrics.get("stopped_early", False)),
                metrics.get("target"),
            ),
            family_entries=entries,
            preprocessing=_object(meta.get("preprocessing")),
            seconds=meta.get("seconds"),
            device=meta.get("device"),
            processes=_count(meta.get("processes", 1), "processes", where),
            created=str(meta.get("created", "")),
            versions=_object(meta.get("versions")),
            name=str(meta.get("name", "")),
        )


_COUNTS = ("train_images", "val_images", "calibration_images", "test_images", "unlabelled_images")


def _count(value: Any, key: str, where: Path | str) -> int:
    """A positive whole number of `meta.json`; raises `CheckpointError` naming `where` and `key` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CheckpointError(f"{where}: {key!r} must be a positive whole number, not {value!r}")
    return value


def _object(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


def _check_calibration(calibration: Any, where: Path | str) -> None:
    """Raise `CheckpointError` unless `calibration` is absent, null, or holds positive finite temperatures."""
    if calibration is None:
        return  # written before calibration existed, or by a family that has none: T = 1
    heads = [calibration, calibration.get("sum") or {}] if isinstance(calibration, dict) else [None]
    for head in heads:
        t = head.get("temperature", 1.0) if isinstance(head, dict) else None
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t < math.inf:
            raise CheckpointError(f"{where}: 'calibration' must hold a positive 'temperature', not {t!r}")
