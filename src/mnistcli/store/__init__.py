"""The checkpoint store: run folders, the checkpoint description, the run log and atomic writes.

`from mnistcli import store` gives the run-level functions (`resolve`, `load`, `save`, `list_runs`, ...).
Finding and reading runs needs no torch (the fast path, api/serving.py, relies on it): `load` and
`save` (store/weights.py) import it when first asked for.
"""

from typing import TYPE_CHECKING, Any

from mnistcli.store.checkpoint import FORMAT, Checkpoint
from mnistcli.store.lock import holder
from mnistcli.store.resolve import resolve, run_folder, stopped_run
from mnistcli.store.runs import (
    BUNDLED_ROOT,
    MEMBERS,
    META,
    NAME_RE,
    PLAN,
    WEIGHTS,
    Run,
    begin,
    broken_runs,
    bundled_runs,
    check_new_name,
    fingerprint,
    interrupted_runs,
    list_runs,
    member_folders,
    options_unchecked,
    read_checkpoint,
    read_meta,
    remove,
    resumable,
    unique_name,
)

if TYPE_CHECKING:
    from mnistcli.store.weights import load, save


def __getattr__(name: str) -> Any:
    """`load` and `save`, which need torch, imported when first used."""
    if name in ("load", "save"):
        from mnistcli.store import weights

        return getattr(weights, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BUNDLED_ROOT",
    "FORMAT",
    "MEMBERS",
    "META",
    "NAME_RE",
    "PLAN",
    "WEIGHTS",
    "Checkpoint",
    "Run",
    "begin",
    "broken_runs",
    "bundled_runs",
    "check_new_name",
    "fingerprint",
    "holder",
    "interrupted_runs",
    "list_runs",
    "load",
    "member_folders",
    "options_unchecked",
    "read_checkpoint",
    "read_meta",
    "remove",
    "resolve",
    "resumable",
    "run_folder",
    "save",
    "stopped_run",
    "unique_name",
]
