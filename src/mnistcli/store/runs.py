"""The checkpoint store: save, list, resolve, load and remove training runs.

A run is a folder under `<home>/runs/<name>/` holding `model.safetensors` (weights only: loading
cannot run code, unlike a pickle) and `meta.json`, the typed description of store/checkpoint.py.
A run still training, or stopped, also holds its resume snapshot (store/snapshot.py).

Training claims the folder when it starts (`begin`) and logs into it as it goes (`log.jsonl`);
saving writes each file under a temporary name and renames it into place, `meta.json` last, so
only a folder with `meta.json` is a checkpoint and an interrupted run keeps just its log. A small pretrained `cnn` ships inside the package and is used
when the user has no run of their own.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import stat
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mnistcli import paths
from mnistcli.data.files import open_regular
from mnistcli.errors import CheckpointError, FileProblem, MnistError, UsageError
from mnistcli.store import lock
from mnistcli.store.checkpoint import Checkpoint
from mnistcli.store.fields import check_options
from mnistcli.store.runlog import LOG

WEIGHTS, META = "model.safetensors", "meta.json"
SNAPSHOT = "resume.safetensors"  # a stopped run's state to resume from (store/snapshot.py)
# An ensemble's folder also holds its members' run folders under `members/`, and, until it is saved,
# `plan.json`: what it was started with (api/ensembling.py), which `mnist train --resume` goes on from.
MEMBERS, PLAN = "members", "plan.json"
BUNDLED_ROOT = Path(__file__).parent.parent / "pretrained"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # always used with fullmatch


@dataclass(frozen=True)
class Run:
    """One checkpoint: its name, folder, `meta.json` as parsed, and whether it ships with mnistcli."""

    name: str
    path: Path
    meta: dict[str, Any]
    bundled: bool = False

    @functools.cached_property
    def info(self) -> Checkpoint:
        """The typed description (meta.json was checked when the run was opened)."""
        return Checkpoint.from_json(self.meta, self.path / META)

    @property
    def model(self) -> str:
        return self.info.model.name

    @property
    def family(self) -> str:
        return self.info.model.family

    @property
    def test_accuracy(self) -> float | None:
        return self.info.results.test_accuracy

    @property
    def temperature(self) -> float:
        return self.info.temperature

    @property
    def sum_temperature(self) -> float:
        return self.info.sum_temperature

    @property
    def created(self) -> str:
        return self.info.created

    @property
    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())


META_LIMIT = 16 * 2**20  # bytes of meta.json read at most: a run's is a few KiB (a long history or an ensemble: tens)


def read_meta(folder: Path) -> dict[str, Any]:
    """Parse and check `folder/meta.json`; returns the object.

    Raises `CheckpointError` if it is missing, not a regular file, larger than META_LIMIT, not JSON, or
    not a description (every field's type and range: store/checkpoint.py) whose family takes its options.
    """
    path = folder / META
    try:
        meta = json.loads(_read_small(path))
    except FileNotFoundError:
        raise CheckpointError(f"{folder}: not a checkpoint (no {META})") from None
    except (OSError, ValueError, RecursionError) as e:  # ValueError: bad UTF-8, bad JSON, an int of 5000 digits
        raise CheckpointError(f"{path}: corrupt checkpoint metadata ({e})") from None
    _check_family(Checkpoint.from_json(meta, path), path)
    return meta  # type: ignore[no-any-return]


def _read_small(path: Path) -> str:
    """The text of `path`, which must be a regular file of at most META_LIMIT bytes: never waits on a FIFO, never
    reads a gigabyte. Raises `CheckpointError` for anything else, `OSError` if it cannot be read."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO opens at once instead of waiting
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CheckpointError(f"{path}: not a regular file")
        with open(fd, "rb", closefd=False) as f:
            data = f.read(META_LIMIT + 1)
    finally:
        os.close(fd)
    if len(data) > META_LIMIT:
        raise CheckpointError(f"{path}: too large for checkpoint metadata (over {META_LIMIT // 2**20} MiB)")
    return data.decode("utf-8")


def _check_family(info: Checkpoint, where: Path) -> None:
    """Raise `CheckpointError` unless the run's family is registered and takes the family options in its `config`
    (not inside `options_unchecked`)."""
    if not _CHECK_OPTIONS.get():
        return
    from mnistcli.families import get_family  # the families import torch

    try:
        family = get_family(info.model.family)
    except MnistError as e:
        raise CheckpointError(f"{where}: 'model.family': {e}") from None
    check_options(info.config, family.Params, where)


_CHECK_OPTIONS: ContextVar[bool] = ContextVar("check_options", default=True)


@contextlib.contextmanager
def options_unchecked() -> Iterator[None]:
    """Inside the block, runs are read field by field (store/checkpoint.py: types, ranges, size) but their `config` is
    not checked against their family's options, which needs the families, and so torch: for the torch-free fast
    path (api/serving.py), which uses neither the options nor the weights, only meta.json and model.onnx."""
    token = _CHECK_OPTIONS.set(False)
    try:
        yield
    finally:
        _CHECK_OPTIONS.reset(token)


def fingerprint(folder: Path) -> str:
    """A digest of the run's meta.json and weights (SHA-256): what a file made from them, its model.onnx
    (api/onnxcache.py), records, so that a file made before either changed (a temperature set again, weights
    replaced) is known to be stale. Raises `CheckpointError` if either is not a regular file or cannot be read."""
    digest = hashlib.sha256()
    for name in (META, WEIGHTS):
        try:
            with open_regular(folder / name, _Unreadable) as f:  # never waits on a FIFO in its place
                for block in iter(lambda: f.read(2**20), b""):
                    digest.update(block)
        except (OSError, _Unreadable) as e:
            raise CheckpointError(f"{folder / name}: cannot read it ({e})") from None
    return digest.hexdigest()


class _Unreadable(FileProblem):
    """A run's file is not a regular file that can be read."""


def read_checkpoint(folder: Path) -> Checkpoint:
    """The typed description of the run in `folder`. Raises `CheckpointError` if it has none or it is corrupt."""
    return Checkpoint.from_json(read_meta(folder), folder / META)


def open_run(folder: Path, bundled: bool = False) -> Run:
    """The run in `folder` (its meta.json checked). Raises `CheckpointError` if it is not a readable checkpoint."""
    return Run(folder.name, folder, read_meta(folder), bundled)


def list_runs(root: Path | None = None, include_bundled: bool = False) -> list[Run]:
    """Runs in the store, oldest first; folders that are not readable checkpoints are skipped (`broken_runs`
    names those whose meta.json is there but unreadable)."""
    root = root or paths.runs_dir()
    runs = []
    folders = sorted(root.iterdir()) if root.is_dir() else []
    for folder in folders:
        if folder.name.startswith(".") or not folder.is_dir():
            continue  # temporary folders of saves in progress, or stray files
        try:
            runs.append(open_run(folder))
        except CheckpointError:
            continue
    runs.sort(key=lambda r: (r.created, r.name))
    return (bundled_runs() + runs) if include_bundled else runs


def interrupted_runs(root: Path | None = None) -> list[Path]:
    """Run folders that have a training log or a resume snapshot but no checkpoint (training stopped before saving)."""
    root = root or paths.runs_dir()
    if not root.is_dir():
        return []
    return sorted(
        f
        for f in root.iterdir()
        if not f.name.startswith(".")
        and any((f / x).exists() for x in (LOG, SNAPSHOT, PLAN))
        and not os.path.lexists(f / META)  # one that is there but unreadable is broken, not interrupted
    )


def broken_runs(root: Path | None = None) -> list[tuple[Path, str]]:
    """Run folders whose `meta.json` is there (a file or not) but cannot be read, each with the reason (one line)."""
    root = root or paths.runs_dir()
    if not root.is_dir():
        return []
    broken = []
    for folder in sorted(root.iterdir()):
        if folder.name.startswith(".") or not os.path.lexists(folder / META):
            continue
        try:
            read_meta(folder)
        except CheckpointError as e:
            broken.append((folder, str(e)))
    return broken


def resumable(folder: Path) -> bool:
    """Whether `folder` holds a stopped run `mnist train --resume` can go on with (a snapshot, or an ensemble's plan)."""
    return (folder / SNAPSHOT).exists() or (folder / PLAN).exists()


def member_folders(folder: Path) -> list[Path]:
    """The run folders of an ensemble's members, in order (none for any other run)."""
    members = folder / MEMBERS
    return sorted(f for f in members.iterdir() if f.is_dir() and not f.name.startswith(".")) if members.is_dir() else []


def bundled_runs() -> list[Run]:
    """The pretrained checkpoints shipped inside the package."""
    if not BUNDLED_ROOT.is_dir():
        return []
    return [open_run(f, bundled=True) for f in sorted(BUNDLED_ROOT.iterdir()) if (f / META).is_file()]


def unique_name(base: str, root: Path) -> str:
    """`base`, or `base.2`, `base.3`, ... whichever is free under `root` (no folder, and no process claiming it). A
    dot, not a dash: `base-2` is the second of the repeats `mnist train --runs` names after `base`."""
    name, n = base, 1
    while (root / name).exists() or lock.holder(root / name) is not None:
        n += 1
        name = f"{base}.{n}"
    return name


def check_new_name(name: str, root: Path | None = None) -> None:
    """Raise `UsageError` for an invalid run name and `CheckpointError` for a taken one (call before training), saying
    so when another process is training it."""
    root = root or paths.runs_dir()
    if not NAME_RE.fullmatch(name):
        raise UsageError(
            f"invalid run name {name!r}: start with a letter or digit; then letters, digits, '.', '_' and '-' (at most 100)"
        )
    lock.check_free(root / name)
    if (root / name).exists():
        if not (root / name / META).exists():
            resume = f"resume it with `mnist train --resume {name}` or " if resumable(root / name) else ""
            raise CheckpointError(
                f"a run named {name!r} was interrupted before saving; {resume}remove it with `mnist checkpoints rm {name}`"
            )
        raise CheckpointError(f"a run named {name!r} already exists in {root}")


def begin(model_name: str, name: str | None = None, root: Path | None = None) -> Path:
    """Make a new run folder (named `name`, or `<model>-<UTC date-time>`), claim it for this process (store/lock.py:
    until `lock.release(folder)`) and return it.

    Training logs into it as it goes; `save` completes it. A folder without `meta.json` is not a
    checkpoint (an interrupted run keeps only its log). Raises `UsageError` for an invalid name,
    `CheckpointError` for a taken one, `FileProblem` if the folder cannot be made.
    """
    root = root or paths.runs_dir()
    if name is not None:
        check_new_name(name, root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FileProblem(root, f"cannot make the store's folder ({e.strerror or e})") from None
    for _ in range(100):  # a default name taken meanwhile (two runs started in the same second): the next one
        chosen = name or unique_name(f"{model_name}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}", root)
        try:
            lock.claim(root / chosen)  # the name first: its folder is ours from the moment it is there
        except CheckpointError:
            if name is not None:
                raise
            continue  # a default name another run has just claimed (its folder comes next)
        try:
            (root / chosen).mkdir()
        except FileExistsError:
            lock.release(root / chosen)
            if name is not None:  # made by another process since the check: say what it is
                check_new_name(name, root)
                raise CheckpointError(f"a run named {name!r} already exists in {root}") from None
            continue
        except OSError as e:
            lock.release(root / chosen)
            raise FileProblem(root / chosen, f"cannot make the run's folder ({e.strerror or e})") from None
        return root / chosen
    raise CheckpointError(f"cannot find a free run name in {root}")


def remove(ref: str, root: Path | None = None) -> Run:
    """Delete the run named `ref` from the store; returns what was removed.

    Raises `CheckpointError` if it is not a run in the store (bundled checkpoints stay) or a process is
    training it (store/lock.py), `FileProblem` if it cannot be moved away.
    """
    root = root or paths.runs_dir()
    folder = root / ref
    if not NAME_RE.fullmatch(ref) or not folder.is_dir():
        if any(r.name == ref for r in bundled_runs()):
            raise CheckpointError(f"{ref!r} is bundled with mnistcli and cannot be removed")
        raise CheckpointError(f"no run named {ref!r} in {root}")
    trash = root / f".trash-{ref}-{uuid.uuid4().hex[:8]}"
    with lock.claimed(folder, lock.REMOVAL):  # no training can take it up meanwhile
        run = Run(ref, folder, {"model": {"name": "?"}})
        try:
            run = open_run(folder)
        except CheckpointError:
            pass  # a broken run can still be removed
        try:
            os.rename(folder, trash)  # the run disappears at once, whatever rmtree then takes
        except OSError as e:
            raise FileProblem(folder, f"cannot remove ({e.strerror or e})") from None
    shutil.rmtree(trash, ignore_errors=True)
    return run
