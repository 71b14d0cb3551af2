"""Muon (`--optimizer muon`): torch.optim.Muon's step for a model's weight matrices, AdamW's for the rest.

Written out, as engine/optim.py's others are, so that training never imports torch._dynamo; `tests/test_optim.py`
checks it step by step against torch.optim.Muon and AdamW.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from mnistcli.engine.optim import Adam, Optimizer, Params

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
    learning rate, decoupled weight decay and schedule serve both kinds. `for_model` says which parameters are
    which.

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


def for_model(model: torch.nn.Module, config: Any) -> Muon:
    """`Muon` over `model` as a TrainConfig asks (`lr`, `weight_decay`, `momentum` as the first beta of both kinds).

    Its weights of two or more dimensions step by Muon, but for those of a module named `head` (a classifier's output
    layer: Muon's authors advise AdamW for it) and those with a single row or column (a vector in effect, as an
    attention's scoring weights); biases and norms step by AdamW. Other output layers (the adder's two heads, a
    projection head) are matrices like any other here.
    """
    from mnistcli.engine.device import native_bf16

    head = getattr(model, "head", None)
    output = {id(p) for p in head.parameters()} if isinstance(head, torch.nn.Module) else set()
    params = list(model.parameters())

    def is_matrix(p: torch.Tensor) -> bool:
        return p.ndim >= 2 and p.shape[0] > 1 and p.numel() > p.shape[0] and id(p) not in output

    matrices, rest = [p for p in params if is_matrix(p)], [p for p in params if not is_matrix(p)]
    groups = [{"params": ps, "muon": muon} for ps, muon in ((matrices, True), (rest, False)) if ps]
    device = params[0].device if params else torch.device("cpu")
    ns_dtype = torch.bfloat16 if native_bf16(device) else torch.float32
    betas = (config.momentum, 0.999)
    return Muon(groups, lr=config.lr, betas=betas, weight_decay=config.weight_decay, ns_dtype=ns_dtype)
