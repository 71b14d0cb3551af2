"""The training loop's own promises: gradient accumulation, autocast, sharding, metrics it does not name."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mnistcli.cli import app
from mnistcli.data.tensors import TensorData
from mnistcli.engine.dist import Dist
from mnistcli.engine.loop import Loop, Step
from mnistcli.engine.optim import SGD
from mnistcli.engine.sampling import Shuffled
from mnistcli.registry import create_model
from tests.helpers import make_digits, train_in_memory


def _data(n: int = 200) -> TensorData:
    images, labels = make_digits(n, seed=2)
    return TensorData.from_numpy(images, labels, torch.device("cpu"))


def test_accumulating_two_half_batches_is_one_whole_batch() -> None:
    from mnistcli.engine.callbacks import Report

    data = _data()
    weights, curves = [], []
    for batch, accumulate in ((50, 1), (25, 2)):
        torch.manual_seed(0)
        model = create_model("linear")
        options = {"epochs": 2, "batch_size": batch, "accumulate": accumulate, "optimizer": "sgd", "lr": 0.1}
        reports: list = []
        _, position = train_in_memory(model, "linear", data, options, callbacks=[Report(reports.append)])
        assert position.step == 2 * 200 // 50  # optimizer steps, not batches
        weights.append(model.state_dict())
        curves.append([(r.step, r.loss, r.recent_loss, r.accuracy) for r in reports])
    for key in weights[0]:
        torch.testing.assert_close(weights[0][key], weights[1][key], rtol=1e-5, atol=1e-6)
    assert [c[0] for c in curves[0]] == [c[0] for c in curves[1]]  # reported at the same optimizer steps
    for whole, halves in zip(curves[0], curves[1], strict=True):  # with the same running numbers
        torch.testing.assert_close(torch.tensor(whole[1:]), torch.tensor(halves[1:]), rtol=1e-4, atol=1e-5)


def test_bf16_autocast_trains() -> None:
    torch.manual_seed(0)
    model = create_model("cnn", width=4)
    _, position = train_in_memory(model, "cnn", _data(), {"epochs": 2, "batch_size": 40, "precision": "bf16"})
    losses = [e["train_loss"] for e in position.history]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[1] < losses[0]
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast computes in bf16, keeps fp32 weights


def test_fp16_without_cuda_is_refused(runner: CliRunner, synthetic_env: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = runner.invoke(app, ["train", "linear", "--precision", "fp16"])
    assert result.exit_code == 2 and "needs a CUDA device" in result.stderr


def test_auto_precision_is_bf16_only_where_the_device_computes_it(
    runner: CliRunner, synthetic_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from mnistcli.engine.device import native_bf16, resolve_precision

    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    assert resolve_precision("auto", cpu) == ("bf16" if native_bf16(cpu) else "fp32")
    assert resolve_precision("auto", torch.device("mps")) == "fp32"
    for native, recorded in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda native=native: native)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
        result = runner.invoke(app, ["train", "linear", "--epochs", "1", "--precision", "auto", "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["config"]["precision"] == recorded  # as it trained, never "auto"


def test_each_rank_takes_its_share_of_every_global_batch() -> None:
    index = torch.arange(10)
    shares = [Dist(rank, 3).shard(index) for rank in range(3)]
    assert sorted(torch.cat(shares).tolist()) == list(range(10)) and shares[1].tolist() == [1, 4, 7]
    pair = Dist(1, 2).shard((torch.arange(4), torch.arange(6)))
    assert [t.tolist() for t in pair] == [[1, 3], [1, 3, 5]]
    assert Dist().shard(index) is index


def test_the_loop_averages_metrics_it_does_not_know() -> None:
    """A family may report any metric; the loop divides each total by the items seen."""

    class Halves:
        def begin_epoch(self, generator: torch.Generator, epoch: int, model: torch.nn.Module) -> None: ...

        def batch(self, index: torch.Tensor) -> torch.Tensor:
            return index.float()

        def augment(self, batch: torch.Tensor) -> torch.Tensor:
            return batch

        def step(self, model: torch.nn.Module, batch: torch.Tensor) -> Step:
            loss = model(batch[:, None]).mean() * 0 + 1.0
            return Step(loss, {"accuracy": torch.tensor(len(batch) / 2), "odd": (batch % 2).sum()}, len(batch))

    seen: list[float] = []

    class Watch:
        key, last = "", False

        def on_fit_start(self, loop: Loop) -> None: ...
        def on_report(self, loop: Loop, info: object) -> None: ...
        def on_step_end(self, loop: Loop) -> None: ...
        def on_fit_end(self, loop: Loop) -> None: ...

        def on_epoch_end(self, loop: Loop, info: object) -> None:
            seen.append(info.train_accuracy)  # type: ignore[attr-defined]

    model = torch.nn.Linear(1, 1)
    generator = torch.Generator().manual_seed(0)
    loop = Loop(model, Halves(), SGD(model.parameters(), lr=0.1), Shuffled(9, 4), {"run": generator}, 1,
                callbacks=[Watch()])  # type: ignore[list-item]  # fmt: skip
    position = loop.run()
    assert position.step == 2  # 9 items in batches of 4: the last, single item joins the one before
    assert seen == [0.5] and loop.metrics == {"accuracy": 0.5, "odd": 4 / 9}  # 1, 3, 5, 7 of 0..8 are odd


def test_a_short_last_group_of_accumulated_batches_is_averaged_over_its_own_batches() -> None:
    """300 images in batches of 100 accumulated by 4: one step over three batches is their mean, as one batch of 300."""
    data = _data(300)
    weights = []
    for batch, accumulate in ((300, 1), (100, 4)):
        torch.manual_seed(0)
        model = create_model("linear")
        options = {"epochs": 1, "batch_size": batch, "accumulate": accumulate, "optimizer": "sgd", "lr": 0.5}
        train_in_memory(model, "linear", data, options)
        weights.append(model.state_dict())
    for key in weights[0]:
        torch.testing.assert_close(weights[0][key], weights[1][key], rtol=1e-5, atol=1e-6)
