"""`mnist train --runs N`: the same training repeated with N seeds, reported as mean and standard deviation.

Papers report a number as the mean and standard deviation over repeated runs (MIL's five, for
instance); a single seed can flatter or wrong a recipe. Run i trains with seed `seed + i` under
the name `NAME-i` (or the usual default name); each is an ordinary checkpoint. With `--jobs J` up to
J of them train at once, each in a worker process of its own with its share of the cores (and, with
several GPUs, a GPU of its own): the pool that trains an ensemble's members (api/parallel.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mnistcli import store
from mnistcli.api import parallel, training
from mnistcli.api.common import data_folder
from mnistcli.errors import Interrupted, MnistError, UsageError
from mnistcli.reports import RepeatReport, TrainReport

MAX_RUNS = 100
MAX_JOBS = 64
RunHooks = Callable[[str], Any]  # one run's hooks by its name: on_step, on_epoch, on_work (training.Hooks)


def repeat_names(name: str | None, runs: int) -> list[str | None]:
    """The names of `runs` repeated runs (`NAME-1`...; None each without a name), all checked before any training."""
    if not 1 <= runs <= MAX_RUNS:
        raise UsageError(f"--runs must be 1-{MAX_RUNS}")
    if name is None:
        return [None] * runs
    names: list[str | None] = [f"{name}-{i}" for i in range(1, runs + 1)] if runs > 1 else [name]
    for each in names:
        store.check_new_name(str(each))
    return names


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
    if not 1 <= jobs <= MAX_JOBS:
        raise UsageError(f"--jobs must be 1-{MAX_JOBS}")
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

    outcome = parallel.run_tasks(tasks, jobs, relay)
    kept = (
        f"{len(outcome.results)} of {len(tasks)} runs finished and are kept; "
        "those stopped can be resumed with `mnist train --resume NAME` (`mnist checkpoints` lists them)"
    )
    if outcome.errors:
        label, problem = next(iter(outcome.errors.items()))
        raise MnistError(f"{label}: {problem} ({kept})")
    if outcome.interrupted:
        raise Interrupted(f"interrupted: {kept}")
    return [outcome.results[label] for label in labels]


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
