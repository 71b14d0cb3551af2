"""Optimizers and learning-rate schedules, written out so that training never imports torch._dynamo.

Every `torch.optim` optimizer imports `torch._dynamo` on its first `step()` or `zero_grad()`
(through `_use_grad_for_differentiable` and `torch._disable_dynamo`), which costs about 1.5 s on
the 2-core CPU this project is measured on: a sixth of the whole time-to-99% budget. These few
lines do the same arithmetic as torch's SGD (momentum, Nesterov), Adam and AdamW and as its
OneCycleLR, CosineAnnealingLR and MultiStepLR, and as torch's Muon for a model's matrices beside AdamW for the
rest; `tests/test_optim.py` checks them step by step against torch's own.

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


# Newton-Schulz's quintic coefficients (Jordan et al., 2024; torch.optim.Muon's defaults).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def orthogonalise(matrix: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """`matrix` with its singular values pushed to about 1 (0.5 to 1.5) by `steps` Newton-Schulz iterations in the
    matrix's own dtype: torch.optim.Muon's orthogonalisation, which runs them in bfloat16."""
    a, b, c = NS_COEFFICIENTS
    tall = matrix.size(0) > matrix.size(1)
    x = matrix.T if tall else matrix
    x = x / x.norm().clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


class Muon(Adam):
    """Muon (Jordan et al., 2024) for the groups marked `muon=True`, AdamW for the others, in one optimizer.

    A Muon parameter steps as torch.optim.Muon with `adjust_lr_fn="match_rms_adamw"`: Nesterov momentum (the group's
    first beta is the momentum, so `one_cycle` cycles it as it cycles AdamW's), the update (a convolution's as a
    matrix of out-channels x everything else) orthogonalised (`orthogonalise`), then scaled by 0.2 sqrt(max(rows,
    columns)) to the size of an AdamW update (Liu et al., 2025, "Muon is scalable for LLM training"), so AdamW's
    learning rate, decoupled weight decay and schedule serve both kinds. `for_config` puts every weight of two or
    more dimensions in the Muon group but the output layer's (a module named `head`): a classifier's head, biases
    and norms step by AdamW, as Muon's authors advise.

    `ns_steps` Newton-Schulz iterations (torch's 5). The orthogonalisation runs in `ns_dtype`: torch's bfloat16 where
    the device computes it natively, else float32 (emulated bfloat16 is the slower); it belongs to the machine, not to
    the run, so `state_dict` does not keep it.

    On `cnn-fast` (docs/benchmarks.md, 2026-12-05) it reaches 99% a tenth of an epoch sooner than AdamW (after 0.59
    or 0.69 epochs, not 0.69 or 0.79, seeds 0-4), but its orthogonalisations cost as much time as that saves: whole
    runs to 99% took 4.32 s against AdamW's 4.28 s (medians of 20 alternating runs), so the recipe keeps AdamW.
    """

    def __init__(
        self,
        params: Params,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        ns_steps: int = 5,
        ns_dtype: torch.dtype = torch.bfloat16,
    ) -> None:
        self.ns_dtype = ns_dtype
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, decoupled=True)
        Optimizer.__init__(self, params, {**defaults, "muon": False, "ns_steps": ns_steps})

    def _update(self, p: torch.Tensor, grad: torch.Tensor, group: dict[str, Any], state: dict[str, Any]) -> None:
        if not group["muon"]:
            super()._update(p, grad, group, state)
            return
        lr, momentum = group["lr"], group["betas"][0]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(grad)
        buf = state["momentum_buffer"]
        buf.lerp_(grad, 1 - momentum)
        matrix = grad.lerp(buf, momentum).reshape(len(p), -1)
        update = orthogonalise(matrix.to(self.ns_dtype), group["ns_steps"]).to(p.dtype)
        p.mul_(1 - lr * group["weight_decay"])
        p.add_(update.view_as(p), alpha=-lr * 0.2 * math.sqrt(max(matrix.shape)))


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
        return _muon(model, config)
    return Adam(params, lr=config.lr, weight_decay=config.weight_decay, decoupled=config.optimizer == "adamw")


def _muon(model: torch.nn.Module, config: Any) -> Muon:
    """`Muon` over the model: its matrices but the head's in the Muon group, the rest in the AdamW group."""
    from mnistcli.engine.device import native_bf16

    head = getattr(model, "head", None)
    output = {id(p) for p in head.parameters()} if isinstance(head, torch.nn.Module) else set()
    params = list(model.parameters())
    matrices = [p for p in params if p.ndim >= 2 and id(p) not in output]
    rest = [p for p in params if p.ndim < 2 or id(p) in output]
    groups = [{"params": ps, "muon": muon} for ps, muon in ((matrices, True), (rest, False)) if ps]
    device = params[0].device if params else torch.device("cpu")
    ns_dtype = torch.bfloat16 if native_bf16(device) else torch.float32
    return Muon(groups, lr=config.lr, weight_decay=config.weight_decay, ns_dtype=ns_dtype)


def schedule_for(optimizer: Optimizer, config: Any, total_steps: int) -> Schedule | None:
    """The per-step learning-rate schedule a TrainConfig names over `total_steps`, or None."""
    if config.scheduler == "onecycle":
        return one_cycle(optimizer, max_lr=config.lr, total_steps=total_steps, pct_start=0.25)
    if config.scheduler == "cosine":
        return cosine(optimizer, total_steps)
    if config.scheduler == "step":
        return multi_step(optimizer, [total_steps // 2, (3 * total_steps) // 4], gamma=0.1)
    return None
