"""The one training loop: fit(model, task, data, config, callbacks) -> FitResult.

No printing and no file I/O: progress goes out through `on_step` / `on_epoch` callbacks, and the
result comes back as data. The task supplies the batches (in-memory tensors indexed by a seeded
permutation), augments whole batches at once and computes the loss; the learning-rate schedule
steps per batch.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from mnistcli.config import TrainConfig
from mnistcli.data.tensors import TensorData
from mnistcli.engine import optim
from mnistcli.families.base import Task
from mnistcli.work import CHECKING, WorkFn, phase

LOG_EVERY = 10  # steps between progress reports (each report syncs the device for .item())


@dataclass
class StepInfo:
    """Progress within training, reported every few steps."""

    epoch: int  # 1-based
    epochs: int
    step: int  # 1-based, across the whole run
    total_steps: int
    loss: float  # running mean over the epoch so far
    accuracy: float  # running training accuracy over the epoch so far
    lr: float
    recent_loss: float = 0.0  # mean loss of the steps since the previous report (the learning curve)
    seconds: float = 0.0  # since the start of training


@dataclass
class EpochInfo:
    """Metrics at the end of one epoch."""

    epoch: int
    train_loss: float
    train_accuracy: float
    lr: float
    seconds: float  # wall time since the start of training
    val_loss: float | None = None
    val_accuracy: float | None = None


@dataclass
class FitResult:
    """What a training run produced (the model is trained in place)."""

    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    stopped_early: bool = False
    best_epoch: int | None = None  # the epoch whose weights were kept, when validating
    target_reached: dict[str, float] | None = None  # accuracy and loss on the monitor, epochs (fractional), seconds


def make_optimizer(model: nn.Module, config: TrainConfig) -> optim.Optimizer:
    """The optimizer the config names (mnistcli's own: see optim.py for why not torch.optim)."""
    params = model.parameters()
    if config.optimizer in ("sgd", "nesterov"):
        return optim.SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.optimizer == "nesterov",
            weight_decay=config.weight_decay,
        )
    return optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, decoupled=config.optimizer == "adamw")


def make_scheduler(optimizer: optim.Optimizer, config: TrainConfig, total_steps: int) -> optim.Schedule | None:
    """A per-batch learning-rate schedule, or None."""
    if config.scheduler == "onecycle":
        return optim.one_cycle(optimizer, max_lr=config.lr, total_steps=total_steps, pct_start=0.25)
    if config.scheduler == "cosine":
        return optim.cosine(optimizer, total_steps)
    if config.scheduler == "step":
        return optim.multi_step(optimizer, [total_steps // 2, (3 * total_steps) // 4], gamma=0.1)
    return None


class TargetWatch:
    """Checks, cheaply, whether held-out accuracy has reached a target.

    A first look at `QUICK` random held-out images costs a fifth of a full pass; only when that is
    within a point of the target is the whole held-out set evaluated, so early checks (which
    fail) cost little.
    """

    QUICK = 2000

    def __init__(self, task: Task, data: TensorData, target: float) -> None:
        self.task, self.data, self.target = task, data, target
        # A fixed random sample: MNIST's test set is ordered, and its first half is the easier one.
        sample = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[: self.QUICK]
        self.quick = data.subset(sample) if len(data) > self.QUICK else None

    def reached(self, model: nn.Module) -> dict[str, float] | None:
        """The full held-out metrics (`accuracy`, `loss`) if the accuracy reached the target, else None."""
        if self.quick is not None and self.task.evaluate(model, self.quick)["accuracy"] < self.target - 0.01:
            return None
        metrics = self.task.evaluate(model, self.data)
        return metrics if metrics["accuracy"] >= self.target else None


def fit(
    model: nn.Module,
    task: Task,
    train: TensorData,
    config: TrainConfig,
    generator: torch.Generator,
    val: TensorData | None = None,
    monitor: TensorData | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
    on_epoch: Callable[[EpochInfo], None] | None = None,
    on_work: WorkFn | None = None,
) -> FitResult:
    """Train `model` in place on `train` for `config.epochs` epochs.

    With `val`, each epoch is validated; with `config.early_stopping` the run stops after that
    many epochs without a better validation accuracy and the best weights are restored. With
    `config.target_accuracy`, accuracy on `monitor` (held-out data) is checked every
    `config.check_every` of an epoch and training stops as soon as it reaches the target.
    Each check is reported to `on_work` ("checking accuracy"), as it can take seconds.
    Returns the per-epoch history and timing.
    """
    steps_per_epoch = task.num_batches(train, config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    check_steps = max(1, round(steps_per_epoch * config.check_every))
    watch = TargetWatch(task, monitor, config.target_accuracy) if config.target_accuracy and monitor else None
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, total_steps)
    result = FitResult()
    best_acc, best_state, stale = -1.0, None, 0
    start = time.perf_counter()
    step = 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        loss_sum = torch.zeros((), device=train.labels.device)
        correct = torch.zeros((), device=train.labels.device)
        seen = 0
        window_sum, window_steps = torch.zeros((), device=train.labels.device), 0
        for x, y in task.batches(train, config.batch_size, generator):
            loss, n_correct = task.loss(model, x, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            lr = optimizer.param_groups[0]["lr"]  # the rate this step used, before the schedule moves on
            if scheduler is not None:
                scheduler.step()
            step += 1
            loss_sum += loss.detach() * len(y)
            window_sum += loss.detach()
            window_steps += 1
            correct += n_correct
            seen += len(y)
            if on_step and (step % LOG_EVERY == 0 or step % steps_per_epoch == 0):
                on_step(
                    StepInfo(
                        epoch,
                        config.epochs,
                        step,
                        total_steps,
                        float(loss_sum) / seen,
                        float(correct) / seen,
                        lr,
                        float(window_sum) / window_steps,
                        time.perf_counter() - start,
                    )
                )
                window_sum.zero_()
                window_steps = 0
            if watch is not None and step % check_steps == 0:
                with phase(on_work, CHECKING):
                    metrics = watch.reached(model)
                model.train()
                if metrics is not None:
                    result.target_reached = {
                        **metrics,
                        "epochs": step / steps_per_epoch,
                        "seconds": time.perf_counter() - start,
                    }
                    break
        info = EpochInfo(epoch, float(loss_sum) / seen, float(correct) / seen, lr, 0.0)
        if val is not None:
            metrics = task.evaluate(model, val)
            info.val_loss, info.val_accuracy = metrics["loss"], metrics["accuracy"]
            if info.val_accuracy > best_acc:
                best_acc, stale, result.best_epoch = info.val_accuracy, 0, epoch
                if config.early_stopping:
                    best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
        info.seconds = time.perf_counter() - start
        result.history.append(asdict(info))
        if on_epoch:
            on_epoch(info)
        if result.target_reached or (config.early_stopping and stale >= config.early_stopping):
            result.stopped_early = True
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    elif val is not None:
        result.best_epoch = len(result.history)
    result.seconds = time.perf_counter() - start
    return result
