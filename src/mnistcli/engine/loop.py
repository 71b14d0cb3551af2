"""The one training loop. It knows no model family: a family supplies batches and a step, the loop does the rest.

Per optimizer step the loop draws a batch of indices from the sampler, asks the family for the
batch's tensors, augments them (`Trainee.augment`), keeps this process's share (engine/dist.py: the
one place that knows about other processes), asks the family for its `Step` (a loss, and metric
totals under names the loop never interprets), backpropagates, possibly over several batches
(gradient accumulation) and under autocast, then steps the optimizer and the schedule. It averages
every metric over the epoch (over every process) and tells its callbacks (run log, TensorBoard,
progress, early stopping, target watch, resume snapshots), which run on the main process only.
No printing and no files here.

Everything a run needs to continue is in `Loop.state_dict()`; `load_state_dict` puts it back, so
a resumed run goes on exactly as it would have.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from mnistcli.engine.dist import SINGLE, Dist
from mnistcli.engine.sampling import Sampler

LOG_EVERY = 10  # optimizer steps between progress reports (each report syncs the device for .item())


@dataclass
class Step:
    """What a family's step returns for one batch."""

    loss: torch.Tensor  # the mean loss to backpropagate
    sums: dict[str, torch.Tensor]  # metric totals over the batch, e.g. {"accuracy": correct predictions}
    size: int  # items in the batch; the loop divides totals by items seen


class Trainee(Protocol):
    """The part of a family the loop uses."""

    def begin_epoch(self, generator: torch.Generator, epoch: int, model: nn.Module) -> None:
        """Draw whatever the family draws once per epoch, or work out what epoch `epoch` (1, 2, ...) trains on from
        `model` as it is (self-labelling), before the sampler draws its order."""
        ...

    def batch(self, index: Any) -> Any:
        """The tensors of a batch of sampled indices."""
        ...

    def augment(self, batch: Any) -> Any:
        """The batch as the step takes it (randomly augmented, if the family augments)."""
        ...

    def step(self, model: nn.Module, batch: Any) -> Step:
        """Loss and metric totals of `model` on `batch`."""
        ...

    def leaves_parameters_unused(self) -> bool:
        """Whether some of the model's parameters take no part in `step`."""
        ...


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
    seconds: float  # wall time of training so far
    val_loss: float | None = None
    val_accuracy: float | None = None


@dataclass
class Position:
    """How far the run has gone: saved with every snapshot, so a resumed run knows where it is."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    seconds: float = 0.0  # training time before this process took over
    history: list[dict[str, Any]] = field(default_factory=list)  # one EpochInfo per completed epoch
    stopped_early: bool = False  # a callback stopped the run (no epochs are left)


class _Stepper(nn.Module):
    """The family's step as a module: DistributedDataParallel synchronises the gradients of what its forward ran."""

    def __init__(self, model: nn.Module, trainee: Trainee) -> None:
        super().__init__()
        self.model = model
        self.trainee = trainee

    def forward(self, batch: Any) -> Step:
        return self.trainee.step(self.model, batch)


