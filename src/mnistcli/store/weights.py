"""A run's weights: `model.safetensors` written from a model and read back into the model its meta.json names.

Weights only, in safetensors (loading cannot run code, unlike a pickle); the model is rebuilt
through the registry. The one part of the store that needs torch: finding and reading runs
(store/runs.py, store/resolve.py) does not.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import stat
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as serialise
from torch import nn

from mnistcli.atomic import atomic_write_bytes, atomic_write_text
from mnistcli.errors import CheckpointError, MnistError
from mnistcli.registry import create_model, saved_args
from mnistcli.store import lock
from mnistcli.store.checkpoint import FORMAT, Checkpoint
from mnistcli.store.runlog import finite
from mnistcli.store.runs import META, WEIGHTS, Run, begin, open_run


def load(run: Run, device: torch.device | str = "cpu") -> nn.Module:
    """Rebuild the run's model through the registry and load its weights (no code runs).

    The model is first built on the meta device (no memory) and compared with the weights file's
    header, so arguments the weights do not fit (a width of 2000) are refused before anything is
    allocated. Returns the model in eval mode on `device`. Raises `CheckpointError` if the weights
    are missing, corrupt, or do not fit the model the metadata names.
    """
    spec = run.info.model
    with torch.device("meta"):
        _check_weights(_rebuild(run), run)
    model = _rebuild(run)
    try:
        state = load_file(run.path / WEIGHTS, device="cpu")
    except FileNotFoundError:
        raise CheckpointError(f"{run.path}: no {WEIGHTS}") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{run.path / WEIGHTS}: corrupt weights ({e})") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"{run.path / WEIGHTS}: weights do not fit model {spec.name!r} ({first})") from None
    return model.to(device).eval()


def _rebuild(run: Run) -> nn.Module:
    """The run's model through the registry (on the current default device). Raises `CheckpointError`."""
    try:
        return create_model(run.info.model.name, **saved_args(run.info.model.name, run.info.model.args))
    except MnistError as e:
        raise CheckpointError(f"{run.path}: cannot rebuild its model ({e})") from None


def _check_weights(model: nn.Module, run: Run) -> None:
    """Raise `CheckpointError` unless the run's weights file holds exactly `model`'s tensors, name for name and shape
    for shape (read from the file's header alone; `model` may be on the meta device)."""
    path = run.path / WEIGHTS
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise CheckpointError(f"{path}: not a regular file")
        with safe_open(path, framework="pt") as f:
            found = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
    except FileNotFoundError:
        raise CheckpointError(f"{run.path}: no {WEIGHTS}") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: corrupt weights ({e})") from None
    wanted = {k: list(v.shape) for k, v in model.state_dict().items()}
    wrong = [k for k in wanted if k in found and found[k] != wanted[k]]
    missing, extra = [k for k in wanted if k not in found], [k for k in found if k not in wanted]

    def dims(shape: list[int]) -> str:
        return "x".join(map(str, shape)) or "a scalar"

    if wrong or missing or extra:
        problem = (
            f"{wrong[0]!r} is {dims(found[wrong[0]])} in the file, {dims(wanted[wrong[0]])} in the model"
            if wrong
            else f"no {missing[0]!r} in the file"
            if missing
            else f"{extra[0]!r} is not the model's"
        )
        more = len(wrong) + len(missing) + len(extra) - 1
        raise CheckpointError(
            f"{path}: weights do not fit model {run.info.model.name!r} ({problem}"
            + (f"; {more} more tensor{'s' if more > 1 else ''} differ)" if more else ")")
        )


def save(
    model: nn.Module,
    checkpoint: Checkpoint,
    folder: Path | None = None,
    name: str | None = None,
    root: Path | None = None,
) -> Run:
    """Save a run: the weights, then `meta.json` (whose presence marks a complete checkpoint); returns it.

    Into `folder` (from `begin`) or a new folder named as `begin` names it (claimed while it is saved).
    Each file is written to a temporary name and renamed into place, so no half-written file is ever
    visible; if saving fails (`FileProblem`: a full disk), a folder this call created is removed again.
    """
    if folder is None:
        folder = begin(checkpoint.model.name, name, root)
        try:
            return save(model, checkpoint, folder)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        finally:
            lock.release(folder)
    checkpoint = dataclasses.replace(checkpoint, name=folder.name)
    if not checkpoint.created:
        checkpoint = dataclasses.replace(checkpoint, created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    # Serialised in memory and written through atomic_write (safetensors' own save_file makes 0600 files).
    metadata = {"format": FORMAT, "model": checkpoint.model.name}
    atomic_write_bytes(folder / WEIGHTS, serialise(state, metadata=metadata))
    text = json.dumps(finite(checkpoint.to_json()), indent=2, allow_nan=False)  # strict JSON: a NaN is written null
    atomic_write_text(folder / META, text + "\n")
    return open_run(folder)
