"""Tasks: what differs between model families (batches, loss, metrics) for the one training loop."""

from __future__ import annotations

import torch

from mnistcli.config import TrainConfig
from mnistcli.data.tensors import TensorData
from mnistcli.errors import ModelError
from mnistcli.families.adder import AdderTask
from mnistcli.families.base import Task
from mnistcli.families.classify import ClassifyTask
from mnistcli.families.contrastive import ContrastiveTask
from mnistcli.families.triplet import MetricTask


def get_task(name: str, config: TrainConfig, generator: torch.Generator, unlabelled: TensorData | None = None) -> Task:
    """The task object for a registry entry's task name. Raises `ModelError` if unknown.

    `generator` is the run's (it also shuffles); `unlabelled` is the image pool a metric task
    may self-supervise on (its labels are never read).
    """
    if name == "classify":
        return ClassifyTask(
            label_smoothing=config.label_smoothing,
            augment=config.augment,
            generator=generator,
            robust=config.robust_augment,
        )
    if name == "contrastive":
        return ContrastiveTask(
            temperature=config.temperature, seed=config.seed, augment=config.augment, generator=generator
        )
    if name == "metric":
        return MetricTask(
            margin=config.margin,
            mining=config.mining,
            generator=generator,
            augment=config.augment,
            unlabelled=unlabelled,
            ssl_weight=config.ssl_weight,
            temperature=config.temperature,
        )
    if name == "adder":
        return AdderTask(
            label_smoothing=config.label_smoothing, augment=config.augment, generator=generator, seed=config.seed
        )
    raise ModelError(f"unknown task {name!r}")


__all__ = ["AdderTask", "ClassifyTask", "ContrastiveTask", "MetricTask", "Task", "get_task"]
