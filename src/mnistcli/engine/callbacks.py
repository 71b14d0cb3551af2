"""The loop's callbacks: keep the best epoch (early stopping), watch a target accuracy, log, report, snapshot.

Each runs on the main process only (engine/dist.py) and keeps whatever it must remember across
a resume in `state_dict`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from mnistcli.data.tensors import TensorData
from mnistcli.engine.loop import Callback, EpochInfo, Loop, StepInfo
from mnistcli.work import CHECKING, WorkFn, phase

Evaluate = Callable[[nn.Module, TensorData], dict[str, float]]  # `loss` and `accuracy` (0-1) of a model on data


class BestEpoch(Callback):
    """Tracks validation accuracy. With a `patience`, stops after that many epochs without a better one and
    puts the best weights back at the end; without, the weights kept are the last epoch's."""

    key = "best_epoch"

    def __init__(self, patience: int = 0) -> None:
        self.patience = patience
        self.best_accuracy, self.stale = -1.0, 0
        self.best_epoch: int | None = None
        self.best_state: dict[str, torch.Tensor] | None = None

    def on_epoch_end(self, loop: Loop, info: EpochInfo) -> None:
        if info.val_accuracy is None:
            return
        if info.val_accuracy > self.best_accuracy:
            self.best_accuracy, self.stale, self.best_epoch = info.val_accuracy, 0, info.epoch
            if self.patience:
                self.best_state = copy.deepcopy(loop.model.state_dict())
        else:
            self.stale += 1
        if self.patience and self.stale >= self.patience:
            loop.stop = True

    def on_restart(self, loop: Loop) -> None:
        self.best_accuracy, self.stale, self.best_epoch, self.best_state = -1.0, 0, None, None

    def on_fit_end(self, loop: Loop) -> None:
        if self.best_state is not None:
            loop.model.load_state_dict(self.best_state)
        elif loop.position.history:
            self.best_epoch = len(loop.position.history)

    def state_dict(self) -> dict[str, Any]:
        return {
            "best_accuracy": self.best_accuracy,
            "stale": self.stale,
            "best_epoch": self.best_epoch,
            "best_state": self.best_state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_accuracy, self.stale = float(state["best_accuracy"]), int(state["stale"])
        self.best_epoch, self.best_state = state["best_epoch"], state["best_state"]


def allowed_mistakes(n: int, target: float) -> int:
    """The most mistakes among `n` images that still reach `target`, as the check compares it: (n - m) / n >= target
    (in floating point, where 1 - 0.9 is not 0.1)."""
    m = max(0, min(n, math.floor((1 - target) * n)))
    while m > 0 and (n - m) / n < target:
        m -= 1
    while m < n and (n - m - 1) / n >= target:
        m += 1
    return m


class TargetWatch(Callback):
    """Stops the run as soon as held-out accuracy reaches `target`, checked every `every` (a fraction) of an epoch.

    Where the evaluation's figures are means over images, each image's own (`per_image`), a check looks at the
    held-out images in chunks of `CHUNK`, in a fixed random order (MNIST's test set is ordered, and its first half
    is the easier one), in fp32, and gives up as soon as the mistakes so far rule the target out: more than the
    target allows that far, plus `Z` standard deviations (those of drawing that share of the allowed mistakes
    without replacement). Most checks fail, and those cost a chunk or a few. A check that gets through every chunk
    has made one full fp32 pass over the held-out images, in pieces, and that pass decides: the accuracy of
    `reached` is its count of mistakes, as the final test would count them, its other figures (the loss) the
    chunks' means weighted by their images (the same to rounding: summed in another order). A model exactly at
    the target is given up on now and then (1 order of its mistakes in 13), one 0.2 point above it almost never:
    a check that would pass may be missed, and a later one may pass.

    Where they are not (an AUC, a retrieval accuracy: a chunk's figure says little of the whole), a check looks
    at one chunk of `QUICK` images in the run's precision (under bf16 autocast, if it trains so), gives up if its
    figure is more than a point below the target, and is otherwise decided by one full fp32 pass of the family's
    `validate` over every held-out image. Either way the figures of `reached` are those of the deciding pass, with
    the epochs (fractional) and seconds.
    """

    key = "target"
    CHUNK = 500  # images per look where the figures are means over images
    QUICK = 2000  # images of the one look where they are not
    # How far above the mistakes the target allows (in standard deviations) a check gives up. 2.5 over chunks of 500
    # gives up on a model exactly at the target in 15 of 200 orders of its mistakes (2 over chunks of 2,000, before
    # 2026-12-05: 11), on one at 99.2% in 1 of 200, and on one at 98.5% after 2,000 images on average (before:
    # 2,800); tests/test_target_watch.py.
    Z = 2.5

    def __init__(
        self,
        evaluate: Evaluate,
        data: TensorData,
        target: float,
        every: float,
        on_work: WorkFn | None = None,
        per_image: bool = False,
    ) -> None:
        self.evaluate, self.data, self.target, self.every, self.on_work = evaluate, data, target, every, on_work
        self.per_image = per_image
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
        if per_image:
            self.looks = [data.subset(part) for part in order.split(self.CHUNK)]
        else:  # no look before a full pass of QUICK images or fewer
            self.looks = [data.subset(order[: self.QUICK])] if len(data) > self.QUICK else []
        self.allowed = allowed_mistakes(len(data), target)
        self.reached: dict[str, float] | None = None

    def _implausible(self, seen: int, mistakes: int) -> bool:
        """Whether `mistakes` among the first `seen` held-out images rule the target out (see the class)."""
        share = seen / len(self.data)
        return mistakes > self.allowed * share + self.Z * math.sqrt(self.allowed * share * (1 - share))

    def _chunked_pass(self, model: nn.Module) -> dict[str, float] | None:
        """The figures of a full fp32 pass made chunk by chunk, or None as soon as the chunks rule the target out."""
        seen = mistakes = 0
        totals: dict[str, float] = {}
        for chunk in self.looks:
            figures = self.evaluate(model, chunk)
            seen += len(chunk)
            mistakes += round((1 - figures["accuracy"]) * len(chunk))
            if self._implausible(seen, mistakes):
                return None
            for name, value in figures.items():
                totals[name] = totals.get(name, 0.0) + value * len(chunk)
        if not seen:  # no held-out image: nothing can be reached
            return None
        return {**{name: total / seen for name, total in totals.items()}, "accuracy": (seen - mistakes) / seen}

    def _reached(self, model: nn.Module, autocast: Callable[[], Any]) -> dict[str, float] | None:
        if self.per_image:
            full = self._chunked_pass(model)
        else:
            with autocast():  # the run's own precision
                for chunk in self.looks:
                    if self.evaluate(model, chunk)["accuracy"] < self.target - 0.01:
                        return None
            full = self.evaluate(model, self.data)  # fp32, every held-out image: what decides, and what is reported
        return full if full is not None and full["accuracy"] >= self.target else None

    def on_step_end(self, loop: Loop) -> None:
        check = max(1, round(loop.steps_per_epoch * self.every))
        if loop.position.step % check:
            return
        with phase(self.on_work, CHECKING):
            metrics = self._reached(loop.model, loop.autocast)
        loop.model.train()
        if metrics is not None:
            epochs = loop.position.step / loop.steps_per_epoch
            self.reached = {**metrics, "epochs": epochs, "seconds": loop.elapsed()}
            loop.stop = True

    def on_restart(self, loop: Loop) -> None:
        self.reached = None

    def state_dict(self) -> dict[str, Any]:
        return {"reached": self.reached}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reached = state["reached"]


class StartOver(Callback):
    """What `Restart` and `BestAttempt` share: the model, optimizer and schedule as the run started, and a new attempt
    from them: the weights go back to those the run started from and `fresh` redraws what it redraws of them (from
    the global random state, which snapshots keep), the optimizer and the schedule go back to their start, and
    training begins again from epoch 1 (`Loop.start_over`). The data and its order continue from the run's
    generator, so the new attempt also sees other batches."""

    def __init__(self, measure: str, fresh: Callable[[nn.Module], None]) -> None:
        self.measure, self.fresh = measure, fresh
        self.initial: dict[str, Any] | None = None  # the model, optimizer and schedule as the run started

    def on_fit_start(self, loop: Loop) -> None:
        if self.initial is None:
            self.initial = {
                "model": _weights(loop.model),
                "optimizer": copy.deepcopy(loop.optimizer.state_dict()),
                "schedule": loop.schedule.state_dict() if loop.schedule is not None else None,
            }

    def loss(self, loop: Loop, info: EpochInfo) -> float:
        """The epoch's mean of `measure` if the family's step reports it, else its mean training loss."""
        return float(loop.metrics.get(self.measure, info.train_loss))

    def begin_again(self, loop: Loop) -> None:
        assert self.initial is not None
        loop.model.load_state_dict(self.initial["model"])
        self.fresh(loop.model)
        loop.start_over(self.initial["optimizer"], self.initial["schedule"])

    def state_dict(self) -> dict[str, Any]:
        return {"initial": self.initial}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.initial = state["initial"]


class Restart(StartOver):
    """Starts a run that has not taken off over again, at most `times` times: if the mean training loss of epoch
    `at` (or the epoch's mean of `measure`, if the family's step reports it) is above `above`, a new attempt begins
    (`StartOver`). `restarts` keeps each restart's epoch and the loss it looked at; `on_restart` is given them all
    after each."""

    key = "restart"

    def __init__(
        self,
        at: int,
        above: float,
        times: int,
        measure: str,
        fresh: Callable[[nn.Module], None],
        on_restart: Callable[[list[dict[str, float]]], None] | None = None,
    ) -> None:
        super().__init__(measure, fresh)
        self.at, self.above, self.times, self.on_restart_ = at, above, times, on_restart
        self.restarts: list[dict[str, float]] = []

    def on_epoch_end(self, loop: Loop, info: EpochInfo) -> None:
        loss = self.loss(loop, info)
        if info.epoch != self.at or not loss > self.above or len(self.restarts) >= self.times or loop.stop:
            return
        self.restarts.append({"epoch": info.epoch, "train_loss": loss})
        self.begin_again(loop)
        if self.on_restart_ is not None:
            self.on_restart_(self.restarts)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "restarts": self.restarts}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.restarts = [dict(r) for r in state["restarts"]]


