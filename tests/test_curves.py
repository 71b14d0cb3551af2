"""Learning-curve pictures that read right: plain log ticks, no empty panel, the test star where training stopped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from mnistcli.api.plotting import _history
from mnistcli.render import plots

pytest.importorskip("matplotlib")


def width(path: Path) -> int:
    with Image.open(path) as image:
        return image.size[0]


STEPS = [{"step": s, "epochs": 2, "total_steps": 40, "recent_loss": 6.7 - 0.001 * s} for s in (10, 20, 30)]


@pytest.mark.slow  # draws a PNG with matplotlib: about 1 s
def test_a_run_with_no_finished_epoch_gets_no_empty_accuracy_panel(tmp_path: Path) -> None:
    alone = plots.learning_curves([plots.RunCurves("cut", STEPS, [])], tmp_path / "cut.png")
    epoch = [{"epoch": 1, "train_loss": 6.68, "train_accuracy": 0.5}]
    both = plots.learning_curves([plots.RunCurves("run", STEPS, epoch, 0.5)], tmp_path / "run.png")
    assert width(alone) < 0.7 * width(both)  # one panel, not two with one empty


def test_log_axis_ticks_are_plain_numbers() -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [6.62, 6.69])  # less than a decade: matplotlib would write 6.65x10^0
    ax.set_yscale("log")
    plots._plain_log_labels(ax.yaxis)
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.yaxis.get_ticklabels(minor=True) + ax.yaxis.get_ticklabels()]
    plt.close(fig)
    shown = [t for t in labels if t]
    assert shown and all("10^" not in t and "times" not in t for t in shown)
    assert [float(t) for t in shown]  # plain numbers, not mathtext


@pytest.mark.parametrize(
    ("metrics", "stopped_at"),
    [
        ({"target": {"reached": True, "epochs": 0.62}, "stopped_early": True, "best_epoch": None}, 0.62),
        ({"target": None, "stopped_early": True, "best_epoch": 3}, 3.0),  # early stopping kept epoch 3
        ({"target": {"reached": False}, "stopped_early": False, "best_epoch": None}, None),  # the last epoch
    ],
)
def test_the_test_result_sits_where_the_saved_weights_come_from(
    tmp_path: Path, metrics: dict, stopped_at: float | None
) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    history = [{"epoch": e, "train_loss": 1.0, "train_accuracy": 0.9} for e in (1, 2, 3, 4, 5)]
    meta = {"format": "mnistcli-checkpoint/1", "model": {"name": "cnn"}, "history": history}
    meta["metrics"] = {"test_accuracy": 0.99, "test_measure": "accuracy", **metrics}
    (folder / "meta.json").write_text(json.dumps(meta))
    curves = _history(folder, "run")
    assert curves.stopped_at == stopped_at and curves.test == 0.99 and len(curves.epochs) == 5
