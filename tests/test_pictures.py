"""Run logs, TensorBoard events, the terminal loss chart and the PNG pictures: written, well-formed, honest."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from mnistcli import api, paths, store
from mnistcli.cli import app
from mnistcli.engine import tensorboard as tb_events
from mnistcli.errors import Interrupted, UsageError
from mnistcli.render import plots
from mnistcli.render.train import loss_chart
from mnistcli.store.runlog import read_log
from tests.helpers import make_digits, save_png


def _png(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()  # decodes the whole file
        return image.size


def test_training_logs_steps_and_epochs_as_it_goes(runner: CliRunner, synthetic_env: Path) -> None:
    result = runner.invoke(app, "train linear --epochs 2 --batch-size 10 --name logged --json".split())
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    steps, epochs = read_log(Path(summary["log"]))
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert [s["step"] for s in steps] == list(range(10, 61, 10))  # every 10 of the 60 steps
    assert all(s["recent_loss"] > 0 and 0 <= s["accuracy"] <= 1 for s in steps)
    assert epochs[-1]["train_loss"] == pytest.approx(summary["history"][-1]["train_loss"])


def test_an_interrupted_run_keeps_its_log_and_can_be_plotted(synthetic_env: Path, tmp_path: Path) -> None:
    def stop(info: object) -> None:
        raise KeyboardInterrupt

    with pytest.raises(Interrupted, match="0 of 3 epochs done and saved"):  # stopped before epoch 1 was saved
        api.train("linear", {"epochs": 3, "batch_size": 10}, name="cut", on_epoch=stop)
    folder = store.run_folder("cut")
    steps, epochs = read_log(folder / "log.jsonl")
    assert len(epochs) == 1 and len(steps) == 3  # everything up to the interruption
    assert not (folder / "meta.json").exists() and store.list_runs() == []
    assert api.interrupted_runs() == ["cut"]
    report = api.plot(["cut"], tmp_path)
    assert [kind for kind, _ in report.files] == ["learning curves"]
    assert any("interrupted" in note for note in report.notes)
    assert _png(Path(report.files[0][1]))[0] > 600


@pytest.mark.slow  # trains two runs and draws five PNGs
def test_plot_draws_curves_confusion_and_mistakes(runner: CliRunner, synthetic_env: Path, tmp_path: Path) -> None:
    for name in ("a", "b"):
        trained = runner.invoke(app, f"train linear --epochs 2 --batch-size 50 --val-split 0.2 --name {name}".split())
        assert trained.exit_code == 0, trained.output
    pics = tmp_path / "pics" / "a"  # the README's `-o pics/`: created when missing
    one = runner.invoke(app, ["plot", "a", "-o", str(pics)])
    assert one.exit_code == 0, one.output
    assert {p.name for p in pics.iterdir()} == {"a-curves.png", "a-confusion.png", "a-mistakes.png"}
    assert f"to {pics / 'a-curves.png'}" in one.stderr  # says where each picture went
    both = runner.invoke(app, ["plot", "a", "b", "-o", str(tmp_path), "--json"])
    files = {Path(f["path"]).name: f["kind"] for f in json.loads(both.stdout)["files"]}
    assert files["curves.png"] == "learning curves" and "b-confusion.png" in files
    for name in files:
        width, height = _png(tmp_path / name)
        assert width > 300 and height > 300
    bad = runner.invoke(app, ["plot", "a", "-o", str(pics / "a-curves.png")])
    assert bad.exit_code == 2 and "not a folder" in bad.stderr
    unknown = runner.invoke(app, ["plot", "nope", "-o", str(tmp_path)])
    assert unknown.exit_code == 1 and "no checkpoint 'nope'" in unknown.stderr


@pytest.mark.slow  # draws a PNG with matplotlib: about 1 s
def test_predict_plot_draws_images_beside_their_bars(runner: CliRunner, tmp_path: Path) -> None:
    paths = [str(save_png(image, tmp_path / f"{i}.png")) for i, image in enumerate(make_digits(3, seed=2)[0])]
    out = tmp_path / "bars.png"
    result = runner.invoke(app, ["predict", *paths, "--plot", str(out)])
    assert result.exit_code == 0, result.output
    assert "3 images with probability bars" in result.stderr
    width, height = _png(out)
    assert height > width / 2  # three rows
    refused = runner.invoke(app, ["predict", paths[0], "--add", "3", "--plot", str(out)])
    assert refused.exit_code == 2 and "does not apply with --add" in refused.stderr


def test_missing_optional_packages_get_one_clear_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    with pytest.raises(UsageError, match=r"pip install 'mnistcli\[plot\]'"):
        plots.check_writable(tmp_path / "x.png")
    monkeypatch.setattr(tb_events.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UsageError, match=r"pip install 'mnistcli\[tensorboard\]'"):
        tb_events.require()


def test_tensorboard_event_files_are_readable(runner: CliRunner, synthetic_env: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = runner.invoke(app, "train linear --epochs 2 --batch-size 10 --tensorboard --name tb --json".split())
    assert result.exit_code == 0, result.output
    events = EventAccumulator(json.loads(result.stdout)["tensorboard"])
    events.Reload()
    tags = events.Tags()
    assert {"train/loss", "train/accuracy", "train/lr", "epoch/train_loss", "test/accuracy"} <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("train/loss")] == list(range(10, 61, 10))
    assert events.Scalars("test/accuracy")[0].value == pytest.approx(json.loads(result.stdout)["test_accuracy"])
    assert "test/examples" in tags["images"]


def test_the_terminal_loss_chart_falls_with_the_loss() -> None:
    chart = loss_chart([2.0, 1.0, 0.5, 0.25], height=4, width=8).plain.splitlines()
    assert chart[0].startswith("training loss") and len(chart) == 1 + 4 + 1
    assert chart[1].strip().startswith("2 ┤") and chart[4].strip().startswith("0.25 ┤")
    assert chart[1].endswith("██      ")  # the first points reach the top row, the last ones do not


def test_interrupted_and_failed_runs_do_not_get_in_the_way(
    synthetic_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok = api.train("linear", {"epochs": 1, "batch_size": 50}, name="good")

    def stop(info: object) -> None:
        raise KeyboardInterrupt

    with pytest.raises(Interrupted, match="resume with `mnist train --resume linear`"):  # named like a model
        api.train("linear", {"epochs": 2, "batch_size": 50}, name="linear", on_epoch=stop)
    assert store.resolve("linear").path == ok.run.path  # the model name still finds the real run
    with pytest.raises(Exception, match="interrupted before saving"):
        store.check_new_name("linear")

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("diverged at the first step")

    monkeypatch.setattr("mnistcli.engine.loop.Loop.run", fail)
    with pytest.raises(RuntimeError):  # fails before anything was logged: no folder is left behind
        api.train("linear", {"epochs": 1, "batch_size": 50}, name="failed")
    assert not (paths.runs_dir() / "failed").exists()


def test_a_diverged_run_still_logs_json(tmp_path: Path) -> None:
    from mnistcli.engine.loop import StepInfo
    from mnistcli.store.runlog import RunLog

    log = RunLog(tmp_path / "log.jsonl")
    log.step(StepInfo(1, 1, 10, 10, float("nan"), 0.1, 0.01, float("inf"), 1.0))
    log.close()
    line = (tmp_path / "log.jsonl").read_text()
    event = json.loads(line)  # strict JSON: no NaN or Infinity tokens
    assert "NaN" not in line and event["loss"] is None and event["recent_loss"] is None


@pytest.mark.slow  # trains two runs and draws seven PNGs
def test_plot_labels_runs_of_one_name_apart_and_says_when_nothing_can_be_drawn(
    runner: CliRunner, synthetic_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert runner.invoke(app, "train linear --epochs 1 --batch-size 50 --name a".split()).exit_code == 0
    first = store.run_folder("a")
    other_home = tmp_path / "other"
    monkeypatch.setenv("MNISTCLI_HOME", str(other_home))
    assert runner.invoke(app, "train linear --epochs 1 --batch-size 50 --name a".split()).exit_code == 0
    out = tmp_path / "pics"
    out.mkdir()
    result = runner.invoke(app, ["plot", str(first), "a", str(first), "-o", str(out), "--json"])
    names = sorted(Path(f["path"]).name for f in json.loads(result.stdout)["files"])
    assert names == ["a-2-confusion.png", "a-2-mistakes.png", "a-confusion.png", "a-mistakes.png", "curves.png"]
    (other_home / "runs" / "empty").mkdir()
    (other_home / "runs" / "empty" / "log.jsonl").write_text("")
    nothing = runner.invoke(app, ["plot", "empty", "-o", str(out)])
    assert nothing.exit_code == 1 and "nothing to draw" in nothing.stderr
    jpg = runner.invoke(app, ["plot", "a", "-o", str(out)]).exit_code
    assert jpg == 0
    refused = runner.invoke(
        app,
        ["predict", str(save_png(make_digits(1, seed=1)[0][0], tmp_path / "q.png")), "--plot", str(tmp_path / "x.jpg")],
    )
    assert refused.exit_code == 2 and "ending in .png" in refused.stderr


def test_help_imports_no_heavy_packages() -> None:
    import subprocess

    code = (
        "import sys; from mnistcli.cli import main; sys.argv=['mnist','--help']\n"
        "try: main()\nexcept SystemExit: pass\n"
        "heavy = [m for m in ('torch', 'matplotlib', 'tensorboard', 'numpy') if m in sys.modules]\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
