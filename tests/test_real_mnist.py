"""Slow tests on the real MNIST files (MNIST_DATA_DIR; CI sets it): the claims a user relies on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mnistcli.cli import app
from mnistcli.data import mnist
from mnistcli.data.idx import read_idx
from tests.helpers import save_png

pytestmark = pytest.mark.slow


def test_reader_agrees_with_torchvision_on_the_real_files(real_mnist: Path, tmp_path: Path) -> None:
    import gzip

    from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

    for stem in mnist.RESOURCES:
        path = mnist.find_file(real_mnist, stem)
        assert path is not None
        raw = tmp_path / stem
        raw.write_bytes(gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes())
        np.testing.assert_array_equal(read_idx(path), read_sn3_pascalvincent_tensor(str(raw)).numpy())
    train = mnist.load_split("train", real_mnist)
    assert np.bincount(train.labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def test_bundled_cnn_works_out_of_the_box(runner: CliRunner, real_mnist: Path) -> None:
    result = runner.invoke(app, ["eval", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["checkpoint"] == "cnn-pretrained" and report["total"] == 10_000
    assert report["accuracy"] >= 0.994


def test_predict_on_the_test_set_as_pngs_gives_exactly_evals_accuracy(
    runner: CliRunner, real_mnist: Path, tmp_path: Path
) -> None:
    """All 10,000 test digits saved as PNG pass through predict's preprocessing untouched."""
    test = mnist.load_split("test", real_mnist)
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, image in enumerate(test.images):
        save_png(image, folder / f"{i:05d}.png")
    result = runner.invoke(app, ["predict", str(folder), "--json", "--checkpoint", "cnn-pretrained"])
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [int(Path(r["path"]).stem) for r in rows] == list(range(10_000))
    correct = int((np.array([r["digit"] for r in rows]) == test.labels).sum())
    evaluated = runner.invoke(app, ["eval", "cnn-pretrained", "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert correct == round(json.loads(evaluated.stdout)["accuracy"] * 10_000)


def test_train_linear_with_its_defaults_reaches_its_target(runner: CliRunner, real_mnist: Path) -> None:
    result = runner.invoke(app, ["train", "linear", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["test_accuracy"] >= 0.92


def test_one_epoch_of_cnn_passes_98_percent(runner: CliRunner, real_mnist: Path) -> None:
    result = runner.invoke(app, ["train", "cnn", "--epochs", "1", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["test_accuracy"] >= 0.98
    again = json.loads(runner.invoke(app, ["eval", summary["run"], "--json"]).stdout)
    assert again["accuracy"] == pytest.approx(summary["test_accuracy"])  # the saved checkpoint is the trained model


def test_one_epoch_of_siamese_on_three_digits_recognises_unseen_ones(runner: CliRunner, real_mnist: Path) -> None:
    """The few-shot setting: labels of 0, 1, 2 only (100 each); the other seven digits still separate."""
    result = runner.invoke(app, ["train", "siamese", "--classes", "0,1,2", "--per-class", "100", "--epochs", "1"])
    assert result.exit_code == 0, result.output
    report = json.loads(runner.invoke(app, ["eval", "siamese", "--shots", "1", "--episodes", "300", "--json"]).stdout)
    scores = {e["name"]: e for e in report["episodes"]}
    ten, unseen = scores["10-way 1-shot"], scores["7-way 1-shot (unseen)"]
    assert 0.40 < ten["pixels_accuracy"] < 0.48  # the raw-pixel anchor (about 43%)
    assert ten["accuracy"] >= ten["pixels_accuracy"] + 0.2
    assert unseen["accuracy"] >= unseen["pixels_accuracy"] + 0.15


def test_one_epoch_of_the_adder_gives_a_sum_as_good_as_its_digit(runner: CliRunner, real_mnist: Path) -> None:
    result = runner.invoke(app, ["train", "adder", "--epochs", "1", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["digit_accuracy"] >= 0.985 and summary["test_accuracy"] >= 0.985
    assert summary["digit_accuracy"] - summary["test_accuracy"] <= 0.005  # the sum is not the weak output
    report = json.loads(runner.invoke(app, ["eval", summary["run"], "--json"]).stdout)
    assert report["sum_accuracy"] == pytest.approx(summary["test_accuracy"]) and report["total"] == 10_000
