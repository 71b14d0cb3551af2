"""Tasks: what differs between model families (batches, loss, metrics) for the one training loop."""

from __future__ import annotations

from mnistcli.config import TrainConfig
from mnistcli.errors import ModelError
from mnistcli.tasks.base import Task
from mnistcli.tasks.classify import ClassifyTask
from mnistcli.tasks.contrastive import ContrastiveTask


def get_task(name: str, config: TrainConfig) -> Task:
    """The task object for a registry entry's task name. Raises `ModelError` if unknown."""
    if name == "classify":
        return ClassifyTask(label_smoothing=config.label_smoothing)
    if name == "contrastive":
        return ContrastiveTask(temperature=config.temperature, seed=config.seed)
    raise ModelError(f"unknown task {name!r}")


__all__ = ["ClassifyTask", "ContrastiveTask", "Task", "get_task"]