class Callback:
    """Hooks the loop calls on the main process; `key` names the callback's state in a snapshot."""

    key = ""
    last = False  # called after the others (snapshots)

    def on_fit_start(self, loop: Loop) -> None: ...

    def on_report(self, loop: Loop, info: StepInfo) -> None: ...

    def on_step_end(self, loop: Loop) -> None: ...

    def on_epoch_end(self, loop: Loop, info: EpochInfo) -> None: ...

    def on_fit_end(self, loop: Loop) -> None: ...

    def on_restart(self, loop: Loop) -> None:
        """Training begins again from epoch 1 (`Loop.start_over`): forget what the abandoned attempt left."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Loop:
    """One training run: the model and optimizer (already set up), the sampler, the callbacks, and where it is."""

    def __init__(
        self,
        model: nn.Module,
        trainee: Trainee,
        optimizer: Any,
        sampler: Sampler,
        generators: dict[str, torch.Generator],
        epochs: int,
        schedule: Any = None,
        callbacks: Sequence[Callback] = (),
        validate: Callable[[nn.Module], dict[str, float]] | None = None,
        accumulate: int = 1,
        precision: str = "fp32",
        dist: Dist = SINGLE,
    ) -> None:
        self.model, self.trainee, self.optimizer, self.schedule = model, trainee, optimizer, schedule
        self.sampler, self.generators, self.epochs = sampler, generators, epochs
        # Snapshots go last, so they save what the other callbacks have just updated.
        self.callbacks = sorted(callbacks, key=lambda cb: cb.last) if dist.is_main else []
        self.validate, self.accumulate, self.dist = validate, accumulate, dist
        # Several processes: the step runs inside DistributedDataParallel, which averages the gradients.
        self.ddp = dist.wrap(_Stepper(model, trainee), trainee.leaves_parameters_unused()) if dist.world > 1 else None
        self.device = next((p.device for p in model.parameters()), torch.device("cpu"))
        self.precision = precision
        self.scaler = torch.amp.GradScaler(self.device.type) if precision == "fp16" else None
        self.steps_per_epoch = -(-len(sampler) // accumulate)
        self.total_steps = self.steps_per_epoch * epochs
        self.position = Position()
        self.metrics: dict[str, float] = {}  # every metric the family reports, averaged over the epoch so far
        self.stop = False  # a callback sets it to end the run after the current step
        self.started = 0.0

    def elapsed(self) -> float:
        """Seconds of training so far, including those before a resume."""
        return self.position.seconds + time.perf_counter() - self.started

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _update(self) -> None:
        """One optimizer step from the accumulated gradients, then the schedule's."""
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.schedule is not None:
            self.schedule.step()

    def _batches(self, epoch: int) -> Iterator[tuple[bool, int, Any]]:
        """(whether an optimizer step follows, batches in this step's group, batch) for epoch `epoch`. The last
        group of an epoch may hold fewer than `accumulate` batches."""
        self.trainee.begin_epoch(self.generators["run"], epoch, self.model)
        n, k = len(self.sampler), self.accumulate
        for i, index in enumerate(self.sampler.epoch(self.generators["run"])):
            group = min(k, n - i // k * k)
            yield (i + 1) % k == 0 or i + 1 == n, group, self.trainee.batch(index)

    def run(self) -> Position:
        """Train from `position` to the last epoch (or until a callback stops it); returns the position."""
        self.started = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        for cb in self.callbacks:
            cb.on_fit_start(self)
        pos = self.position
        while pos.epoch < self.epochs and not pos.stopped_early:
            self._epoch(pos.epoch + 1)
        for cb in self.callbacks:
            cb.on_fit_end(self)
        pos.seconds = self.elapsed()
        self.started = time.perf_counter()
        return pos

    def _forward_backward(self, batch: Any, group: int, steps: bool) -> tuple[Step, float]:
        """Augment the global batch, keep this process's share, run the family's step and backpropagate its loss (the
        mean over the optimizer step's `group` of batches, and over every process's share); returns the step and
        the weight of its share's loss (1 for one process)."""
        model, dist = self.model, self.dist
        syncing = self.ddp is None or steps  # DDP averages the gradients at the last batch of a step only
        with contextlib.nullcontext() if syncing else self.ddp.no_sync():  # type: ignore[union-attr,operator]
            with self.autocast():
                batch = dist.shard(self.trainee.augment(batch))
                out = self.trainee.step(model, batch) if self.ddp is None else self.ddp(batch)
            loss = out.loss / group if group > 1 else out.loss  # the step follows the mean over its group
            weight = dist.weight(out.size)
            if dist.world > 1:
                loss = loss * weight
            (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        return out, weight

    def _means(
        self, loss_sum: torch.Tensor, sums: dict[str, torch.Tensor], seen: int, window: torch.Tensor, batches: int
    ) -> tuple[float, dict[str, float], float]:
        """(mean loss, every metric's mean, mean batch loss of the recent window) over the items every process has
        seen so far."""
        if self.dist.world > 1:
            packed = [loss_sum.double(), window.double(), torch.tensor(float(seen), dtype=torch.float64)]
            packed += [v.double() for v in sums.values()]
            totals = self.dist.sum(torch.stack([t.to(self.dist.device) for t in packed])).tolist()
            loss_total, window_total, seen_total, rest = totals[0], totals[1], int(totals[2]), totals[3:]
            seen_ = max(seen_total, 1)
            means = {k: v / seen_ for k, v in zip(sums, rest, strict=True)}
            return loss_total / seen_, means, window_total / max(batches * self.dist.world, 1)
        seen_ = max(seen, 1)
        return float(loss_sum) / seen_, {k: float(v) / seen_ for k, v in sums.items()}, float(window) / max(batches, 1)

    def _epoch(self, epoch: int) -> None:
        pos, model, dist = self.position, self.model, self.dist
        model.train()
        zero = torch.zeros((), device=self.device)
        loss_sum, sums, seen = zero.clone(), {"accuracy": zero.clone()}, 0
        # the learning curve: the mean batch loss since the previous report
        window_sum, window_batches, lr = zero.clone(), 0, float(self.optimizer.param_groups[0]["lr"])
        for steps, group, batch in self._batches(epoch):
            out, weight = self._forward_backward(batch, group, steps)
            loss_sum += out.loss.detach().float() * out.size
            # weighted as its share of the global batch: the processes' sum / their number is the batch's mean
            window_sum += out.loss.detach().float() * weight if dist.world > 1 else out.loss.detach().float()
            window_batches += 1
            for k, v in out.sums.items():
                sums[k] = sums.get(k, zero) + v.detach()
            seen += out.size
            if not steps:
                continue
            lr = float(self.optimizer.param_groups[0]["lr"])  # the rate this step used, before the schedule moves on
            self._update()
            pos.step += 1
            due = pos.step % LOG_EVERY == 0 or pos.step % self.steps_per_epoch == 0
            if due and (self.callbacks or dist.world > 1):  # every process sums its metrics; the main one reports
                mean_loss, self.metrics, recent = self._means(loss_sum, sums, seen, window_sum, window_batches)
                report = StepInfo(
                    epoch,
                    self.epochs,
                    pos.step,
                    self.total_steps,
                    mean_loss,
                    self.metrics["accuracy"],
                    lr,
                    recent,
                    self.elapsed(),
                )
                for cb in self.callbacks:
                    cb.on_report(self, report)
                window_sum.zero_()
                window_batches = 0
            for cb in self.callbacks:
                cb.on_step_end(self)
            self.stop = dist.decide(self.stop)  # the main process's callbacks decide for every process
            if self.stop:
                break
        mean_loss, self.metrics, _ = self._means(loss_sum, sums, seen, window_sum, window_batches)
        info = EpochInfo(epoch, mean_loss, self.metrics["accuracy"], lr, 0.0)
        dist.sync_buffers(model)  # batch norm's statistics, kept per process while training, averaged
        if self.validate is not None and dist.is_main:
            metrics = self.validate(model)
            info.val_loss, info.val_accuracy = metrics["loss"], metrics["accuracy"]
        info.seconds = self.elapsed()
        pos.history.append(asdict(info))
        pos.epoch = epoch
        for cb in self.callbacks:
            cb.on_epoch_end(self, info)
        self.stop = dist.decide(self.stop)
        pos.stopped_early = self.stop

    def start_over(self, optimizer_state: dict[str, Any], schedule_state: dict[str, Any] | None) -> None:
        """Begin again from epoch 1 (a callback found the run not taking off; it has set the weights): the
        optimizer and the schedule go back to `optimizer_state` and `schedule_state` (as they were at the start),
        the position to the start; the time spent stays counted."""
        pos = self.position
        pos.epoch, pos.step, pos.history, pos.stopped_early = 0, 0, [], False
        self.optimizer.load_state_dict(optimizer_state)
        self.optimizer.zero_grad(set_to_none=True)
        if self.schedule is not None and schedule_state is not None:
            self.schedule.load_state_dict(schedule_state)
        self.metrics = {}
        for cb in self.callbacks:
            cb.on_restart(self)

    # -- resuming ---------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this run: weights, optimizer and schedule, random states, position,
        and each callback's state. Tensors and plain values only."""
        pos = self.position
        state: dict[str, Any] = {
            "position": {**asdict(pos), "seconds": self.elapsed(), "stopped_early": pos.stopped_early or self.stop},
            "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict() if self.schedule is not None else None,
            "generators": {name: g.get_state() for name, g in self.generators.items()},
            "torch_rng": torch.get_rng_state(),
            "callbacks": {cb.key: cb.state_dict() for cb in self.callbacks if cb.key},
        }
        if torch.cuda.is_available() and self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put back what `state_dict` saved (into a loop built the same way)."""
        self.position = Position(**state["position"])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.schedule is not None and state.get("schedule") is not None:
            self.schedule.load_state_dict(state["schedule"])
        for name, g in self.generators.items():
            g.set_state(state["generators"][name])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        saved = state.get("callbacks", {})
        for cb in self.callbacks:
            if cb.key in saved:
                cb.load_state_dict(saved[cb.key])
