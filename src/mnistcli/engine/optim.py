"""Optimizers and learning-rate schedules, written out so that training never imports torch._dynamo.

Every `torch.optim` optimizer imports `torch._dynamo` on its first `step()` or `zero_grad()`
(through `_use_grad_for_differentiable` and `torch._disable_dynamo`), which costs about 1.5 s on
the 2-core CPU this project is measured on: a sixth of the whole time-to-99% budget. These few
lines do the same arithmetic as torch's SGD (momentum, Nesterov), Adam and AdamW and as its
OneCycleLR, CosineAnnealingLR and MultiStepLR; `tests/test_optim.py` checks them step by step
against torch's own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch


class Optimizer:
    """What the training loop needs: `param_groups[0]` with `lr` (and `momentum`), `zero_grad`, `step`."""

    def __init__(self, params: Iterable[torch.nn.Parameter], **group: Any) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.param_groups: list[dict[str, Any]] = [group]
        self.state: dict[torch.nn.Parameter, dict[str, Any]] = {p: {} for p in self.params}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class SGD(Optimizer):
    """torch.optim.SGD: L2 weight decay, heavy-ball or Nesterov momentum, no dampening."""

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        lr: float,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)

    @torch.no_grad()
    def step(self) -> None:
        g = self.param_groups[0]
        for p in self.params:
            if p.grad is None:
                continue
            d = p.grad.add(p, alpha=g["weight_decay"]) if g["weight_decay"] else p.grad
            if g["momentum"]:
                state = self.state[p]
                if "buf" not in state:
                    state["buf"] = d.clone()
                else:
                    state["buf"].mul_(g["momentum"]).add_(d)
                d = d.add(state["buf"], alpha=g["momentum"]) if g["nesterov"] else state["buf"]
            p.add_(d, alpha=-g["lr"])


class Adam(Optimizer):
    """torch.optim.Adam (L2 weight decay) or, with `decoupled=True`, torch.optim.AdamW."""

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled: bool = False,
    ) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, decoupled=decoupled)

    @property
    def momentum(self) -> float:
        return float(self.param_groups[0]["betas"][0])

    @torch.no_grad()
    def step(self) -> None:
        g = self.param_groups[0]
        beta1, beta2 = g["betas"]
        for p in self.params:
            if p.grad is None:
                continue
            grad = p.grad
            if g["weight_decay"]:
                if g["decoupled"]:
                    p.mul_(1 - g["lr"] * g["weight_decay"])
                else:
                    grad = grad.add(p, alpha=g["weight_decay"])
            state = self.state[p]
            if not state:
                state.update(step=0, m=torch.zeros_like(p), v=torch.zeros_like(p))
            state["step"] += 1
            state["m"].lerp_(grad, 1 - beta1)
            state["v"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            bias1 = 1 - beta1 ** state["step"]
            bias2_sqrt = math.sqrt(1 - beta2 ** state["step"])
            denom = (state["v"].sqrt() / bias2_sqrt).add_(g["eps"])
            p.addcdiv_(state["m"], denom, value=-g["lr"] / bias1)


class Schedule:
    """A per-step schedule: `step()` advances one batch and writes lr (and momentum) into the optimizer."""

    def __init__(
        self, optimizer: Optimizer, lr: Callable[[int], float], momentum: Callable[[int], float] | None = None
    ):
        self.optimizer, self.lr, self.momentum, self.last = optimizer, lr, momentum, 0
        self._apply()

    def _apply(self) -> None:
        group = self.optimizer.param_groups[0]
        group["lr"] = self.lr(self.last)
        if self.momentum is not None:
            m = self.momentum(self.last)
            if "betas" in group:
                group["betas"] = (m, group["betas"][1])
            else:
                group["momentum"] = m

    def step(self) -> None:
        self.last += 1
        self._apply()


def _cos(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def one_cycle(
    optimizer: Optimizer,
    max_lr: float,
    total_steps: int,
    pct_start: float = 0.25,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
) -> Schedule:
    """torch's OneCycleLR (cosine, two phases, momentum cycled between 0.95 and 0.85)."""
    initial = max_lr / div_factor
    final = initial / final_div_factor
    peak = max(float(pct_start * total_steps) - 1, 0.0)

    def phase(t: int, up: tuple[float, float], down: tuple[float, float]) -> float:
        if t <= peak:
            return _cos(*up, t / peak) if peak > 0 else up[1]
        return _cos(*down, (t - peak) / max(total_steps - 1 - peak, 1e-9))

    return Schedule(
        optimizer,
        lambda t: phase(t, (initial, max_lr), (max_lr, final)),
        lambda t: phase(t, (max_momentum, base_momentum), (base_momentum, max_momentum)),
    )


def cosine(optimizer: Optimizer, total_steps: int) -> Schedule:
    """torch's CosineAnnealingLR with eta_min 0 over `total_steps`."""
    base = optimizer.param_groups[0]["lr"]
    return Schedule(optimizer, lambda t: base * (1 + math.cos(math.pi * t / total_steps)) / 2)


def multi_step(optimizer: Optimizer, milestones: list[int], gamma: float = 0.1) -> Schedule:
    """torch's MultiStepLR: multiply the rate by `gamma` at each milestone step."""
    base = optimizer.param_groups[0]["lr"]
    return Schedule(optimizer, lambda t: base * gamma ** sum(t >= m for m in milestones))
