"""`mnist train --runs N`: the same training repeated with N seeds, reported as mean and standard deviation.

Papers report a number as the mean and standard deviation over repeated runs (MIL's five, for
instance); a single seed can flatter or wrong a recipe. Run i trains with seed `seed + i` under
the name `NAME-i` (or the usual default name); each is an ordinary checkpoint. With `--jobs J` up to
J of them train at once, each in a worker process of its own with its share of the cores (and, with
several GPUs, a GPU of its own): the pool that trains an ensemble's members (api/parallel.py).
"""

from __future__ import annotations

import atexit
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np

from mnistcli import paths, store
from mnistcli.api import parallel, training
from mnistcli.api.common import data_folder
from mnistcli.engine import dist
from mnistcli.engine import tensorboard as tb_events
from mnistcli.errors import CheckpointError, FileProblem, Interrupted, MnistError, UsageError
from mnistcli.families import get_family
from mnistcli.registry import create_model, get_entry
from mnistcli.reports import RepeatReport, TrainReport
from mnistcli.store import lock

MAX_RUNS = 100
REPEATS = "repeated runs (`mnist train --runs`)"  # what holds a stem of their names, for messages
MAX_JOBS = 64
RunHooks = Callable[[str], Any]  # one run's hooks by its name: on_step, on_epoch, on_work (training.Hooks)


def repeat_names(name: str | None, runs: int, model: str) -> list[str | None]:
    """The names of `runs` repeated runs, all checked before any training: `NAME-1`, ... (`NAME` for one run); without
    a name, one run takes the usual default (None) and several `<model>-<UTC date-time>-1`, ..., in seed order."""
    if not 1 <= runs <= MAX_RUNS:
        raise UsageError(f"--runs must be 1-{MAX_RUNS}")
    if runs == 1:
        if name is not None:
            store.check_new_name(name)
        return [name]
    if name is not None:
        if not store.NAME_RE.fullmatch(name):
            store.check_new_name(name)  # says what is wrong with the name given, not with NAME-1
        names = [f"{name}-{i}" for i in range(1, runs + 1)]
        for each in names:
            store.check_new_name(each)
        return list(names)
    stamp = f"{model}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    root = paths.runs_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FileProblem(root, f"cannot make the store's folder ({e.strerror or e})") from None
    for stem in [stamp, *(f"{stamp}.{k}" for k in range(2, 100))]:  # repeats started in the same second: the next
        try:
            # The stem is claimed for this process's life (store/lock.py), so that another `--runs` started in the
            # same second takes the next stem instead of the same names.
            lock.claim(root / stem, REPEATS)
        except CheckpointError:
            continue
        atexit.register(lock.release, root / stem)
        try:
            return repeat_names(stem, runs, model)
        except (CheckpointError, UsageError):
            continue
    raise CheckpointError(f"cannot find free names for {runs} runs of {model!r}")


def check_runs(model: str, options: dict[str, Any], model_args: dict[str, Any], jobs: int, tensorboard: bool) -> None:
    """What `--runs N --jobs J` can check before it starts a worker (where a bad option would be one run's failure
    after importing torch): the number of jobs, that this is not already one of torchrun's processes, the options
    and the model's arguments."""
    if not 1 <= jobs <= MAX_JOBS:
        raise UsageError(f"--jobs must be 1-{MAX_JOBS}")
    if dist.launched():
        raise UsageError("--jobs: this is already one of several processes (torchrun started it); drop --jobs")
    if tensorboard:
        tb_events.require()
    entry = get_entry(model)
    family = get_family(entry.family)
    config, params = family.configure(entry.recipe, options)
    family.check(params, config)
    args, _ = training.model_args_for(family, params, model_args)
    create_model(model, **args)


def repeat_seeds(seed: int, runs: int, stride: int = 1) -> list[int]:
    """Seeds `seed`, `seed + stride`, ... for `runs` runs (an ensemble's stride is its members: each takes that many)."""
    if seed + stride * runs - 1 >= 2**63:
        raise UsageError("--seed + --runs (x --members, for ensembles) must stay below 2**63")
    return [seed + stride * i for i in range(runs)]


