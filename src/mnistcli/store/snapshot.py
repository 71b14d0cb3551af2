"""A run's resume snapshot: everything needed to continue training, in one file written atomically.

`<run>/resume.safetensors` holds the tensors of `engine.loop.Loop.state_dict()` (weights, optimizer
moments, random generator states, the best weights kept for early stopping) and, in the
safetensors header, the rest as JSON (position, history, numbers) and how the run was started
(model, arguments, options, data folder). Like the weights, it loads without unpickling anything.
The snapshot is replaced at the end of every epoch and removed once the run's checkpoint is saved.

A snapshot is read as a user's file is: opened through `open_regular` (a FIFO in its place is refused,
never waited on), and its description of the run checked field by field (`Fields`, `check_options`)
as meta.json's is, so a forged one is a `CheckpointError` naming the file and the field.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as deserialise
from safetensors.torch import save as serialise

from mnistcli.atomic import atomic_write_bytes
from mnistcli.config import TrainConfig, field_names
from mnistcli.data.files import open_regular
from mnistcli.errors import CheckpointError, FileProblem, MnistError
from mnistcli.families import get_family
from mnistcli.registry import MAX_PARAMETERS, get_entry
from mnistcli.store.checkpoint import MAX_ARGS, NAME, epoch_entry
from mnistcli.store.fields import Fields, check_options
from mnistcli.store.runs import SNAPSHOT

TENSOR = "__tensor__"  # in the JSON, {"__tensor__": key} stands for the tensor stored under `key`


def _split(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """`value` with every tensor moved into `tensors` and replaced by a reference; JSON-ready."""
    if isinstance(value, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = value.detach().cpu().contiguous()
        return {TENSOR: key}
    if isinstance(value, dict):
        return {"__dict__": [[_split(k, tensors), _split(v, tensors)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return {"__tuple__" if isinstance(value, tuple) else "__list__": [_split(v, tensors) for v in value]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot snapshot a {type(value).__name__}")


def _join(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of `_split`."""
    if isinstance(value, dict):
        if TENSOR in value:
            return tensors[value[TENSOR]]
        if "__dict__" in value:
            return {_join(k, tensors): _join(v, tensors) for k, v in value["__dict__"]}
        if "__tuple__" in value:
            return tuple(_join(v, tensors) for v in value["__tuple__"])
        return [_join(v, tensors) for v in value["__list__"]]
    return value


# A snapshot holds the weights, the optimizer's state (two tensors a weight at most) and a best or first copy of
# the weights: some five times the largest model registry.create_model builds (MAX_PARAMETERS float32 numbers).
MAX_SNAPSHOT_BYTES = 6 * 4 * MAX_PARAMETERS


def write(folder: Path, state: dict[str, Any], run: dict[str, Any]) -> Path:
    """Replace `folder`'s snapshot with `state` (a loop's state_dict) and `run` (how it was started: JSON values)."""
    tensors: dict[str, torch.Tensor] = {}
    header = json.dumps({"state": _split(state, tensors), "run": run}, allow_nan=True)
    return atomic_write_bytes(folder / SNAPSHOT, serialise(tensors, metadata={"snapshot": header}))


def read(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state, run) of `folder`'s snapshot, the run's description checked (`described`). Raises `CheckpointError`
    if it is missing, not a regular file (never waiting on a FIFO), unreadable, or describes no run it could be."""
    path = folder / SNAPSHOT
    if not os.path.lexists(path):
        raise CheckpointError(f"{folder}: nothing to resume (no {SNAPSHOT})")
    try:
        with open_regular(path, FileProblem) as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_SNAPSHOT_BYTES:
                raise FileProblem(path, f"{size:,} bytes, more than a snapshot of any model mnistcli builds")
            data = f.read()
        tensors = deserialise(data)
        header = json.loads(_metadata(data)["snapshot"])
        state, run = _join(header["state"], tensors), header["run"]
    except FileProblem as e:
        raise CheckpointError(f"{path}: unreadable resume snapshot ({e.problem})") from None
    except (OSError, SafetensorError, ValueError, KeyError, TypeError, RecursionError) as e:
        # RecursionError: JSON nested thousands deep (json.loads and _join both recurse)
        problem = "nested too deep" if isinstance(e, RecursionError) else e
        raise CheckpointError(f"{path}: unreadable resume snapshot ({problem})") from None
    position = state.get("position") if isinstance(state, dict) else None
    if not isinstance(position, dict) or type(position.get("epoch")) is not int or position["epoch"] < 0:
        raise CheckpointError(f"{path}: unreadable resume snapshot (no position: 'state.position.epoch')")
    state["position"] = _position(position, path)
    return state, described(run, path)


def _position(position: dict[str, Any], where: Path) -> dict[str, Any]:
    """The loop's position (engine.loop.Position), each field checked; raises `CheckpointError` naming it."""
    f = Fields(where)
    unknown = sorted(set(position) - {"epoch", "step", "seconds", "history", "stopped_early"})
    if unknown:
        raise CheckpointError(f"{where}: 'state.position' holds {unknown[0]!r}, which a run's position has not")
    history = f.sequence(position.get("history"), "state.position.history")
    return {
        "epoch": position["epoch"],
        "step": f.whole(position.get("step"), "state.position.step") or 0,
        "seconds": f.number(position.get("seconds"), "state.position.seconds", low=0) or 0.0,
        "history": [epoch_entry(f, e, f"state.position.history[{i}]") for i, e in enumerate(history)],
        "stopped_early": f.flag(position.get("stopped_early"), "state.position.stopped_early", False),
    }


