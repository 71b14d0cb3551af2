"""What there is: the registered models and the saved checkpoints."""

from __future__ import annotations

import inspect

from mnistcli import store
from mnistcli.api.common import params
from mnistcli.api.reports import ModelInfo
from mnistcli.config import TrainConfig
from mnistcli.registry import ModelEntry, create_model, get_entry, list_models, model_args

# Options only some tasks read; and choices of a run rather than of a model (left out of a model's recipe).
ONLY_FOR = {
    "label_smoothing": {"classify", "adder"},
    "temperature": {"contrastive", "metric"},
    "margin": {"metric"},
    "mining": {"metric"},
    "ssl_weight": {"metric"},
}
RUN_CHOICES = {"seed", "device", "classes", "per_class", "target_accuracy"}


def _info(e: ModelEntry) -> ModelInfo:
    args = {k: "<required>" if v is inspect.Parameter.empty else v for k, v in model_args(e.name).items()}
    config = {
        k: v
        for k, v in TrainConfig.build(e.recipe, {}).to_dict().items()
        if k not in RUN_CHOICES and e.task in ONLY_FOR.get(k, {e.task})
    }
    return ModelInfo(e.name, e.task, e.description, params(create_model(e.name)), e.recipe, args, config)


def models(pattern: str = "*") -> list[ModelInfo]:
    """Every registered model matching `pattern`, with its parameter count, arguments and recipe."""
    return [_info(e) for e in list_models(pattern)]


def model(name: str) -> ModelInfo:
    """One model by its exact name. Raises `ModelError` (naming close matches) if there is none."""
    return _info(get_entry(name))


def checkpoints() -> list[store.Run]:
    """The user's runs (oldest first), then the bundled ones first."""
    return store.list_runs(include_bundled=True)


def interrupted_runs() -> list[str]:
    """Names of runs that logged training but never saved a checkpoint."""
    return [f.name for f in store.interrupted_runs()]


def broken_runs() -> list[tuple[str, str]]:
    """(name, problem) of runs whose checkpoint metadata cannot be read."""
    return [(f.name, problem) for f, problem in store.broken_runs()]


def remove_checkpoint(name: str) -> store.Run:
    """Delete a run from the store; returns it."""
    return store.remove(name)
