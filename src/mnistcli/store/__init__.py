"""The checkpoint store: run folders, the checkpoint description, the run log and atomic writes.

`from mnistcli import store` gives the run-level functions (`resolve`, `load`, `save`, `list_runs`, ...).
"""

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
    interrupted_runs,
    list_runs,
    load,
    member_folders,
    read_checkpoint,
    read_meta,
    remove,
    resumable,
    save,
    unique_name,
)

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
    "holder",
    "interrupted_runs",
    "list_runs",
    "load",
    "member_folders",
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
