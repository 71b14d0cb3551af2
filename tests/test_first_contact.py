"""What a new user trips over first: exit codes of options that make no sense, a model's arguments,
what to train when there is no run, output folders that do not exist yet, and JSON that says what answered."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mnistcli.cli import app
from tests.helpers import make_digits, save_png


def lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "nosuch"], "unknown model 'nosuch'; known: linear,"),
        (["train", "cnn", "--name", "../evil"], "invalid run name '../evil'"),
        (["train", "cnn", "--arg", "nosuch=3"], "model 'cnn' has no argument 'nosuch'; its arguments: width=16"),
        (["train", "linear", "--arg", "width=3"], "model 'linear' has no argument 'width'; it takes no arguments"),
        (["train", "cnn", "--arg", "width=-1"], "model 'cnn': width must be a whole number of at least 1, not -1"),
        (["models", "nosuch"], "unknown model 'nosuch'"),
        (["train", "linear", "--epochs", "99999999999999999999"], "--epochs must be at most 100,000"),
        (["train", "mlp", "--arg", "hidden=" + "[" * 5000 + "]" * 5000], "--arg hidden: a value of 10,000 characters"),
        (["train", "mlp", "--arg", "hidden=" + "1" * 5000], "--arg hidden: a value of 5,000 characters"),
    ],
)
def test_options_that_make_no_sense_exit_2_before_any_work(
    runner: CliRunner, synthetic_env: Path, args: list[str], message: str
) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert "unexpected keyword argument" not in result.stderr
    assert "epoch" not in result.stderr.replace("--epochs", "")  # refused before training


def test_models_name_shows_its_arguments_and_recipe(runner: CliRunner) -> None:
    card = runner.invoke(app, ["models", "cnn-fast", "--json"])
    assert card.exit_code == 0, card.output
    info = json.loads(card.stdout)
    assert info["args"] == {"width": 12, "hidden": 128, "stem_norm": False, "stem_kernel": 6, "stem_pad": False}
    assert info["recipe"]["epochs"] == 1 and info["config"]["epochs"] == 1
    assert info["config"]["check_every"] == 0.08 and info["config"]["momentum"] == 0.9  # recipe over defaults
    assert "margin" not in info["config"]  # a triplet model's option, not a classifier's
    table = runner.invoke(app, ["models", "mlp-deep"])
    assert table.exit_code == 0 and "dropout" in table.stdout and "0.2" in table.stdout and "--epochs" in table.stdout
    listed = {r["name"]: r for r in lines(runner.invoke(app, ["models", "--json"]).stdout)}
    assert listed["linear"]["args"] == {} and listed["siamese"]["args"]["dim"] == 128


@pytest.mark.parametrize("model", ["simclr", "siamese", "adder", "cnn-fast"])
def test_a_model_with_no_run_suggests_training_it(runner: CliRunner, model: str) -> None:
    result = runner.invoke(app, ["eval", model])
    assert result.exit_code == 1 and f"no {model} run yet: train one with `mnist train {model}`" in result.stderr


def test_json_lines_say_which_checkpoint_answered(runner: CliRunner, tmp_path: Path) -> None:
    images, _ = make_digits(4, seed=3)
    paths = [str(save_png(image, tmp_path / f"{i}.png")) for i, image in enumerate(images)]
    for command in ("predict", "embed"):
        rows = lines(runner.invoke(app, [command, *paths, "--json"]).stdout)
        assert len(rows) == 4
        assert all(r["checkpoint"] == "cnn-pretrained" and r["model"] == "cnn" for r in rows), command
    for r in lines(runner.invoke(app, ["predict", *paths, "--json"]).stdout):
        assert r["confidence"] == round(r["confidence"], 6) == max(r["probabilities"])
    support = tmp_path / "support"
    for label, i in (("a", 0), ("b", 1)):
        (support / label).mkdir(parents=True)
        save_png(images[i], support / label / "x.png")
    shot = runner.invoke(app, ["oneshot", "--support-dir", str(support), *paths[2:], "-c", "cnn-pretrained", "--json"])
    assert shot.exit_code == 0, shot.output
    assert [(r["checkpoint"], r["model"]) for r in lines(shot.stdout)] == [("cnn-pretrained", "cnn")] * 2


def test_pictures_go_into_folders_that_do_not_exist_yet(runner: CliRunner, tmp_path: Path) -> None:
    images, _ = make_digits(2, seed=4)
    paths = [str(save_png(image, tmp_path / f"{i}.png")) for i, image in enumerate(images)]
    out = tmp_path / "pics" / "today" / "bars.png"
    result = runner.invoke(app, ["predict", *paths, "--plot", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and str(out) in result.stderr
    blocked = runner.invoke(app, ["predict", *paths, "--plot", str(tmp_path / "0.png" / "bars.png")])
    assert blocked.exit_code == 2 and "0.png is a file, not a folder" in blocked.stderr


def test_an_unreadable_latest_run_is_named_not_silently_replaced(
    runner: CliRunner, synthetic_env: Path, isolated_home: Path
) -> None:
    """A run whose meta.json went bad is listed as unreadable, and a bare `mnist eval` names it
    rather than quietly evaluating an older run (found by the issue 12 review)."""
    train = ["train", "linear", "--epochs", "1", "--batch-size", "50", "--json"]
    for name in ("older", "newer"):
        assert runner.invoke(app, [*train, "--name", name]).exit_code == 0
    meta_path = isolated_home / "runs" / "newer" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["calibration"] = {"method": "temperature", "temperature": 0}
    meta_path.write_text(json.dumps(meta))
    listed = runner.invoke(app, ["checkpoints"])
    assert listed.exit_code == 0 and "newer: cannot be read" in listed.stderr and "temperature" in listed.stderr
    evaluated = runner.invoke(app, ["eval", "--json"])
    assert evaluated.exit_code == 1 and evaluated.stdout == ""
    assert "latest run 'newer' cannot be read" in evaluated.stderr and "checkpoints rm newer" in evaluated.stderr
    assert json.loads(runner.invoke(app, ["eval", "-c", "older", "--json"]).stdout)["accuracy"] >= 0  # named: fine
    assert runner.invoke(app, ["checkpoints", "rm", "newer"]).exit_code == 0
    assert runner.invoke(app, ["eval", "--json"]).exit_code == 0  # the older run is the latest again


def test_the_bundled_model_reports_calibrated_confidences() -> None:
    """What `mnist predict` uses right after install carries a fitted temperature (issue 12, item 8)."""
    from mnistcli import store

    bundled = store.bundled_runs()
    assert bundled and all(0 < run.temperature < 1 for run in bundled)  # a label-smoothed cnn is sharpened