def described(run: Any, where: Path | str) -> dict[str, Any]:
    """The snapshot's description of how the run was started (`run`: model, args, options, data, tensorboard,
    log_bytes), every field checked, options against TrainConfig and the model's family's Params as meta.json's
    are. Returns it (missing optional fields filled in). Raises `CheckpointError` naming `where` and the field."""
    f = Fields(where)
    if not isinstance(run, dict):
        raise f.wrong("run", "an object", run)
    f.values(run, "'run'")  # first: nothing below meets a value nested a thousand deep
    name = f.text(run.get("model"), "run.model", None, NAME)
    if name is None:
        raise f.wrong("run.model", "a registered model's name", None)
    try:
        family = get_family(get_entry(name).family)
    except MnistError as e:
        raise CheckpointError(f"{where}: 'run.model': {e}") from None
    args = f.mapping(run.get("args"), "run.args")
    if f.values(args, "'run.args'") > MAX_ARGS or "name" in args:  # 'name': registry.create_model's own parameter
        raise f.wrong("run.args", f"the model's arguments (at most {MAX_ARGS:,} values, none named 'name')", args)
    options = f.mapping(run.get("options"), "run.options")
    unknown = sorted(set(options) - field_names(TrainConfig) - field_names(family.Params))
    if unknown:
        raise CheckpointError(f"{where}: 'run.options' holds {unknown[0]!r}, no option of a {family.name} model")
    for dataclass in (TrainConfig, family.Params):
        try:
            check_options(options, dataclass, where)
        except CheckpointError as e:  # check_options names meta.json's field ('config...'): here it is the run's
            raise CheckpointError(str(e).replace("'config", "'run.options", 1)) from None
    return {
        **run,
        "model": name,
        "args": args,
        "options": options,
        "data": f.text(run.get("data"), "run.data", None),
        "tensorboard": f.flag(run.get("tensorboard"), "run.tensorboard", False),
        "log_bytes": f.whole(run.get("log_bytes"), "run.log_bytes") or 0,
    }


def peek(folder: Path) -> dict[str, Any] | None:
    """The snapshot's `run` description and `position` (epoch, step, ...) without loading tensors, or None (no
    snapshot, not a regular file, or a header that cannot be read). Its values are unchecked."""
    try:
        with open_regular(folder / SNAPSHOT, FileProblem) as f:
            size = int.from_bytes(f.read(8), "little")
            if not 0 < size < 100_000_000:
                return None
            header = json.loads(json.loads(f.read(size))["__metadata__"]["snapshot"])
        pairs = header["state"].get("__dict__", [])
        position: dict[str, Any] = next((_join(v, {}) for k, v in pairs if k == "position"), {})
        return {**header["run"], "position": position}
    except (FileProblem, OSError, ValueError, KeyError, TypeError, IndexError, AttributeError, RecursionError):
        return None


def _metadata(data: bytes) -> dict[str, str]:
    """The `__metadata__` of a safetensors file's header."""
    size = int.from_bytes(data[:8], "little")
    return dict(json.loads(data[8 : 8 + size])["__metadata__"])


def remove(folder: Path) -> None:
    """Delete the snapshot (the run is complete)."""
    (folder / SNAPSHOT).unlink(missing_ok=True)
