"""A run's resume snapshot: everything needed to continue training, in one file written atomically.

`<run>/resume.safetensors` holds the tensors of `engine.loop.Loop.state_dict()` (weights, optimizer
moments, random generator states, the best weights kept for early stopping) and, in the
safetensors header, the rest as JSON (position, history, numbers) and how the run was started
(model, arguments, options, data folder). Like the weights, it loads without unpickling anything.
The snapshot is replaced at the end of every epoch and removed once the run's checkpoint is saved.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as deserialise
from safetensors.torch import save as serialise

from mnistcli.atomic import atomic_write_bytes
from mnistcli.errors import CheckpointError

SNAPSHOT = "resume.safetensors"
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


def write(folder: Path, state: dict[str, Any], run: dict[str, Any]) -> Path:
    """Replace `folder`'s snapshot with `state` (a loop's state_dict) and `run` (how it was started: JSON values)."""
    tensors: dict[str, torch.Tensor] = {}
    header = json.dumps({"state": _split(state, tensors), "run": run}, allow_nan=True)
    return atomic_write_bytes(folder / SNAPSHOT, serialise(tensors, metadata={"snapshot": header}))


def read(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state, run) of `folder`'s snapshot. Raises `CheckpointError` if it is missing or unreadable."""
    path = folder / SNAPSHOT
    try:
        data = path.read_bytes()
        tensors = deserialise(data)
        header = json.loads(_metadata(data)["snapshot"])
        return _join(header["state"], tensors), header["run"]
    except FileNotFoundError:
        raise CheckpointError(f"{folder}: nothing to resume (no {SNAPSHOT})") from None
    except (OSError, SafetensorError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: unreadable resume snapshot ({e})") from None


def peek(folder: Path) -> dict[str, Any] | None:
    """The snapshot's `run` description and `position` (epoch, step, ...) without loading tensors, or None."""
    try:
        with (folder / SNAPSHOT).open("rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if not 0 < size < 100_000_000:
                return None
            header = json.loads(json.loads(f.read(size))["__metadata__"]["snapshot"])
        pairs = header["state"].get("__dict__", [])
        position: dict[str, Any] = next((_join(v, {}) for k, v in pairs if k == "position"), {})
        return {**header["run"], "position": position}
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


def _metadata(data: bytes) -> dict[str, str]:
    """The `__metadata__` of a safetensors file's header."""
    size = int.from_bytes(data[:8], "little")
    return dict(json.loads(data[8 : 8 + size])["__metadata__"])


def remove(folder: Path) -> None:
    """Delete the snapshot (the run is complete)."""
    (folder / SNAPSHOT).unlink(missing_ok=True)
