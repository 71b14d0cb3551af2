"""`mnist train --runs N`: the same training repeated with N seeds, reported as mean and standard deviation.

Papers report a number as the mean and standard deviation over repeated runs (MIL's five, for
instance); a single seed can flatter or wrong a recipe. Run i trains with seed `seed + i` under
the name `NAME-i` (or the usual default name); each is an ordinary checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mnistcli import store
from mnistcli.errors import UsageError
from mnistcli.reports import RepeatReport, TrainReport

MAX_RUNS = 100


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
