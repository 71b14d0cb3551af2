"""Every long wait reports progress: core code calls back (never prints), the CLI draws it on stderr."""

from __future__ import annotations

import io
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from rich.console import Console

from mnistcli import api
from mnistcli.api.common import load_tensors
from mnistcli.data import mnist
from mnistcli.protocols import linear_probe as linear_eval
from mnistcli.render import progress
from mnistcli.work import CHECKING, Counter, phase


class Recorder:
    """An `on_work` callback that keeps every call, by piece of work."""

    def __init__(self) -> None:
        self.calls: dict[str, list[tuple[int, int | None]]] = defaultdict(list)

    def __call__(self, what: str, done: int, total: int | None) -> None:
        self.calls[what].append((done, total))

    def check_well_formed(self) -> None:
        """Each piece counts up and ends with done == total (a piece may run again after it ended)."""
        for what, calls in self.calls.items():
            last = -1
            for done, total in calls:
                assert done >= last or last == -1, f"{what} went back: {calls}"
                last = -1 if done == total else done
            assert calls[-1][0] == calls[-1][1], f"{what} never ended: {calls[-3:]}"


def test_phase_and_counter_report_start_and_end() -> None:
    seen = Recorder()
    with pytest.raises(RuntimeError), phase(seen, "testing"):
        raise RuntimeError  # the end is reported even when the work fails
    counter = Counter(seen, "episodes", 250)
    for _ in range(2):
        counter.add(100)
    counter.finish()
    assert seen.calls == {"testing": [(0, None), (1, 1)], "episodes": [(0, 250), (100, 250), (200, 250), (250, 250)]}


def test_target_checks_and_the_test_are_reported(synthetic_env: Path) -> None:
    seen = Recorder()
    options = {"epochs": 2, "batch_size": 32, "target_accuracy": 0.999, "check_every": 0.5}
    api.train("linear", options, on_work=seen)
    seen.check_well_formed()
    assert seen.calls[CHECKING][:2] == [(0, None), (1, 1)]
    assert len(seen.calls[CHECKING]) == 2 * 2 * 2  # two checks an epoch, two epochs (0.999 is out of reach)
    assert seen.calls["testing"] == [(0, None), (1, 1)]


def test_an_embedding_model_reports_its_test_and_evaluation(synthetic_env: Path) -> None:
    trained = Recorder()
    options = {"epochs": 1, "batch_size": 20, "per_class": 10, "ssl_weight": 0}
    api.train("siamese", options, {"width": 4, "dim": 16}, name="s", on_work=trained)
    trained.check_well_formed()
    assert {"test: 10-way 1-shot episodes", "calibrating one-shot confidences"} <= set(trained.calls)

    evaluated = Recorder()
    api.evaluate("s", episodes=20, on_work=evaluated)
    evaluated.check_well_formed()
    assert evaluated.calls["few-shot episodes"][-1] == (2 * 2 * 20, 80)  # model and pixels, 1 and 5 shots
    nearest = "nearest neighbour: embedding the training images"
    assert evaluated.calls[nearest][-1] == (300, 300) and len(evaluated.calls[nearest]) > 1


def test_linear_evaluation_reports_its_work(synthetic_dir: Path) -> None:
    folder = mnist.resolve_dir(str(synthetic_dir))
    train, test = (load_tensors(split, folder, torch.device("cpu")) for split in ("train", "test"))
    probed = Recorder()
    linear_eval.linear_evaluation(linear_eval.pixels, train, test, labels_per_class=5, on_work=probed)
    probed.check_well_formed()
    assert set(probed.calls) == {
        "linear evaluation: encoding images",
        "linear evaluation: fitting the probe",
        "linear evaluation: testing",
    }
    assert probed.calls["linear evaluation: fitting the probe"][-1] == (300, 300)  # small sets: 300 full-batch steps


def test_the_training_bar_shows_real_numbers_and_what_it_waits_for(monkeypatch: pytest.MonkeyPatch) -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=120, color_system=None)
    monkeypatch.setattr(progress, "err", console)
    step = SimpleNamespace(epoch=1, epochs=2, step=10, total_steps=100, loss=0.5, accuracy=0.75)
    with progress.TrainProgress() as bar:
        bar.step(step)
        bar.work(CHECKING, 0, None)
        bar.progress.refresh()
        drawn = screen.getvalue()
        assert "epoch 1/2" in drawn and "loss 0.5000  acc 75.00%" in drawn and "checking accuracy…" in drawn
        assert "0.0000" not in drawn  # no made-up first frame
        bar.work(CHECKING, 1, 1)
        assert not bar.pieces  # the check's line is gone
        bar.epoch(
            SimpleNamespace(epoch=1, train_loss=0.5, train_accuracy=0.75, lr=0.01, seconds=12.34, val_accuracy=None)
        )
    assert "12.3 s elapsed" in screen.getvalue()
