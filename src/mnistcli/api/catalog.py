"""What there is: the registered models and the saved checkpoints."""

from __future__ import annotations

from mnistcli import store
from mnistcli.api.common import params
from mnistcli.api.reports import ModelInfo
from mnistcli.registry import create_model, list_models


def models(pattern: str = "*") -> list[ModelInfo]:
    """Every registered model matching `pattern`, with its parameter count."""
    return [
        ModelInfo(e.name, e.task, e.description, params(create_model(e.name)), e.recipe) for e in list_models(pattern)
    ]


def checkpoints() -> list[store.Run]:
    """The user's runs (oldest first), then the bundled ones first."""
    return store.list_runs(include_bundled=True)


def interrupted_runs() -> list[str]:
    """Names of runs that logged training but never saved a checkpoint."""
    return [f.name for f in store.interrupted_runs()]


def remove_checkpoint(name: str) -> store.Run:
    """Delete a run from the store; returns it."""
    return store.remove(name)
