"""mnistcli's optimizers and schedules match torch.optim step by step (torch is the reference), in several
parameter groups too; they resume bit for bit from state_dict; torch.amp.GradScaler unscales and steps them."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from mnistcli.config import OPTIMIZERS, SCHEDULERS, TrainConfig
from mnistcli.engine import muon, optim
from mnistcli.engine import optim as ours_optim
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


@pytest.mark.parametrize("optimizer", [o for o in OPTIMIZERS if o != "muon"])  # muon: its own tests below
@pytest.mark.parametrize("scheduler", SCHEDULERS)
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
    ours, ours_sched = ours_optim.for_config(ours_model, config), None
    ours_sched = ours_optim.schedule_for(ours, config, STEPS)
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
    """torch.optim would import torch._dynamo (about 1.5 s) on its first step; GradScaler and state_dict do not."""
    code = """
import sys, torch
from mnistcli.data.tensors import TensorData
from mnistcli.registry import create_model
from tests.helpers import train_in_memory
data = TensorData(torch.randint(0, 255, (64, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (64,)))
for opt in ("sgd", "nesterov", "adam", "adamw", "muon"):
    options = dict(epochs=1, batch_size=16, optimizer=opt, scheduler="onecycle", augment=True)
    train_in_memory(create_model("cnn"), "cnn", data, options)
from mnistcli.engine import optim
model = create_model("lenet")
params = list(model.parameters())
opt = optim.Adam([{"params": params[:1]}, {"params": params[1:], "lr": 1e-4}], lr=1e-3)
scaler = torch.amp.GradScaler("cpu")
scaler.scale(model(torch.rand(2, 1, 28, 28)).sum()).backward()
scaler.step(opt)
scaler.update()
opt.load_state_dict(opt.state_dict())
assert "torch._dynamo" not in sys.modules, "torch._dynamo was imported"
"""
    subprocess.run([sys.executable, "-c", code], check=True)


# Several parameter groups, state_dict / load_state_dict, and torch.amp.GradScaler.

KINDS = ["sgd", "nesterov", "adam", "adamw"]


def two_groups(model: torch.nn.Module, lr: float) -> list[dict[str, Any]]:
    """Weights at `lr` with weight decay; biases at a tenth of it, without (a common split)."""
    named = list(model.named_parameters())
    return [
        {"params": [p for n, p in named if not n.endswith("bias")]},
        {"params": [p for n, p in named if n.endswith("bias")], "lr": lr / 10, "weight_decay": 0.0},
    ]


def build(kind: str, params: Any, lr: float, reference: bool = False) -> Any:
    """Ours (or, with `reference`, torch.optim's) optimizer of that kind."""
    if reference:
        if kind in ("sgd", "nesterov"):
            return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=kind == "nesterov", weight_decay=1e-2)
        return (torch.optim.Adam if kind == "adam" else torch.optim.AdamW)(params, lr=lr, weight_decay=1e-2)
    if kind in ("sgd", "nesterov"):
        return optim.SGD(params, lr=lr, momentum=0.9, nesterov=kind == "nesterov", weight_decay=1e-2)
    return optim.Adam(params, lr=lr, weight_decay=1e-2, decoupled=kind == "adamw")


def lr_of(kind: str) -> float:
    return 0.05 if kind in ("sgd", "nesterov") else 3e-3


def train_step(model: torch.nn.Module, opt: Any, sched: Any, t: int) -> None:
    """One step on batch number `t` (the same batch whichever run asks for it)."""
    g = torch.Generator().manual_seed(t)
    x, y = torch.rand(16, 1, 28, 28, generator=g), torch.randint(0, 10, (16,), generator=g)
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    if sched is not None:
        sched.step()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("scheduler", ["cosine", "onecycle"])
def test_param_groups_step_like_torch(kind: str, scheduler: str) -> None:
    """Each group steps with its own lr and weight decay, and schedules set every group, as torch's do."""
    torch.manual_seed(0)
    ours_model, lr = create_model("lenet"), lr_of(kind)
    ref_model = copy.deepcopy(ours_model)
    ours, ref = build(kind, two_groups(ours_model, lr), lr), build(kind, two_groups(ref_model, lr), lr, reference=True)
    if scheduler == "cosine":
        ours_sched: Any = optim.cosine(ours, STEPS)
        ref_sched: Any = torch.optim.lr_scheduler.CosineAnnealingLR(ref, T_max=STEPS)
    else:
        ours_sched = optim.one_cycle(ours, [lr, lr / 10], STEPS)
        ref_sched = torch.optim.lr_scheduler.OneCycleLR(ref, max_lr=[lr, lr / 10], total_steps=STEPS, pct_start=0.25)
    for group, ref_group in zip(ours.param_groups, ref.param_groups, strict=True):
        assert [p.shape for p in group["params"]] == [p.shape for p in ref_group["params"]]
        shared = set(group) & set(ref_group) - {"params", "initial_lr"}
        hyper = {"momentum", "nesterov"} if kind in ("sgd", "nesterov") else {"betas", "eps"}
        assert shared >= {"lr", "weight_decay"} | hyper
        for k in shared:
            assert group[k] == pytest.approx(ref_group[k]), k
    for t in range(STEPS - 1):
        train_step(ours_model, ours, ours_sched, t)
        train_step(ref_model, ref, ref_sched, t)
        for group, ref_group in zip(ours.param_groups, ref.param_groups, strict=True):
            assert group["lr"] == pytest.approx(ref_group["lr"], rel=1e-9, abs=1e-12)
    assert ours.param_groups[1]["lr"] < ours.param_groups[0]["lr"]
    for a, b in zip(ours_model.parameters(), ref_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def through_disk(state: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint keeps: the tensors as safetensors, everything else as JSON (which fails on other objects)."""
    tensors = {f"{i}.{k}": v for i, s in state["state"].items() for k, v in s.items() if isinstance(v, torch.Tensor)}
    rest = {
        "state": {
            i: {k: v for k, v in s.items() if not isinstance(v, torch.Tensor)} for i, s in state["state"].items()
        },
        "param_groups": state["param_groups"],
    }
    loaded = json.loads(json.dumps(rest))
    for name, tensor in load_safetensors(save_safetensors(tensors)).items():
        i, k = name.split(".")
        loaded["state"][i][k] = tensor
    return loaded


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("grouped", [False, True])
def test_resuming_from_state_dict_is_bit_identical(kind: str, grouped: bool) -> None:
    """N steps, save, a fresh model and optimizer load it, M more steps: the same bits as N + M steps."""
    n, m, lr = 7, 6, lr_of(kind)
    torch.manual_seed(0)
    start = create_model("lenet")

    def fresh() -> tuple[torch.nn.Module, Any, optim.Schedule]:
        model = copy.deepcopy(start)
        opt = build(kind, two_groups(model, lr) if grouped else model.parameters(), lr)
        return model, opt, optim.one_cycle(opt, [lr, lr / 10] if grouped else lr, n + m)

    saved = assert_resumes_bit_for_bit(fresh, n, m)
    assert len(saved["param_groups"]) == (2 if grouped else 1)


def assert_resumes_bit_for_bit(fresh: Callable[[], tuple[torch.nn.Module, Any, Any]], n: int, m: int) -> dict[str, Any]:
    """Train `fresh()` N + M steps; and N steps, through a checkpoint (`through_disk`), then M more from a fresh one:
    the same bits, the same hyper-parameters. Returns the optimizer's state as saved."""
    whole, whole_opt, whole_sched = fresh()
    for t in range(n + m):
        train_step(whole, whole_opt, whole_sched, t)

    first, first_opt, first_sched = fresh()
    for t in range(n):
        train_step(first, first_opt, first_sched, t)
    weights = {k: v.clone() for k, v in first.state_dict().items()}
    saved, saved_sched = through_disk(first_opt.state_dict()), json.loads(json.dumps(first_sched.state_dict()))
    del first, first_opt, first_sched

    second, second_opt, second_sched = fresh()
    second.load_state_dict(weights)
    second_opt.load_state_dict(saved)
    second_sched.load_state_dict(saved_sched)
    for t in range(n, n + m):
        train_step(second, second_opt, second_sched, t)
    for (name, a), b in zip(whole.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    for group, other in zip(whole_opt.param_groups, second_opt.param_groups, strict=True):
        assert {k: v for k, v in group.items() if k != "params"} == {k: v for k, v in other.items() if k != "params"}
    return saved


@pytest.mark.parametrize(
    "make",
    [lambda o: optim.one_cycle(o, 0.1, 40), lambda o: optim.cosine(o, 40), lambda o: optim.multi_step(o, [5, 9])],
)
@pytest.mark.parametrize("kind", ["nesterov", "adam"])
def test_schedule_state_dict_goes_back_to_its_step(kind: str, make: Callable[[Any], optim.Schedule]) -> None:
    """Loading a schedule's state writes that step's rate (and momentum or beta1) into every group."""
    model = torch.nn.Linear(3, 2)
    groups = [{"params": [model.weight]}, {"params": [model.bias], "lr": 0.01}]
    ran_opt, fresh_opt = build(kind, groups, 0.1), build(kind, copy.deepcopy(groups), 0.1)
    ran = make(ran_opt)
    for _ in range(11):
        ran.step()
    fresh = make(fresh_opt)
    assert fresh_opt.param_groups[0]["lr"] != ran_opt.param_groups[0]["lr"]
    state = ran.state_dict()
    assert state["last"] == 11 and json.loads(json.dumps(state)) == state
    fresh.load_state_dict(state)
    assert fresh.last == 11
    for a, b in zip(ran_opt.param_groups, fresh_opt.param_groups, strict=True):
        assert {k: v for k, v in a.items() if k != "params"} == {k: v for k, v in b.items() if k != "params"}


def test_state_dict_has_torchs_layout() -> None:
    """Parameters numbered in order across groups; Adam's step a plain int; torch's names for the moments."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    ref_model = copy.deepcopy(model)

    def groups(m: torch.nn.Module) -> list[dict[str, Any]]:
        return [{"params": [m[0].weight, m[1].weight]}, {"params": [m[0].bias, m[1].bias], "lr": 1e-4}]

    opt, ref = optim.Adam(groups(model), lr=1e-3), torch.optim.Adam(groups(ref_model), lr=1e-3)
    for m, o in ((model, opt), (ref_model, ref)):
        m(torch.ones(5, 3)).sum().backward()
        o.step()
    state, ref_state = opt.state_dict(), ref.state_dict()
    numbering = [g["params"] for g in state["param_groups"]]
    assert numbering == [g["params"] for g in ref_state["param_groups"]] == [[0, 1], [2, 3]]
    assert state["param_groups"][1]["lr"] == 1e-4
    assert set(state["state"]) == set(ref_state["state"]) == {0, 1, 2, 3}
    for ours, theirs in zip(state["state"].values(), ref_state["state"].values(), strict=True):
        assert set(ours) == set(theirs) == {"step", "exp_avg", "exp_avg_sq"}
        assert type(ours["step"]) is int and ours["step"] == int(theirs["step"]) == 1
        torch.testing.assert_close(ours["exp_avg"], theirs["exp_avg"])


def test_load_state_dict_refuses_what_does_not_fit() -> None:
    model = torch.nn.Linear(3, 2)
    sgd, adam = optim.SGD(model.parameters(), lr=0.1, momentum=0.9), optim.Adam(model.parameters(), lr=0.1)
    model(torch.rand(4, 3)).sum().backward()
    sgd.step()
    with pytest.raises(ValueError, match="not a Adam"):
        adam.load_state_dict(sgd.state_dict())
    with pytest.raises(ValueError, match="2 parameter groups, not 1"):
        sgd.load_state_dict(
            {
                "state": {},
                "param_groups": [{**g, "params": [i]} for i, g in enumerate(sgd.state_dict()["param_groups"] * 2)],
            }
        )
    other = optim.SGD(torch.nn.Linear(2, 3).parameters(), lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match=r"shape \(2, 3\), not \(3, 2\)"):
        other.load_state_dict(sgd.state_dict())
    with pytest.raises(ValueError, match="more than one parameter group"):
        optim.SGD([{"params": [model.weight]}, {"params": [model.weight, model.bias]}], lr=0.1)


@pytest.mark.parametrize("kind", KINDS)
def test_grad_scaler_unscales_and_steps_our_optimizers(kind: str) -> None:
    """torch.amp.GradScaler("cpu") over our param_groups: unscale_, clip, step; a step with an inf grad is skipped."""
    torch.manual_seed(0)
    model, lr = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)), lr_of(kind)
    ref_model = copy.deepcopy(model)
    opt, ref = build(kind, two_groups(model, lr), lr), build(kind, two_groups(ref_model, lr), lr)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    x, y = torch.rand(8, 6), torch.randint(0, 3, (8,))

    def clip(o: Any) -> None:
        torch.nn.utils.clip_grad_norm_([p for g in o.param_groups for p in g["params"]], 0.5)

    for _ in range(3):
        opt.zero_grad()
        ref.zero_grad()
        scaler.scale(torch.nn.functional.cross_entropy(model(x), y)).backward()
        torch.nn.functional.cross_entropy(ref_model(x), y).backward()
        assert not torch.equal(model[0].bias.grad, ref_model[0].bias.grad)  # still scaled
        scaler.unscale_(opt)  # type: ignore[arg-type]
        for a, b in zip(model.parameters(), ref_model.parameters(), strict=True):
            assert torch.equal(a.grad, b.grad)  # divided by a power of two: exact
        clip(opt)
        clip(ref)
        scaler.step(opt)  # type: ignore[arg-type]
        scaler.update()
        ref.step()
    for a, b in zip(model.parameters(), ref_model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert scaler.get_scale() == 2.0**12

    before = [p.clone() for p in model.parameters()]
    moments = copy.deepcopy(opt.state_dict()["state"])
    opt.zero_grad()
    scaler.scale(torch.nn.functional.cross_entropy(model(x), y)).backward()
    model[2].bias.grad[0] = float("inf")
    scaler.step(opt)  # type: ignore[arg-type]
    scaler.update()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), before, strict=True))
    after = opt.state_dict()["state"]  # no moment, momentum buffer or step count moved
    assert all(
        torch.equal(torch.as_tensor(v), torch.as_tensor(after[i][k])) for i, s in moments.items() for k, v in s.items()
    )
    assert scaler.get_scale() == 2.0**11


# Muon: torch.optim.Muon (Moonshot's scaling) on the matrices, torch's AdamW on the rest.


class Both:
    """torch's Muon and AdamW side by side, stepped as one optimizer (the reference for ours)."""

    def __init__(self, model: torch.nn.Module, config: TrainConfig) -> None:
        named = list(model.named_parameters())
        matrices = [p for n, p in named if p.ndim >= 2 and not n.startswith("head.")]
        rest = [p for n, p in named if not (p.ndim >= 2 and not n.startswith("head."))]
        self.muon = torch.optim.Muon(
            matrices, lr=config.lr, weight_decay=config.weight_decay, momentum=0.9,
            adjust_lr_fn="match_rms_adamw",
        )  # fmt: skip
        self.adamw = torch.optim.AdamW(rest, lr=config.lr, weight_decay=config.weight_decay)
        self.parts = (self.muon, self.adamw)

    def zero_grad(self) -> None:
        for part in self.parts:
            part.zero_grad()

    def step(self) -> None:
        for part in self.parts:
            part.step()


@pytest.mark.parametrize("scheduler", ["none", "onecycle"])
def test_muon_steps_as_torchs_muon_on_the_matrices_and_adamw_on_the_rest(scheduler: str) -> None:
    """`--optimizer muon` on an MLP: its hidden matrix by torch.optim.Muon, the head and the biases by AdamW; one-cycle
    sets both rates and cycles Muon's momentum as torch's OneCycleLR cycles it."""
    torch.manual_seed(0)
    config = TrainConfig(optimizer="muon", scheduler=scheduler, lr=3e-3, weight_decay=1e-2)
    ours_model = create_model("mlp", hidden=32)
    ref_model = copy.deepcopy(ours_model)
    ours = optim.for_config(ours_model, config)
    assert isinstance(ours, muon.Muon)
    ours.ns_dtype = torch.bfloat16  # as torch's (here chosen by the machine: float32 where bf16 is emulated)
    assert [[tuple(p.shape) for p in g["params"]] for g in ours.param_groups] == [[(32, 784)], [(32,), (10, 32), (10,)]]
    assert [g["muon"] for g in ours.param_groups] == [True, False]
    ref = Both(ref_model, config)
    ours_sched, ref_scheds = ours_optim.schedule_for(ours, config, STEPS), []
    if scheduler == "onecycle":
        ref_scheds = [
            torch.optim.lr_scheduler.OneCycleLR(part, max_lr=config.lr, total_steps=STEPS, pct_start=0.25)
            for part in ref.parts
        ]
    x, y = torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,))
    for _ in range(STEPS - 1):
        for model, opt in ((ours_model, ours), (ref_model, ref)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        for sched in [ours_sched, *ref_scheds]:
            if sched is not None:
                sched.step()
        if scheduler == "onecycle":
            assert ours.param_groups[0]["betas"][0] == pytest.approx(ref.muon.param_groups[0]["momentum"])
            assert ours.param_groups[0]["lr"] == pytest.approx(ref.muon.param_groups[0]["lr"], rel=1e-9)
    for a, b in zip(ours_model.parameters(), ref_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_muon_steps_a_convolution_as_the_matrix_of_its_out_channels() -> None:
    """A 4-d weight (out, in, kh, kw) steps as torch's Muon steps the (out, in x kh x kw) matrix: the rate scaled by
    0.2 sqrt(in x kh x kw), not by its first two sizes."""
    torch.manual_seed(0)
    conv = torch.nn.Parameter(torch.randn(24, 12, 3, 3))
    flat = torch.nn.Parameter(conv.detach().reshape(24, -1).clone())
    ours = muon.Muon([{"params": [conv], "muon": True}], lr=0.02, betas=(0.95, 0.999), weight_decay=0.01)
    ours.ns_dtype = torch.bfloat16
    ref = torch.optim.Muon([flat], lr=0.02, weight_decay=0.01, momentum=0.95, adjust_lr_fn="match_rms_adamw")
    for _ in range(5):
        g = torch.randn(24, 12, 3, 3)
        conv.grad, flat.grad = g.clone(), g.reshape(24, -1).clone()
        ours.step()
        ref.step()
    assert torch.equal(conv.detach().reshape(24, -1), flat.detach())


@pytest.mark.parametrize("steps", [3, 5])
def test_orthogonalise_brings_every_singular_value_near_one(steps: int) -> None:
    torch.manual_seed(0)
    for shape in [(24, 108), (128, 432), (10, 3)]:
        matrix = torch.randn(shape) * torch.logspace(-2, 0, shape[1])  # columns of very different sizes
        values = torch.linalg.svdvals(muon.orthogonalise(matrix, steps))
        assert values.shape == (min(shape),)
        assert 0.3 < values.min() and values.max() < 1.3, (shape, values.min(), values.max())
    assert muon.orthogonalise(torch.zeros(4, 6)).abs().max() == 0  # no update, not NaN


def test_muon_resumes_bit_for_bit_and_keeps_its_groups() -> None:
    """Through a checkpoint (safetensors and JSON): its groups, their kinds and its momentum buffers come back."""
    n, m = 7, 6
    torch.manual_seed(0)
    start = create_model("lenet")
    config = TrainConfig(optimizer="muon", scheduler="onecycle", lr=3e-3, weight_decay=1e-2)

    def fresh() -> tuple[torch.nn.Module, Any, Any]:
        model = copy.deepcopy(start)
        opt = optim.for_config(model, config)
        return model, opt, optim.schedule_for(opt, config, n + m)

    saved = assert_resumes_bit_for_bit(fresh, n, m)
    assert [g["muon"] for g in saved["param_groups"]] == [True, False]
    matrix, other = (str(g["params"][0]) for g in saved["param_groups"])
    assert set(saved["state"][matrix]) == {"momentum_buffer"}
    assert set(saved["state"][other]) == {"step", "exp_avg", "exp_avg_sq"}
    other_opt = fresh()[1]
    adam = optim.Adam([{"params": g["params"]} for g in other_opt.param_groups], lr=0.1)
    with pytest.raises(ValueError, match="not a Muon"):
        other_opt.load_state_dict(through_disk(adam.state_dict()))


def test_muon_leaves_a_classifiers_head_and_vectors_to_adamw_and_takes_momentum() -> None:
    """MIL's attention scores with a 1 x 128 weight (a vector in effect): AdamW's, as the classifier's head and the
    biases; `--momentum` is the first beta of both kinds (one-cycle cycles it)."""
    model = create_model("mil")
    opt = optim.for_config(model, TrainConfig(optimizer="muon", lr=1e-3, momentum=0.8))
    names = {id(p): n for n, p in model.named_parameters()}
    matrices, rest = ([names[id(p)] for p in g["params"]] for g in opt.param_groups)
    assert all(p.ndim >= 2 and min(p.shape[0], p.numel() // p.shape[0]) > 1 for p in opt.param_groups[0]["params"])
    assert any(model.get_parameter(n).ndim >= 2 for n in rest)  # the 1-row scoring weight
    assert not any(n.startswith("head.") for n in matrices)
    assert [g["betas"][0] for g in opt.param_groups] == [0.8, 0.8]
