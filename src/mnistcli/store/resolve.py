"""Finding runs: what a reference on the command line (a run name, a model name, a folder or a file in it) means.

`resolve` finds a complete checkpoint (by default the latest of the families a command takes,
else the bundled one), `run_folder` any run's folder (a stopped one too, for `mnist plot`), and
`stopped_run` the folder of a run `mnist train --resume` can continue.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from mnistcli import paths
from mnistcli.errors import CheckpointError
from mnistcli.registry import list_models
from mnistcli.store import lock
from mnistcli.store.runlog import LOG
from mnistcli.store.runs import (
    META,
    NAME_RE,
    PLAN,
    SNAPSHOT,
    WEIGHTS,
    Run,
    broken_runs,
    bundled_runs,
    list_runs,
    open_run,
    resumable,
)


def _is(test: Callable[[], bool]) -> bool:
    """`test()`, a test of a path (`is_dir`, `exists`); False for a path the system cannot look at (too long)."""
    try:
        return test()
    except (OSError, ValueError):
        return False


def _folder_of(ref: str) -> Path:
    """`ref` as a path, a run's file (weights, meta or log) standing for its folder."""
    candidate = Path(ref).expanduser()
    return (
        candidate.parent
        if _is(candidate.is_file) and candidate.name in (WEIGHTS, META, LOG, SNAPSHOT, PLAN)
        else candidate
    )


def _has(folder: Path, name: str) -> bool:
    """Whether `folder` is a folder holding `name` (a file or not: a broken one is still there)."""
    return _is(folder.is_dir) and os.path.lexists(folder / name)


def resolve(
    ref: str | None, families: Iterable[str] | None = None, root: Path | None = None, suggest: str = "cnn"
) -> Run:
    """Find the checkpoint `ref` names: a path, a run name, or a model name (its latest run).

    With no `ref`, the latest complete run whose family is in `families`, else a bundled one. Raises
    `CheckpointError` if nothing matches (suggesting `mnist train <suggest>`).
    """
    allowed = set(families) if families is not None else None

    def fits(run: Run) -> bool:
        return allowed is None or run.family in allowed

    if ref is not None:
        candidate = _folder_of(ref)
        if _has(candidate, META):
            return open_run(candidate)
        folder = (root or paths.runs_dir()) / ref
        named = NAME_RE.fullmatch(ref) and folder.is_dir()
        if named and _has(folder, META):
            return open_run(folder)
        bundled = [r for r in bundled_runs() if r.name == ref]
        if bundled:
            return bundled[0]
        by_model = [r for r in list_runs(root, include_bundled=True) if r.model == ref]
        if by_model:
            user = [r for r in by_model if not r.bundled]
            return (user or by_model)[-1]
        stopped = folder if named else candidate if _has(candidate, LOG) or _has(candidate, SNAPSHOT) else None
        if stopped is not None:
            lock.check_free(stopped)  # a run training now has no checkpoint yet: say so, not that it was interrupted
        if named:
            how = f"resume it with `mnist train --resume {ref}`" if resumable(folder) else "its log: `mnist plot"
            raise CheckpointError(
                f"run {ref!r} has no checkpoint: it was interrupted before saving ("
                + (how if how.startswith("resume") else f"{how} {ref}`")
                + ")"
            )
        if ref in {e.name for e in list_models()}:
            raise CheckpointError(f"no {ref} run yet: train one with `mnist train {ref}`")
        raise CheckpointError(f"no checkpoint {ref!r}: not a run name, a model with runs, or a checkpoint folder")
    user = [r for r in list_runs(root) if fits(r)]
    _check_no_newer_broken(user[-1] if user else None, root)
    if user:
        return user[-1]
    bundled = [r for r in bundled_runs() if fits(r)]
    if bundled:
        return bundled[0]
    raise CheckpointError(f"no checkpoint yet: train one with `mnist train {suggest}`, or pass --checkpoint")


def _check_no_newer_broken(latest: Run | None, root: Path | None) -> None:
    """Raise `CheckpointError` if a run saved after `latest` is unreadable: the default never silently falls back."""
    since = (latest.path / META).stat().st_mtime if latest is not None else float("-inf")
    for folder, problem in broken_runs(root):
        if (folder / META).lstat().st_mtime > since:  # lstat: a meta.json that links nowhere is broken too
            raise CheckpointError(
                f"your latest run {folder.name!r} cannot be read ({problem}); name a checkpoint with -c,"
                f" or remove it with `mnist checkpoints rm {folder.name}`"
            )


def run_folder(ref: str, root: Path | None = None) -> Path:
    """The folder of run `ref`, complete or not (an interrupted run has only its log): a path or a run name,
    else whatever `resolve` finds. Raises `CheckpointError` if there is none."""
    candidate = _folder_of(ref)
    if _has(candidate, META) or _has(candidate, LOG):
        return candidate
    folder = (root or paths.runs_dir()) / ref
    if NAME_RE.fullmatch(ref) and folder.is_dir():
        return folder
    return resolve(ref, root=root).path


def stopped_run(ref: str, root: Path | None = None) -> Path:
    """The folder of the stopped run `ref` (a run name, its folder, or a file in it) that `mnist train --resume`
    continues. Raises `CheckpointError` if it is complete, or not a run folder at all."""
    candidate = _folder_of(ref)
    folder = candidate if _is(candidate.is_dir) else (root or paths.runs_dir()) / ref
    if not _is(candidate.is_dir) and not (NAME_RE.fullmatch(ref) and folder.is_dir()):
        raise CheckpointError(f"no run named {ref!r} to resume (a run name from `mnist checkpoints`, or its folder)")
    if os.path.lexists(folder / META):
        raise CheckpointError(f"run {folder.name!r} is complete: there is nothing to resume")
    return folder
