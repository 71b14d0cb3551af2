"""The checkpoint description (`meta.json`): typed, versioned, one reader (`Checkpoint.from_json`) and one writer.

A checkpoint describes itself well enough to rebuild its model through the registry with nothing
else known (nanoGPT's habit): the model (name, arguments, family), the data it saw, the training
options, the per-epoch history, the test result, the family's own entries (a calibration, a
one-shot scale) and the versions that made it. Format 2 names the model's family (`family`);
format 1 (mnistcli 0.1, and the bundled checkpoint) called it `task`, and the triplet family
`metric`: it is read the same way. docs/formats.md documents the fields.

The reader trusts nothing it reads (a file may be edited, truncated or forged): every field's type
and range is checked, the training options against the dataclasses that define them
(`check_options`), and any that fails is a `CheckpointError` naming the file and the field.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from mnistcli.config import TrainConfig
from mnistcli.errors import CheckpointError
from mnistcli.store.fields import Fields, check_options, is_number, shown

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
        """Read a parsed `meta.json` (format 1 or 2), every field's type and range checked first.

        A field may be missing or null (older runs lack the newer ones; it then takes its default), never of
        another type or out of range. Raises `CheckpointError` naming `where` and the field at fault.
        """
        spec = meta.get("model") if isinstance(meta, dict) else None
        if not isinstance(meta, dict) or meta.get("format") not in READABLE or not isinstance(spec, dict):
            raise CheckpointError(f"{where}: not a {FORMAT} checkpoint")
        f = Fields(where)
        f.values(meta, "the description")  # first, so that nothing below meets a value nested a thousand deep
        return cls(
            model=_model(f, spec),
            config=_config(f, meta.get("config")),
            data=_data(f, f.mapping(meta.get("data"), "data")),
            history=[
                epoch_entry(f, e, f"history[{i}]") for i, e in enumerate(f.sequence(meta.get("history"), "history"))
            ],
            results=_results(f, f.mapping(meta.get("metrics"), "metrics")),
            family_entries=_entries(f, meta),
            preprocessing=f.mapping(meta.get("preprocessing"), "preprocessing"),
            seconds=f.number(meta.get("seconds"), "seconds", low=0),
            device=f.text(meta.get("device"), "device", None),
            processes=f.whole(meta.get("processes"), "processes", low=1, high=MAX_PROCESSES) or 1,
            created=_created(f, meta.get("created")),
            versions={
                k: str(f.text(v, f"versions.{k}")) for k, v in f.mapping(meta.get("versions"), "versions").items()
            },
            name=str(f.text(meta.get("name"), "name")),
        )


MAX_ARGS = 2000  # values in `model.args`: an ensemble of 100 members takes some 600
MAX_PROCESSES = 2**20  # processes that trained a run together: far more than any machine room runs
TEMPERATURES = (1e-3, 1e6)  # a calibration's T (fitted within 0.05-20); beyond, softmax(logits / T) is no longer finite
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # a model's or a family's registered name
MEASURE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 -]{0,39}")  # accuracy, linear evaluation, 10-way 1-shot, bag AUC, ...
_COUNTS = ("train_images", "val_images", "calibration_images", "test_images", "unlabelled_images")
_CURVE = ("train_loss", "train_accuracy")
_MEASURES = {"test_accuracy", "test_loss", "test_measure", "best_epoch", "stopped_early", "target"}


def _model(f: Fields, spec: dict[str, Any]) -> ModelSpec:
    key = "family" if "family" in spec else "task"  # format 1 called it the task
    family = f.text(spec.get(key), f"model.{key}", "classify", NAME)
    if spec.get("name") is None:
        raise f.wrong("model.name", "a registered model's name", None)
    args = f.mapping(spec.get("args"), "model.args")
    if f.values(args, "'model.args'") > MAX_ARGS:  # an ensemble of a million members: too long to even build
        raise f.wrong("model.args", f"at most {MAX_ARGS:,} values", args)
    if "name" in args:  # registry.create_model's own parameter, so no model's argument
        raise f.wrong("model.args", "the model's arguments (none of them 'name')", args)
    return ModelSpec(
        str(f.text(spec.get("name"), "model.name", pattern=NAME)),
        args,
        OLD_FAMILIES.get(str(family), str(family)),
        f.whole(spec.get("params"), "model.params"),
    )


def _config(f: Fields, value: Any) -> dict[str, Any]:
    """The training options, those every family shares checked (a family's own: `check_options` when it is known)."""
    config = f.mapping(value, "config")
    check_options(config, TrainConfig, f.where)
    return config


def _data(f: Fields, data: dict[str, Any]) -> DataSpec:
    classes = data.get("classes")
    digits = isinstance(classes, list) and all(type(c) is int and 0 <= c <= 9 for c in classes)
    if classes is not None and not (digits and classes and len(set(classes)) == len(classes)):
        raise f.wrong("data.classes", "a list of distinct digits 0-9", classes)
    return DataSpec(
        folder=f.text(data.get("folder"), "data.folder", None),
        classes=tuple(classes) if classes is not None else tuple(range(10)),
        **{k: f.whole(data.get(k), f"data.{k}") or 0 for k in _COUNTS},
    )


def epoch_entry(f: Fields, entry: Any, key: str) -> dict[str, Any]:
    """One epoch of the history (engine.loop.EpochInfo): its number and measurements (NaN where a run diverged)."""
    entry = f.mapping(entry, key)
    if f.whole(entry.get("epoch"), f"{key}.epoch") is None:
        raise f.wrong(f"{key}.epoch", "a whole number", None)
    for name in (*_CURVE, *entry):  # the curve's two are required; null is a NaN (what a diverged run measured)
        if f.number(entry.get(name), f"{key}.{name}", measured=True) is None and name in _CURVE:
            if name not in entry:
                raise f.wrong(f"{key}.{name}", "a number", None)
            entry[name] = math.nan
    return entry


def _results(f: Fields, metrics: dict[str, Any]) -> Results:
    extra = {k: v for k, v in metrics.items() if k not in _MEASURES and type(v) in (int, float)}  # others: dropped
    return Results(
        f.number(metrics.get("test_accuracy"), "metrics.test_accuracy", 0, 1, measured=True),  # NaN: AUC of 1 class
        f.number(metrics.get("test_loss"), "metrics.test_loss", measured=True),
        str(f.text(metrics.get("test_measure"), "metrics.test_measure", "accuracy", MEASURE)),
        {k: float(f.number(v, f"metrics.{k}", measured=True) or 0.0) for k, v in extra.items()},
        f.whole(metrics.get("best_epoch"), "metrics.best_epoch"),
        f.flag(metrics.get("stopped_early"), "metrics.stopped_early", False),
        _target(f, metrics.get("target")),
    )


def _target(f: Fields, value: Any) -> dict[str, Any] | None:
    """--target-accuracy's entry: target, checked_on, reached, and when reached the epochs (and seconds) it took."""
    if value is None:
        return None
    target = f.mapping(value, "metrics.target")
    for key, v in target.items():  # scalars: the numbers it measured, where it checked, whether it got there
        if not isinstance(v, (str, bool)):
            f.number(v, f"metrics.target.{key}", measured=True)
    f.number(target.get("target"), "metrics.target.target", 0, 1)
    reached = f.flag(target.get("reached"), "metrics.target.reached", False)
    if f.number(target.get("epochs"), "metrics.target.epochs", 0) is None and reached:
        raise f.wrong("metrics.target.epochs", "a number (the target was reached)", None)
    return target


def _entries(f: Fields, meta: dict[str, Any]) -> dict[str, Any]:
    """The family's own top-level entries (FAMILY_KEYS), each checked."""
    entries = {k: meta[k] for k in FAMILY_KEYS if meta.get(k) is not None}
    _check_calibration(entries.get("calibration"), f.where)
    members = entries.get("members")
    if members is not None and not (
        isinstance(members, list) and all(isinstance(m, dict) and isinstance(m.get("name"), str) for m in members)
    ):
        raise CheckpointError(f"{f.where}: 'members' must be a list of objects, each with a name (text)")
    f.number(f.mapping(entries.get("oneshot"), "oneshot").get("scale"), "oneshot.scale", 1e-6, 1e6)
    f.mapping(entries.get("selection"), "selection")
    return entries


def _created(f: Fields, value: Any) -> str:
    """When the run was saved: UTC, ISO 8601 (or "" where a description does not say)."""
    created = str(f.text(value, "created"))
    try:
        if len(created) <= 40 and (not created or datetime.fromisoformat(created)):
            return created
    except ValueError:
        pass
    raise f.wrong("created", "a date and time (ISO 8601)", value)


def _check_calibration(calibration: Any, where: Path | str) -> None:
    """Raise `CheckpointError` unless `calibration` is absent, null, or holds temperatures within TEMPERATURES."""
    if calibration is None:
        return  # written before calibration existed, or by a family that has none: T = 1
    heads = [calibration, calibration.get("sum") or {}] if isinstance(calibration, dict) else [None]
    for head in heads:
        t: Any = head.get("temperature", 1.0) if isinstance(head, dict) else None
        x = float(t) if is_number(t) else math.nan
        if not TEMPERATURES[0] <= x <= TEMPERATURES[1]:
            raise CheckpointError(f"{where}: 'calibration' must hold a positive 'temperature', not {shown(t)}")
