"""mnistcli's optimizers and schedules match torch.optim step by step (torch is the reference)."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch

from mnistcli.config import TrainConfig
from mnistcli.engine import optim
from mnistcli.engine.loop import make_optimizer, make_scheduler
from mnistcli.registry import create_model

STEPS = 25


def reference(model: torch.nn.Module, config: TrainConfig) -> tuple[torch.optim.Optimizer, object]:
    p = model.parameters()
    if config.optimizer in ("sgd", "nesterov"):
        opt: torch.optim.Optimizer = torch.optim.SGD(
            p,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.optimizer == "nesterov",
            weight_decay=config.weight_decay,
        )
    elif config.optimizer == "adam":
        opt = torch.optim.Adam(p, lr=config.lr, weight_decay=config.weight_decay)
    else:
        opt = torch.optim.AdamW(p, lr=config.lr, weight_decay=config.weight_decay)
    sched: object = None
    if config.scheduler == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=STEPS, pct_start=0.25)
    elif config.scheduler == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=STEPS)
    elif config.scheduler == "step":
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[STEPS // 2, 3 * STEPS // 4], gamma=0.1)
    return opt, sched


@pytest.mark.parametrize("optimizer", ["sgd", "nesterov", "adam", "adamw"])
@pytest.mark.parametrize("scheduler", ["none", "step", "cosine", "onecycle"])
def test_same_trajectory_as_torch_optim(optimizer: str, scheduler: str) -> None:
    torch.manual_seed(0)
    config = TrainConfig(
        optimizer=optimizer,
        scheduler=scheduler,
        lr=0.05 if "sgd" in optimizer or optimizer == "nesterov" else 3e-3,
        weight_decay=1e-2,
    )
    ours_model = create_model("lenet")
    ref_model = copy.deepcopy(ours_model)
    ours, ours_sched = make_optimizer(ours_model, config), None
    ours_sched = make_scheduler(ours, config, STEPS)
    ref, ref_sched = reference(ref_model, config)
    x, y = torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,))
    for _ in range(STEPS):
        for model, opt, sched in ((ours_model, ours, ours_sched), (ref_model, ref, ref_sched)):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()  # type: ignore[attr-defined]
        assert ours.param_groups[0]["lr"] == pytest.approx(ref.param_groups[0]["lr"], rel=1e-9, abs=1e-12)
    for a, b in zip(ours_model.parameters(), ref_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_one_cycle_cycles_momentum_like_torch() -> None:
    p = [torch.nn.Parameter(torch.zeros(1))]
    ours = optim.SGD(p, lr=0.1, momentum=0.9)
    ref = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    a, b = (
        optim.one_cycle(ours, 0.1, 40),
        torch.optim.lr_scheduler.OneCycleLR(ref, max_lr=0.1, total_steps=40, pct_start=0.25),
    )
    for _ in range(39):
        assert ours.param_groups[0]["momentum"] == pytest.approx(ref.param_groups[0]["momentum"])
        ref.step()
        a.step()
        b.step()


@pytest.mark.slow  # a subprocess that imports torch and trains four times
def test_training_never_imports_dynamo() -> None:
    """torch.optim would import torch._dynamo (about 1.5 s) on its first step."""
    code = """
import sys, torch
from mnistcli.config import TrainConfig
from mnistcli.data.tensors import TensorData
from mnistcli.registry import create_model
from mnistcli.families import get_task
from mnistcli.engine.loop import fit
data = TensorData(torch.randint(0, 255, (64, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (64,)))
for opt in ("sgd", "nesterov", "adam", "adamw"):
    config = TrainConfig(epochs=1, batch_size=16, optimizer=opt, scheduler="onecycle", augment=True, target_accuracy=0.99)
    generator = torch.Generator()
    fit(create_model("cnn"), get_task("classify", config, generator), data, config, generator, monitor=data)
assert "torch._dynamo" not in sys.modules, "torch._dynamo was imported"
"""
    subprocess.run([sys.executable, "-c", code], check=True)
