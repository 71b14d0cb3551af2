"""The adder: number draws, the sum head, evaluation breakdowns, and the commands a user runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mnistcli.cli import app
from mnistcli.config import TrainConfig
from mnistcli.data.tensors import TensorData
from mnistcli.families import Data
from mnistcli.families.adder import AdderFamily, AdderParams, evaluate_adder, held_out_numbers
from mnistcli.models.adder import Adder
from tests.helpers import make_digits, save_png


def _data(n: int = 60) -> TensorData:
    images, labels = make_digits(n, seed=3)
    return TensorData.from_numpy(images, labels, torch.device("cpu"))


def test_training_numbers_are_fresh_each_epoch_and_held_out_numbers_fixed_by_seed() -> None:
    data = _data()
    generator = torch.Generator().manual_seed(0)
    family = AdderFamily(AdderParams(), TrainConfig(), generator)
    family.prepare(Data(data, None, data, data, data))
    sampler = family.sampler(16)

    def epoch() -> tuple[torch.Tensor, torch.Tensor]:
        family.begin_epoch(generator, 1, torch.nn.Identity())
        batches = [family.batch(index) for index in sampler.epoch(generator)]
        return torch.cat([b[1] for b in batches]), torch.cat([b[2] for b in batches])

    epochs = [epoch() for _ in range(2)]
    for digits, numbers in epochs:
        assert sorted(digits.tolist()) == sorted(data.labels.tolist())  # every image once, digit intact
        assert numbers.min() >= 0 and numbers.max() <= 9
    assert not torch.equal(epochs[0][1], epochs[1][1])
    assert torch.equal(held_out_numbers(50, 3), held_out_numbers(50, 3)) and not torch.equal(
        held_out_numbers(50, 3), held_out_numbers(50, 4)
    )


def test_the_sum_head_adds_whatever_digit_the_digit_head_believes() -> None:
    torch.manual_seed(0)
    model = Adder(width=4).eval()
    with torch.no_grad():  # the addition table, by hand: cell (d, n) votes for sum d + n
        weight = torch.zeros(19, 100)
        for d in range(10):
            for n in range(10):
                weight[d + n, d * 10 + n] = 50.0
        model.sum_head.weight.copy_(weight)
        model.sum_head.bias.zero_()
    x = torch.rand(8, 1, 28, 28)
    n = torch.arange(8) % 10
    digit_logits, sum_logits = model(x, n)
    assert torch.equal(sum_logits.argmax(dim=1), digit_logits.argmax(dim=1) + n)


def test_evaluation_breakdowns_add_up() -> None:
    data = _data(100)
    numbers = held_out_numbers(100, 0)
    result = evaluate_adder(Adder(width=4), data, numbers)
    assert sum(t for _, t in result.by_number) == 100 and sum(t for _, t in result.by_sum) == 100
    assert [t for _, t in result.by_number] == torch.bincount(numbers, minlength=10).tolist()
    assert sum(c for c, _ in result.by_sum) == round(result.sum_accuracy * 100)
    assert len(result.by_sum) == 19 and 0 <= result.digit_accuracy <= 1


def test_train_eval_predict(runner: CliRunner, synthetic_env: Path, tmp_path: Path) -> None:
    trained = runner.invoke(app, "train adder --epochs 2 --arg width=8 --batch-size 50 --name a --json".split())
    assert trained.exit_code == 0, trained.output
    summary = json.loads(trained.stdout)
    assert summary["test_measure"] == "sum accuracy" and 0 <= summary["digit_accuracy"] <= 1

    evaluated = runner.invoke(app, ["eval", "a", "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads(evaluated.stdout)
    assert report["protocol"] == "adder" and report["total"] == 100 and report["seed"] == 0
    assert report["sum_accuracy"] == summary["test_accuracy"]  # the same pairs as training's own test
    assert report["digit_accuracy"] == summary["digit_accuracy"]
    assert [r["number"] for r in report["by_number"]] == list(range(10))
    assert [r["sum"] for r in report["by_sum"]] == list(range(19))
    other = json.loads(runner.invoke(app, ["eval", "a", "--seed", "5", "--json"]).stdout)
    assert [r["total"] for r in other["by_number"]] != [r["total"] for r in report["by_number"]]
    table = runner.invoke(app, ["eval", "a"])
    assert "sum accuracy by number added" in table.stdout and "by true sum" in table.stdout

    images, _ = make_digits(4, seed=8)
    paths = [str(save_png(image, tmp_path / f"{i}.png")) for i, image in enumerate(images)]
    predicted = runner.invoke(app, ["predict", *paths, "--add", "7", "--json"])
    assert predicted.exit_code == 0, predicted.output
    rows = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert [r["path"] for r in rows] == paths
    for r in rows:
        assert 0 <= r["digit"] <= 9 and 0 <= r["sum"] <= 18 and r["add"] == 7
        assert 0 < r["digit_confidence"] <= 1 and 0 < r["sum_confidence"] <= 1
        assert len(r["digit_probabilities"]) == 10 and len(r["sum_probabilities"]) == 19
    piped = runner.invoke(app, ["predict", paths[0], "--add", "2", "-c", "a"])
    assert piped.exit_code == 0 and len(piped.stdout.strip().split("\t")) == 5

    cases = [
        (["predict", paths[0], "-c", "a"], 2, "give the number to add with --add"),
        (["predict", paths[0], "--add", "10"], 2, "must be 0-9"),
        (["predict", paths[0], "--add", "-1", "-c", "a"], 2, "must be 0-9"),
        (["predict", paths[0], "--add", "3", "-c", "cnn-pretrained"], 2, "is a classify model"),
        (["eval", "a", "--fewshot"], 2, "do not apply to an adder"),
    ]
    for args, code, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == code and message in result.stderr, (args, result.output)
    unnamed = runner.invoke(app, ["predict", paths[0]])  # without --add the default is a classifier, not the adder
    assert unnamed.exit_code == 0 and unnamed.stdout.count("\t") == 2
    embedded = runner.invoke(app, ["embed", paths[0], "-c", "a", "--json"])
    assert embedded.exit_code == 0 and len(json.loads(embedded.stdout)["embedding"]) == 8 * 4 * 9


@pytest.mark.slow  # 30 epochs of training
def test_the_sum_is_learnt_and_eval_matches_training_with_classes(runner: CliRunner, synthetic_env: Path) -> None:
    args = "train adder --classes 0,1,2 --epochs 30 --arg width=8 --batch-size 32 --name cls --json"
    trained = runner.invoke(app, args.split())
    assert trained.exit_code == 0, trained.output
    summary = json.loads(trained.stdout)
    assert summary["test_accuracy"] >= 0.9  # the addition table is learnt, not just the digits
    assert summary["digit_accuracy"] - summary["test_accuracy"] <= 0.05
    report = json.loads(runner.invoke(app, ["eval", "cls", "--json"]).stdout)
    assert report["total"] == 30  # the test images of 0, 1, 2, as training's own test
    assert report["sum_accuracy"] == summary["test_accuracy"]
    assert report["by_sum"][18]["total"] == 0 and report["by_sum"][18]["accuracy"] is None  # 2 + 9 at most
    for args in (
        ["eval", "cls", "--shots", "1"],
        ["eval", "cls", "--episodes", "5"],
        ["eval", "cnn-pretrained", "--seed", "1"],
    ):
        refused = runner.invoke(app, args)
        assert refused.exit_code == 2 and "Traceback" not in refused.output, args
    huge = runner.invoke(app, ["eval", "cls", "--seed", str(2**64)])
    assert huge.exit_code == 2 and "Traceback" not in huge.output
    empty = runner.invoke(app, ["predict", "-", "--add", "33"], input="")
    assert empty.exit_code == 2 and "must be 0-9" in empty.stderr
