"""Calibrated confidences as a user meets them: `mnist train` fits a temperature, `eval` and `predict` use it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mnistcli import store
from mnistcli.cli import app
from mnistcli.data import mnist
from tests.helpers import make_digits, save_png, write_mnist

LINEAR = ["train", "linear", "--epochs", "2", "--batch-size", "20", "--json"]


@pytest.fixture(scope="module")
def thousand_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic MNIST with 1,000 training images: enough for the default 5% calibration split (50)."""
    return write_mnist(tmp_path_factory.mktemp("mnist-1k"), n_train=1000, n_test=100)


@pytest.fixture
def thousand(thousand_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MNIST_DATA_DIR", str(thousand_dir))
    return thousand_dir


@pytest.fixture
def pngs(tmp_path: Path) -> list[str]:
    images, _ = make_digits(6, seed=9)
    return [str(save_png(img, tmp_path / f"{i}.png")) for i, img in enumerate(images)]


def train(runner: CliRunner, *args: str) -> dict:
    """Train through the CLI; returns the run's meta.json."""
    result = runner.invoke(app, [*LINEAR, *args])
    assert result.exit_code == 0, result.output
    return store.read_meta(Path(json.loads(result.stdout)["path"]))


def set_temperature(run: Path, temperature: float) -> None:
    meta = json.loads((run / "meta.json").read_text())
    meta["calibration"] = {**meta.get("calibration", {}), "temperature": temperature}
    (run / "meta.json").write_text(json.dumps(meta))


def predict(runner: CliRunner, ref: str, images: list[str], *extra: str) -> list[dict]:
    result = runner.invoke(app, ["predict", "-c", ref, *images, *extra, "--json"])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def rows(images: np.ndarray) -> set[bytes]:
    return {image.tobytes() for image in images}


@pytest.fixture(scope="module")
def calibrated_once(thousand_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A `linear` run named `cal` trained once per module with the defaults, watched by spies: returns its runs
    folder and the images the training loop got and the images the temperature was fitted on."""
    from mnistcli.families.classify import ClassifyFamily as Classify

    seen: dict[str, list[np.ndarray]] = {"fit": [], "calibrated": []}
    real_prepare, real_calibrate = Classify.prepare, Classify.calibrate

    def spy_fit(self, data):  # type: ignore[no-untyped-def]
        seen["fit"].append(data.train.images.cpu().numpy())
        return real_prepare(self, data)

    def spy_eval(self, model, held):  # type: ignore[no-untyped-def]
        seen["calibrated"].append(held.images.cpu().numpy())
        return real_calibrate(self, model, held)

    home = tmp_path_factory.mktemp("calibrated-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Classify, "prepare", spy_fit)
        patch.setattr(Classify, "calibrate", spy_eval)
        env = {"MNISTCLI_HOME": str(home), "MNIST_DATA_DIR": str(thousand_dir)}
        result = CliRunner().invoke(app, [*LINEAR, "--name", "cal"], env=env)
    assert result.exit_code == 0, result.output
    return home / "runs", seen


@pytest.fixture
def cal(calibrated_once: tuple[Path, dict], thousand: Path, isolated_home: Path) -> dict:
    """The module's calibrated run `cal`, copied into this test's home; returns its meta.json."""
    shutil.copytree(calibrated_once[0], isolated_home / "runs")
    return store.read_meta(isolated_home / "runs" / "cal")


def test_a_classifier_is_calibrated_on_training_images_it_did_not_train_on(
    cal: dict, calibrated_once: tuple[Path, dict], thousand: Path
) -> None:
    calibration = cal["calibration"]
    assert calibration["fitted_on"] == "calibration" and calibration["images"] == 50
    assert calibration["temperature"] > 0 and calibration["temperature"] != 1.0 and calibration["mistakes"] > 0
    assert cal["data"]["calibration_images"] == 50 and cal["data"]["train_images"] == 950
    [trained_on], [held] = calibrated_once[1]["fit"], calibrated_once[1]["calibrated"]
    train_split, test_split = mnist.load_split("train", thousand), mnist.load_split("test", thousand)
    assert len(held) == 50 and rows(held) <= rows(train_split.images)  # training images...
    assert not rows(held) & rows(trained_on)  # ...that it never trained on...
    assert not rows(held) & rows(test_split.images)  # ...and never the test set


def test_eval_reports_the_calibration_error_before_and_after(runner: CliRunner, cal: dict) -> None:
    result = runner.invoke(app, ["eval", "cal", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["temperature"] == pytest.approx(cal["calibration"]["temperature"])
    assert 0 <= report["ece"] <= 1 and 0 <= report["ece_uncalibrated"] <= 1
    assert report["ece"] != report["ece_uncalibrated"]
    table = runner.invoke(app, ["eval", "cal"])
    assert "expected calibration error" in table.stdout and "uncalibrated" in table.stdout


def test_validation_split_no_calibrate_and_seeds(runner: CliRunner, cal: dict) -> None:
    val = train(runner, "--val-split", "0.2")
    assert val["calibration"]["fitted_on"] == "validation" and val["calibration"]["images"] == 200
    assert val["data"]["calibration_images"] == 0 and val["data"]["train_images"] == 800
    off = train(runner, "--no-calibrate")
    assert off["calibration"]["temperature"] == 1.0 and off["calibration"]["fitted_on"] is None
    assert off["data"]["train_images"] == 1000 and off["config"]["calibrate"] is False
    again = train(runner)  # seed 0, as `cal` was
    assert again["calibration"] == cal["calibration"]  # the same split, model and temperature


def test_too_few_held_out_images_leave_the_softmax_as_it_is(runner: CliRunner, synthetic_env: Path) -> None:
    meta = train(runner)  # 300 training images: 5% is 15, fewer than the 50 a fit needs
    assert meta["calibration"]["temperature"] == 1.0 and "fewer than 50" in meta["calibration"]["note"]
    assert meta["data"]["train_images"] == 300


def test_predict_divides_the_logits_by_the_temperature(
    runner: CliRunner, cal: dict, isolated_home: Path, pngs: list[str]
) -> None:
    t = cal["calibration"]["temperature"]
    shutil.copytree(isolated_home / "runs" / "cal", isolated_home / "runs" / "raw")
    set_temperature(isolated_home / "runs" / "raw", 1.0)
    calibrated, raw = predict(runner, "cal", pngs), predict(runner, "raw", pngs)
    for c, r in zip(calibrated, raw, strict=True):
        assert c["digit"] == r["digit"]  # a temperature changes no answer...
        p, q = np.array(c["probabilities"]), np.array(r["probabilities"])
        sure = (p > 1e-3) & (q > 1e-3)
        # ...only its confidence: log p_i - log p_j = (z_i - z_j) / T
        assert np.log(p[sure] / p[sure].max()) == pytest.approx(np.log(q[sure] / q[sure].max()) / t, abs=0.02)
    set_temperature(isolated_home / "runs" / "raw", 1e6)
    for row in predict(runner, "raw", pngs):
        assert row["probabilities"] == pytest.approx([0.1] * 10, abs=1e-4)


def test_bundled_checkpoint_with_its_temperature_and_without_one(
    runner: CliRunner, synthetic_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pngs: list[str]
) -> None:
    [bundled] = store.bundled_runs()
    assert 0 < bundled.temperature < 1  # as shipped: calibrated (a label-smoothed cnn is sharpened)
    report = json.loads(runner.invoke(app, ["eval", "--json"]).stdout)
    assert report["checkpoint"] == bundled.name and report["temperature"] == bundled.temperature
    assert report["ece"] != report["ece_uncalibrated"]
    copy = tmp_path / "pretrained"
    shutil.copytree(store.BUNDLED_ROOT, copy)
    monkeypatch.setattr(store.runs, "BUNDLED_ROOT", copy)
    meta_path = copy / bundled.name / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["calibration"]  # as a checkpoint from before calibration existed
    meta_path.write_text(json.dumps(meta))
    report = json.loads(runner.invoke(app, ["eval", "--json"]).stdout)
    assert report["temperature"] == 1.0 and report["ece"] == report["ece_uncalibrated"]
    set_temperature(copy / bundled.name, 1e6)
    for row in predict(runner, bundled.name, pngs):
        assert row["probabilities"] == pytest.approx([0.1] * 10, abs=1e-4)


def test_a_bad_temperature_is_a_one_line_error(runner: CliRunner, cal: dict, isolated_home: Path) -> None:
    set_temperature(isolated_home / "runs" / "cal", -1.0)
    result = runner.invoke(app, ["eval", "cal"])
    assert result.exit_code == 1 and "positive 'temperature'" in result.output
    assert "Traceback" not in result.output


def test_the_adder_calibrates_both_heads(runner: CliRunner, synthetic_env: Path, pngs: list[str]) -> None:
    result = runner.invoke(
        app, "train adder --epochs 1 --batch-size 32 --no-augment --val-split 0.2 --name add --json".split()
    )
    assert result.exit_code == 0, result.output
    calibration = store.resolve("add").meta["calibration"]
    assert calibration["fitted_on"] == "validation"
    assert calibration["temperature"] > 0 and calibration["sum"]["temperature"] > 0
    report = json.loads(runner.invoke(app, ["eval", "add", "--json"]).stdout)
    assert report["digit_temperature"] == pytest.approx(store.resolve("add").temperature)
    assert report["temperature"] == pytest.approx(store.resolve("add").sum_temperature)
    for key in ("ece", "ece_uncalibrated", "digit_ece", "digit_ece_uncalibrated"):
        assert 0 <= report[key] <= 1
    set_temperature(store.resolve("add").path, 1e6)  # the digit head's: the sum keeps its own
    for row in predict(runner, "add", pngs, "--add", "3"):
        assert row["digit_probabilities"] == pytest.approx([0.1] * 10, abs=1e-4)
        assert max(row["sum_probabilities"]) > 1 / 19 + 0.01
