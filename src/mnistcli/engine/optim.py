"""Optimizers and learning-rate schedules, written out so that training never imports torch._dynamo.

Every `torch.optim` optimizer imports `torch._dynamo` on its first `step()` or `zero_grad()`
(through `_use_grad_for_differentiable` and `torch._disable_dynamo`), which costs about 1.5 s on
the 2-core CPU this project is measured on: a sixth of the whole time-to-99% budget. These few
lines do the same arithmetic as torch's SGD (momentum, Nesterov), Adam and AdamW and as its
OneCycleLR, CosineAnnealingLR and MultiStepLR (and engine/muon.py as torch's Muon); `tests/test_optim.py` checks them step
by step against torch's own.

They are shaped like torch's, so torch's tools that only read `param_groups` work on them
(`torch.amp.GradScaler.unscale_` and `.step`, clipping over `group["params"]`):

- `param_groups` is a list of dicts, each `{"params": [tensors], lr, weight_decay, ...}`; the
  constructor takes parameters or a list of such dicts whose keys override the defaults, and each
  group steps with its own hyper-parameters.
- `state_dict()` is `{"state": {index: {...}}, "param_groups": [{..., "params": [indices]}]}`,
  parameters numbered in order across groups, holding only tensors and plain Python numbers
  (Adam's `step` is a plain int, not a tensor as in torch), so it can be written as safetensors
  plus JSON. `load_state_dict` into a fresh optimizer over the same model continues bit for bit.
- A `Schedule` sets every group's rate from that group's own base rate (torch's `base_lrs`); its
  `state_dict()` is `{"last": step, "base_lrs": [...]}`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

Params = Iterable[torch.Tensor] | Iterable[dict[str, Any]]


class Optimizer:
    """torch.optim.Optimizer's interface: `param_groups`, `state`, `zero_grad`, `step`, `state_dict`."""

    def __init__(self, params: Params, defaults: dict[str, Any]) -> None:
        self.defaults = defaults
        self.state: dict[torch.Tensor, dict[str, Any]] = {}
        self.param_groups: list[dict[str, Any]] = []
        given: list[Any] = list(params)
        if not given:
            raise ValueError("optimizer got an empty parameter list")
        for group in given if isinstance(given[0], dict) else [{"params": given}]:
            self.add_param_group(group)

    def add_param_group(self, group: dict[str, Any]) -> None:
        """Add a group: `{"params": ...}` plus any hyper-parameters that differ from the defaults.

        Raises:
            TypeError: a parameter is not a tensor.
            ValueError: a parameter is already in a group (here or in this one).
        """
        params = group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        if not all(isinstance(p, torch.Tensor) for p in params):
            raise TypeError("optimizer parameters must be tensors")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if len({id(p) for p in params} | seen) != len(params) + len(seen):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(
            {"params": params, **self.defaults, **{k: v for k, v in group.items() if k != "params"}}
        )

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.detach_().zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient, each with its group's hyper-parameters."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, p.grad, group, self.state.setdefault(p, {}))

    def _update(self, p: torch.Tensor, grad: torch.Tensor, group: dict[str, Any], state: dict[str, Any]) -> None:
        raise NotImplementedError  # pragma: no cover

    def state_dict(self) -> dict[str, Any]:
        """torch's layout; the state tensors are the live ones (as in torch): clone them to keep a snapshot."""
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            packed["params"] = [index.setdefault(id(p), len(index)) for p in group["params"]]
            groups.append(packed)
        state = {index[id(p)]: dict(s) for p, s in self.state.items() if s}
        return {"state": dict(sorted(state.items())), "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Take hyper-parameters and state from `state_dict()` of an optimizer of this kind over the same shapes.

        Indices may be ints or strings (as after JSON); tensors are copied to each parameter's device
        and floating dtype; lists (JSON's tuples) become tuples; a tensor `step` becomes an int.

        Raises:
            ValueError: the groups, their sizes, their hyper-parameters or the state's shapes do not fit.
        """
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"the saved optimizer has {len(saved_groups)} parameter groups, not {len(self.param_groups)}"
            )
        by_index: dict[int, torch.Tensor] = {}
        for n, (saved, group) in enumerate(zip(saved_groups, self.param_groups, strict=True)):
            n_saved, n_here = len(saved["params"]), len(group["params"])
            if n_saved != n_here:
                raise ValueError(
                    f"parameter group {n} holds {n_saved} parameters in the saved optimizer, {n_here} here"
                )
            if missing := sorted(set(self.defaults) - set(saved)):
                raise ValueError(
                    f"the saved optimizer is not a {type(self).__name__}: its groups lack {', '.join(missing)}"
                )
            by_index.update((int(i), p) for i, p in zip(saved["params"], group["params"], strict=True))
        state: dict[torch.Tensor, dict[str, Any]] = {}
        for i, saved_state in state_dict["state"].items():
            if int(i) not in by_index:
                raise ValueError(f"the saved optimizer has state for parameter {i}, which no group holds")
            p = by_index[int(i)]
            state[p] = {k: _restore(k, v, p, i) for k, v in saved_state.items()}
        for saved, group in zip(saved_groups, self.param_groups, strict=True):
            group.update({k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k != "params"})
        self.state = state


def _restore(key: str, value: Any, p: torch.Tensor, index: object) -> Any:
    if not isinstance(value, torch.Tensor):
        return value
    if key == "step":
        return int(value.item())
    if value.shape != p.shape:
        raise ValueError(f"the saved {key} of parameter {index} has shape {tuple(value.shape)}, not {tuple(p.shape)}")
    return value.detach().to(device=p.device, dtype=p.dtype if value.is_floating_point() else value.dtype, copy=True)


class SGD(Optimizer):
    """torch.optim.SGD: L2 weight decay, heavy-ball or Nesterov momentum, no dampening."""

    def __init__(
        self, params: Params, lr: float, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0
    ) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay))

    def _update(self, p: torch.Tensor, grad: torch.Tensor, group: dict[str, Any], state: dict[str, Any]) -> None:
        d = grad.add(p, alpha=group["weight_decay"]) if group["weight_decay"] else grad
        if momentum := group["momentum"]:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = d.clone()
            else:
                buf.mul_(momentum).add_(d)
            d = d.add(buf, alpha=momentum) if group["nesterov"] else buf
        p.add_(d, alpha=-group["lr"])


class Adam(Optimizer):
    """torch.optim.Adam (L2 weight decay) or, with `decoupled=True`, torch.optim.AdamW. `step` is a plain int."""

    def __init__(
        self,
        params: Params,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled: bool = False,
    ) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, decoupled=decoupled))

    def _update(self, p: torch.Tensor, grad: torch.Tensor, group: dict[str, Any], state: dict[str, Any]) -> None:
        lr, (beta1, beta2), weight_decay = group["lr"], group["betas"], group["weight_decay"]
        if weight_decay:
            if group["decoupled"]:
                p.mul_(1 - lr * weight_decay)
            else:
                grad = grad.add(p, alpha=weight_decay)
        if not state:
            state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
        state["step"] += 1
        state["exp_avg"].lerp_(grad, 1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias1 = 1 - beta1 ** state["step"]
        bias2_sqrt = math.sqrt(1 - beta2 ** state["step"])
        denom = (state["exp_avg_sq"].sqrt() / bias2_sqrt).add_(group["eps"])
        p.addcdiv_(state["exp_avg"], denom, value=-lr / bias1)


class Schedule:
    """A per-step schedule: `step()` advances one batch and writes lr (and momentum) into every group.

    `lr(t, base)` is the rate at step `t` of a group whose base rate is `base` (each group's `lr` when
    the schedule is made, unless `base_lrs` says otherwise); `momentum(t)`, if given, is written into
    every group's `momentum`, or the first of its `betas`.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        lr: Callable[[int, float], float],
        momentum: Callable[[int], float] | None = None,
        base_lrs: Sequence[float] | None = None,
    ) -> None:
        self.optimizer, self.lr, self.momentum, self.last = optimizer, lr, momentum, 0
        self.base_lrs = [float(g["lr"]) for g in optimizer.param_groups] if base_lrs is None else list(base_lrs)
        self._check(len(self.base_lrs))
        self._apply()

    def _check(self, n: int) -> None:
        if n != len(self.optimizer.param_groups):
            raise ValueError(f"{n} base rates for {len(self.optimizer.param_groups)} parameter groups")

    def _apply(self) -> None:
        m = None if self.momentum is None else self.momentum(self.last)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = self.lr(self.last, base)
            if m is not None:
                if "betas" in group:
                    group["betas"] = (m, group["betas"][1])
                else:
                    group["momentum"] = m

    def step(self) -> None:
        self.last += 1
        self._apply()

    def state_dict(self) -> dict[str, Any]:
        """`{"last": steps taken, "base_lrs": [one per group]}`: plain numbers."""
        return {"last": self.last, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Go to the saved step and write that step's rate (and momentum) into the optimizer.

        Raises:
            ValueError: the saved schedule has a different number of groups.
        """
        self._check(len(state_dict["base_lrs"]))
        self.last, self.base_lrs = int(state_dict["last"]), [float(b) for b in state_dict["base_lrs"]]
        self._apply()


def _cos(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def one_cycle(
    optimizer: Optimizer,
    max_lr: float | Sequence[float],
    total_steps: int,
    pct_start: float = 0.25,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
) -> Schedule:
    """torch's OneCycleLR (cosine, two phases, momentum cycled between 0.95 and 0.85).

    As in torch, one `max_lr` is every group's peak (the groups' own rates are ignored); give one per group to differ.
    """
    peak = max(float(pct_start * total_steps) - 1, 0.0)
    n = len(optimizer.param_groups)
    tops = [float(max_lr)] * n if isinstance(max_lr, int | float) else [float(m) for m in max_lr]

    def phase(t: int, up: tuple[float, float], down: tuple[float, float]) -> float:
        if t <= peak:
            return _cos(*up, t / peak) if peak > 0 else up[1]
        return _cos(*down, (t - peak) / max(total_steps - 1 - peak, 1e-9))

    def lr(t: int, top: float) -> float:
        initial = top / div_factor
        return phase(t, (initial, top), (top, initial / final_div_factor))

    return Schedule(
        optimizer, lr, lambda t: phase(t, (max_momentum, base_momentum), (base_momentum, max_momentum)), tops
    )


def cosine(optimizer: Optimizer, total_steps: int) -> Schedule:
    """torch's CosineAnnealingLR with eta_min 0 over `total_steps`, from each group's rate."""
    return Schedule(optimizer, lambda t, base: base * (1 + math.cos(math.pi * t / total_steps)) / 2)


def multi_step(optimizer: Optimizer, milestones: list[int], gamma: float = 0.1) -> Schedule:
    """torch's MultiStepLR: multiply each group's rate by `gamma` at each milestone step."""
    return Schedule(optimizer, lambda t, base: base * gamma ** sum(t >= m for m in milestones))


def for_config(model: torch.nn.Module, config: Any) -> Optimizer:
    """The optimizer a TrainConfig names, over the model's trainable parameters."""
    params = model.parameters()
    if config.optimizer in ("sgd", "nesterov"):
        return SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.optimizer == "nesterov",
            weight_decay=config.weight_decay,
        )
    if config.optimizer == "muon":
        from mnistcli.engine.muon import for_model  # which imports this module

        return for_model(model, config)
    return Adam(params, lr=config.lr, weight_decay=config.weight_decay, decoupled=config.optimizer == "adamw")


def schedule_for(optimizer: Optimizer, config: Any, total_steps: int) -> Schedule | None:
    """The per-step learning-rate schedule a TrainConfig names over `total_steps`, or None."""
    if config.scheduler == "onecycle":
        return one_cycle(optimizer, max_lr=config.lr, total_steps=total_steps, pct_start=0.25)
    if config.scheduler == "cosine":
        return cosine(optimizer, total_steps)
    if config.scheduler == "step":
        return multi_step(optimizer, [total_steps // 2, (3 * total_steps) // 4], gamma=0.1)
    return None
