"""SimCLR: the NT-Xent loss, the views, the linear probe, and the commands a user runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mnistcli.cli import app
from mnistcli.data.augment import contrastive_view
from mnistcli.data.tensors import TensorData
from mnistcli.families.contrastive import nt_xent
from mnistcli.protocols.inference import dataset_features
from mnistcli.protocols.linear_probe import frozen, linear_evaluation, pixels
from mnistcli.registry import create_model
from tests.helpers import make_digits, save_png


def test_nt_xent_matches_a_hand_computation() -> None:
    # Two images, each view identical to its pair and orthogonal to the other image's views.
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    z = torch.stack([e1, e2, e1, e2])
    tau = 0.5
    loss, hits = nt_xent(z, tau)
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + 2 * math.exp(0)))
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert int(hits) == 4


def test_views_are_random_valid_images_and_repeatable() -> None:
    images, _ = make_digits(16, seed=1)
    x = torch.from_numpy(images).float().unsqueeze(1) / 255
    a = contrastive_view(x, torch.Generator().manual_seed(0))
    b = contrastive_view(x, torch.Generator().manual_seed(0))
    c = contrastive_view(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and float(a.min()) >= 0 and float(a.max()) <= 1
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c) and not torch.allclose(a, x)


def test_linear_probe_on_pixels_learns_the_synthetic_digits() -> None:
    train_x, train_y = make_digits(300, seed=1)
    test_x, test_y = make_digits(100, seed=2)
    cpu = torch.device("cpu")
    result = linear_evaluation(
        pixels, TensorData.from_numpy(train_x, train_y, cpu), TensorData.from_numpy(test_x, test_y, cpu)
    )
    assert result.accuracy > 0.6 and result.confusion.sum() == 100  # chance is 0.1
    few = linear_evaluation(
        pixels, TensorData.from_numpy(train_x, train_y, cpu), TensorData.from_numpy(test_x, test_y, cpu), 3
    )
    assert 0.1 < few.accuracy <= 1.0


def test_a_probe_reads_the_encoder_in_eval_mode_and_leaves_its_mode_alone() -> None:
    cpu = torch.device("cpu")
    train = TensorData.from_numpy(*make_digits(200, seed=1), cpu)
    test = TensorData.from_numpy(*make_digits(50, seed=2), cpu)
    torch.manual_seed(0)
    model = create_model("simclr", width=4)
    (x, _), *_ = train.batches(len(train))
    with torch.no_grad():
        in_training = model.features(x)  # batch statistics
        model.eval()
        expected = model.features(x)  # running statistics: what a frozen encoder gives
        model.train()
    assert not torch.equal(in_training, expected)
    assert torch.equal(dataset_features(frozen(model), train), expected)
    assert torch.equal(dataset_features(model, train), expected) and model.training
    result = linear_evaluation(frozen(model), train, test, labels_per_class=3)
    assert model.training and result.total == 50


@pytest.mark.slow  # trains simclr, then its linear evaluation
def test_train_eval_embed_and_refusals(runner: CliRunner, synthetic_env: Path, tmp_path: Path) -> None:
    trained = runner.invoke(
        app, ["train", "simclr", "--epochs", "1", "--arg", "width=8", "--batch-size", "100", "--json"]
    )
    assert trained.exit_code == 0, trained.output
    summary = json.loads(trained.stdout)
    report = json.loads(runner.invoke(app, ["eval", summary["run"], "--json"]).stdout)
    assert report["protocol"] == "linear" and report["accuracy"] == pytest.approx(summary["test_accuracy"])
    assert 0 < report["pixels_accuracy"] <= 1 and report["total"] == 100
    few = json.loads(runner.invoke(app, ["eval", summary["run"], "--labels-per-class", "5", "--json"]).stdout)
    assert few["labels_per_class"] == 5
    png = save_png(make_digits(1, seed=4)[0][0], tmp_path / "one.png")
    embedded = json.loads(runner.invoke(app, ["embed", str(png), "-c", summary["run"], "--json"]).stdout)
    assert len(embedded["embedding"]) == 8 * 4 * 9
    refused = runner.invoke(app, ["predict", str(png), "-c", summary["run"]])
    assert refused.exit_code == 1 and "is a contrastive model" in refused.stderr
    classifier = runner.invoke(app, ["eval", "cnn-pretrained", "--labels-per-class", "5"])
    assert classifier.exit_code == 2 and "of self-supervised checkpoints" in classifier.stderr


@pytest.mark.slow
def test_one_epoch_of_simclr_beats_pixels_on_real_mnist(runner: CliRunner, real_mnist: Path) -> None:
    summary = json.loads(runner.invoke(app, ["train", "simclr", "--epochs", "1", "--json"]).stdout)
    report = json.loads(runner.invoke(app, ["eval", summary["run"], "--labels-per-class", "10", "--json"]).stdout)
    assert summary["test_accuracy"] >= 0.97  # linear evaluation with all labels after one epoch
    assert report["accuracy"] > report["pixels_accuracy"] + 0.05
    assert np.isclose(sum(r["total"] for r in report["per_class"]), 10_000)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "simclr", "--target-accuracy", "0.9"], "--target-accuracy is for classifiers"),
        (["train", "simclr", "--batch-size", "1"], "at least 2 for a contrastive model"),
        (["eval", "cnn-pretrained", "--labels-per-class", "3"], "of self-supervised checkpoints"),
    ],
)
def test_simclr_usage_errors(runner: CliRunner, synthetic_env: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and message in result.stderr, result.output


def test_too_many_labels_per_class(runner: CliRunner, synthetic_env: Path) -> None:
    trained = runner.invoke(
        app, ["train", "simclr", "--epochs", "1", "--arg", "width=4", "--batch-size", "100", "--json"]
    )
    run = json.loads(trained.stdout)["run"]
    result = runner.invoke(app, ["eval", run, "--labels-per-class", "31"])  # 30 training images of each digit
    assert result.exit_code == 2 and "at most 30" in result.stderr
