"""What there is: the registered models and the saved checkpoints."""

from __future__ import annotations

import inspect
import os
from dataclasses import asdict
from pathlib import Path

from mnistcli import paths, store
from mnistcli.api.common import params_count
from mnistcli.api.ensembling import read_plan
from mnistcli.data.files import open_regular
from mnistcli.errors import CheckpointError, FileProblem
from mnistcli.families import get_family
from mnistcli.registry import ModelEntry, create_model, get_entry, list_models, model_args
from mnistcli.reports import ModelInfo
from mnistcli.store import snapshot

# Choices of a run rather than of a model (left out of a model's listed options, unless its recipe sets one).
RUN_CHOICES = {"seed", "device", "classes", "per_class", "target_accuracy", "accumulate", "precision"}


def _info(e: ModelEntry) -> ModelInfo:
    args = {k: "<required>" if v is inspect.Parameter.empty else v for k, v in model_args(e.name).items()}
    family = get_family(e.family)
    config, own = family.configure(e.recipe, {})  # what `mnist train NAME` uses (a bags model's epochs: --bags)
    options = {**config.to_dict(), **asdict(own)}
    shown = {k: v for k, v in options.items() if k not in RUN_CHOICES or k in e.recipe}
    if family.trains_members:  # an ensemble: its own options; training options and --arg go to every member
        args, shown = {}, dict(e.recipe)
    return ModelInfo(e.name, e.family, e.description, params_count(create_model(e.name)), e.recipe, args, shown)


def models(pattern: str = "*") -> list[ModelInfo]:
    """Every registered model matching `pattern`, with its parameter count, arguments and recipe."""
    return [_info(e) for e in list_models(pattern)]


def model(name: str) -> ModelInfo:
    """One model by its exact name. Raises `ModelError` (naming close matches) if there is none."""
    return _info(get_entry(name))


def checkpoints() -> list[store.Run]:
    """The user's runs (oldest first), then the bundled ones first; not those whose weights file is there but is no
    regular file (`broken_runs` names them)."""
    return [r for r in store.list_runs(include_bundled=True) if _weights_problem(r.path) is None]


def _weights_problem(folder: Path) -> str | None:
    """Why the weights file in `folder` cannot be read (a FIFO, a device, a folder, a link to nothing), found without
    reading a byte (opened through `open_regular`, which never waits); None if it is a regular file, or missing
    (loading it says so)."""
    path = folder / store.WEIGHTS
    if not os.path.lexists(path):
        return None
    try:
        with open_regular(path, FileProblem):
            return None
    except FileProblem as e:
        return str(e)


def interrupted_runs() -> list[str]:
    """Names of runs that logged training but never saved a checkpoint."""
    return [f.name for f in store.interrupted_runs()]


def in_use(name: str) -> str | None:
    """Who is training (or removing) the run `name` now ("a training (pid 123)"), or None if no process is."""
    return store.holder(paths.runs_dir() / name)


def resumable(name: str) -> tuple[int, int, str] | None:
    """(epochs done, epochs in all, "epochs") of a stopped run that `mnist train --resume` can continue, or
    (members done, members in all, "members") of a stopped ensemble; else None."""
    folder = paths.runs_dir() / name
    if (folder / store.PLAN).is_file():
        try:
            plan = read_plan(folder)
        except CheckpointError:
            return None
        done = sum((folder / store.MEMBERS / m["name"] / store.META).is_file() for m in plan["members"])
        return done, len(plan["members"]), "members"
    found = snapshot.peek(folder) or {}  # None for a FIFO, which it refuses without waiting on it
    position, options = found.get("position"), found.get("options")
    done = position.get("epoch", 0) if isinstance(position, dict) else None
    total = options.get("epochs", 0) if isinstance(options, dict) else None
    if type(done) is not int or type(total) is not int:
        return None  # no snapshot, or one whose header says nonsense: the run is listed as interrupted
    return done, total, "epochs"


def broken_runs() -> list[tuple[str, str]]:
    """(name, problem) of runs whose checkpoint metadata cannot be read, or whose weights file is no regular file."""
    broken = [(f.name, problem) for f, problem in store.broken_runs()]
    weightless = [(r.name, problem) for r in store.list_runs() for problem in [_weights_problem(r.path)] if problem]
    return sorted(broken + weightless)


def remove_checkpoint(name: str) -> store.Run:
    """Delete a run from the store; returns it."""
    return store.remove(name)