class BestAttempt(StartOver):
    """Trains the run `attempts` times, each from fresh weights (`StartOver`), and keeps the attempt that fits its
    training data best: the one whose last epoch's mean training loss (or mean of `measure`) is lowest, the first
    on a tie; a loss that is not a number (a diverged attempt) counts as the highest. While the others train, the
    best finished attempt's weights and history are kept; at the end they are put back if the last attempt is not
    better. `finished` holds each finished attempt's loss, `kept` the number (from 1) of the attempt kept once
    training is over; `on_attempt(finished, extra)` hears of each new attempt (`extra`: 0, or the new attempt's
    number beyond the `attempts` planned, below). With `keep_all`, `every` also holds each finished attempt's
    weights, in order, but for those that diverged, and `numbers` their attempts' numbers; once training is over,
    `members()` says which of them to combine (a family may: `Family.combine_attempts`).

    With `more` above 0: when every attempt has ended with a loss of `fit` or more (none fitted), up to `more`
    attempts follow, one at a time, until one ends below `fit`; `extra` counts those that were trained."""

    key = "attempts"

    def __init__(
        self,
        attempts: int,
        measure: str,
        fresh: Callable[[nn.Module], None],
        on_attempt: Callable[[list[float], int], None] | None = None,
        keep_all: bool = False,
        more: int = 0,
        fit: float = float("inf"),
    ) -> None:
        super().__init__(measure, fresh)
        self.attempts, self.on_attempt, self.keep_all = attempts, on_attempt, keep_all
        self.planned, self.more, self.fit = attempts, more, fit
        self.extra = 0  # attempts added because none had fitted
        self.finished: list[float] = []
        self.every: list[dict[str, torch.Tensor]] = []
        self.numbers: list[int] = []  # the attempt (from 1) of each of `every`
        self.best: dict[str, Any] | None = None  # the best attempt that was followed by another: model, history
        self.kept: int | None = None

    @property
    def current(self) -> int:
        """The number (from 1) of the attempt training now, or the last one once all have finished."""
        return min(len(self.finished) + 1, self.attempts)

    def on_epoch_end(self, loop: Loop, info: EpochInfo) -> None:
        if info.epoch != loop.epochs and not loop.stop:
            return
        self.finished.append(self.loss(loop, info))
        if self.keep_all and math.isfinite(self.finished[-1]):  # a diverged (NaN or infinite) attempt is left out
            self.every.append(_weights(loop.model))
            self.numbers.append(len(self.finished))
        if len(self.finished) >= self.attempts:
            if self.extra >= self.more or any(loss < self.fit for loss in self.finished):  # NaN never fits
                return
            self.attempts, self.extra = self.attempts + 1, self.extra + 1
        index = len(self.finished) - 1
        if self.best is None or _rank(self.finished[index]) < _rank(self.finished[self.best["index"]]):
            self.best = {"index": index, "model": _weights(loop.model), "history": copy.deepcopy(loop.position.history)}
        loop.stop = False  # a callback that stopped this attempt early stops only this attempt
        self.begin_again(loop)
        if self.on_attempt is not None:
            self.on_attempt(self.finished, self.extra)

    def on_fit_end(self, loop: Loop) -> None:
        if not self.finished:
            return
        last = len(self.finished) - 1
        if self.best is not None and _rank(self.finished[self.best["index"]]) <= _rank(self.finished[last]):
            loop.model.load_state_dict(self.best["model"])
            loop.position.history = copy.deepcopy(self.best["history"])
            self.kept = self.best["index"] + 1
        else:
            self.kept = last + 1

    def members(self) -> list[tuple[int, dict[str, torch.Tensor]]]:
        """With `keep_all`, once training is over: (number, weights) of the attempts to combine, those that ended
        below `fit` (none diverged); if none did, the attempt kept alone (none if it diverged)."""
        kept = list(zip(self.numbers, self.every, strict=True))
        return [(n, w) for n, w in kept if self.finished[n - 1] < self.fit] or [
            (n, w) for n, w in kept if n == self.kept
        ]

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "numbers": self.numbers,
            "finished": self.finished,
            "best": self.best,
            "kept": self.kept,
            "every": self.every,
            "attempts": self.attempts,
            "extra": self.extra,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.finished = [float("nan") if x is None else float(x) for x in state["finished"]]
        self.best, self.kept = state["best"], state["kept"]
        self.every = list(state.get("every", []))
        if "attempts" not in state:  # a snapshot from before attempts could be added: it ends as it would have then
            self.more, self.numbers = 0, [n for n, loss in enumerate(self.finished, 1) if math.isfinite(loss)]
        else:
            self.numbers = [int(n) for n in state["numbers"]]
            self.attempts, self.extra = int(state["attempts"]), int(state["extra"])


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of `model`'s state that later training leaves as it is."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _rank(loss: float) -> float:
    """A loss to compare attempts by: NaN (a diverged attempt) ranks above every number."""
    return loss if loss == loss else math.inf


class Report(Callback):
    """Passes progress reports and epochs on to plain functions (the run log, TensorBoard, a progress bar)."""

    def __init__(
        self,
        on_step: Callable[[StepInfo], None] | None = None,
        on_epoch: Callable[[EpochInfo], None] | None = None,
    ) -> None:
        self.on_step, self.on_epoch = on_step, on_epoch

    def on_report(self, loop: Loop, info: StepInfo) -> None:
        if self.on_step is not None:
            self.on_step(info)

    def on_epoch_end(self, loop: Loop, info: EpochInfo) -> None:
        if self.on_epoch is not None:
            self.on_epoch(info)


class Snapshot(Callback):
    """At the end of every epoch, hands `save` the loop's whole state (what a resume needs)."""

    key = "snapshot"
    last = True

    def __init__(self, save: Callable[[Loop], None]) -> None:
        self.save = save

    def on_fit_start(self, loop: Loop) -> None:
        if loop.position.epoch == 0:
            self.save(loop)  # a run stopped in its first epoch resumes from the start, not from nothing

    def on_epoch_end(self, loop: Loop, info: EpochInfo) -> None:
        self.save(loop)