def summarize(reports: Sequence[TrainReport]) -> RepeatReport:
    """Mean and sample standard deviation (0 for one run) of every test number the runs share (NaN where a run's is:
    a diverged run's undefined AUC shows, it does not end the report)."""
    numbers = [{"test": r.test_accuracy, **r.test_extra} for r in reports]
    keys = [k for k in numbers[0] if all(k in n and n[k] is not None for n in numbers)]
    values = {k: np.array([n[k] for n in numbers], dtype=np.float64) for k in keys}
    mean = {k: float(v.mean()) for k, v in values.items()}
    std = {k: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for k, v in values.items()}
    return RepeatReport(list(reports), mean, std)


def train_runs(
    model: str,
    options: dict[str, Any],
    model_args: dict[str, Any],
    names: Sequence[str | None],
    seeds: Sequence[int],
    jobs: int,
    data_dir: str | None = None,
    on_run: RunHooks | None = None,
    on_download: Any = None,
    tensorboard: bool = False,
) -> list[TrainReport]:
    """Train `model` once per seed (named `names`), up to `jobs` at a time, each in a worker process; returns the
    reports in seed order. The data is fetched once, here, before any worker starts.

    The first failure stops the others (each saves its snapshot, as on Ctrl-C) and raises `MnistError` naming the
    run; Ctrl-C raises `Interrupted`. Runs that finished are kept either way."""
    check_runs(model, options, model_args, jobs, tensorboard)  # again, for a caller that has not (cheap)
    folder = str(data_folder(data_dir, on_download))
    labels = [name or f"seed {seed}" for name, seed in zip(names, seeds, strict=True)]
    tasks = [
        parallel.Task(label, train_run, (model, {**options, "seed": seed}, model_args, name, folder, tensorboard))
        for label, name, seed in zip(labels, names, seeds, strict=True)
    ]
    hooks = on_run or (lambda label: training.Hooks())

    def relay(label: str) -> parallel.Relay:
        shown = hooks(label)
        return parallel.Relay(shown.on_step, shown.on_epoch, shown.on_work)

    try:
        outcome = parallel.run_tasks(tasks, jobs, relay)
    except Interrupted:
        raise Interrupted(f"interrupted: {_left(names)}") from None
    if outcome.errors:
        label, problem = next(iter(outcome.errors.items()))
        raise MnistError(f"{label}: {problem} ({_left(names)})")
    if outcome.interrupted:
        raise Interrupted(f"interrupted: {_left(names)}")
    return [outcome.results[label] for label in labels]


def _left(names: Sequence[str | None]) -> str:
    """What a stopped `--runs --jobs` left, read from the store: the runs finished, those that can be resumed (named),
    and how many never started."""
    root = paths.runs_dir()
    named = [n for n in names if n is not None]
    done = [n for n in named if (root / n / store.META).is_file()]
    stopped = [n for n in named if n not in done and store.resumable(root / n)]
    said = [f"{len(done)} of {len(names)} runs finished and are kept"]
    if stopped:
        said.append(f"resume {', '.join(stopped)} with `mnist train --resume NAME`")
    lost = [n for n in named if n not in done and n not in stopped]
    if lost:
        said.append(f"{', '.join(lost)} never got to an epoch's end (train {'it' if len(lost) == 1 else 'them'} again)")
    return "; ".join(said)


def train_run(
    model: str,
    options: dict[str, Any],
    model_args: dict[str, Any],
    name: str | None,
    data_dir: str,
    tensorboard: bool,
    on_step: Any = None,
    on_epoch: Any = None,
    on_work: Any = None,
) -> TrainReport:
    """One of the repeated runs, in a worker process (module-level: it is pickled by name)."""
    report = training.train(model, options, model_args, name, data_dir, on_step, on_epoch, None, tensorboard, on_work)
    assert report is not None  # one process: --jobs and --nproc are not given together
    return report
