"""Multiple-instance learning: the MNIST-bags protocol, the attention model, the family, and the commands."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner, Result

from mnistcli.cli import app
from mnistcli.data.bags import make_bags, pad
from mnistcli.families import bags as bags_family
from mnistcli.families.bags import epochs_for
from mnistcli.models.mil import AttentionMIL
from mnistcli.protocols.ranking import roc_auc


def test_bags_alternate_and_only_positive_bags_hold_the_target() -> None:
    labels = torch.arange(200) % 10
    bags, y = make_bags(labels, 40, 9, 10.0, 2.0, torch.Generator().manual_seed(0))
    assert y.tolist() == [1, 0] * 20
    for bag, positive in zip(bags, y.tolist(), strict=True):
        assert len(bag) >= 2
        assert bool((labels[bag] == 9).any()) == bool(positive)
    again, _ = make_bags(labels, 40, 9, 10.0, 2.0, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(bags, again, strict=True))
    other, _ = make_bags(labels, 40, 9, 10.0, 2.0, torch.Generator().manual_seed(1))
    assert not all(len(a) == len(b) and torch.equal(a, b) for a, b in zip(bags, other, strict=True))


def test_bag_sizes_follow_the_distribution_asked_for() -> None:
    labels = torch.arange(1000) % 10
    bags, _ = make_bags(labels, 2000, 3, 10.0, 2.0, torch.Generator().manual_seed(0))
    sizes = np.array([len(b) for b in bags])
    assert abs(sizes.mean() - 10) < 0.2 and abs(sizes.std() - 2) < 0.2 and sizes.min() >= 2


@pytest.mark.parametrize("pooling", ["attention", "gated", "max"])
def test_padding_changes_nothing_and_attention_is_a_distribution_over_the_bag(pooling: str) -> None:
    torch.manual_seed(0)
    model = AttentionMIL(pooling).eval()
    images = torch.randint(0, 256, (30, 28, 28), dtype=torch.uint8)
    short, long = torch.arange(3), torch.arange(3, 15)
    x, mask = pad(images, [short, long])
    assert x.shape == (2, 12, 1, 28, 28) and mask.sum(1).tolist() == [3, 12]
    with torch.no_grad():
        logits, weights = model(x, mask)
        alone, alone_weights = model(*pad(images, [short]))
        shuffled, _ = model(*pad(images, [short[torch.tensor([2, 0, 1])]]))
    assert torch.allclose(logits[0], alone[0], atol=1e-5)  # the padding of the short bag is ignored
    assert torch.allclose(weights[0, :3], alone_weights[0], atol=1e-6)
    assert torch.allclose(shuffled, alone, atol=1e-5)  # a bag is a set: order does not matter
    assert torch.all(weights[0, 3:] == 0) and torch.allclose(weights.sum(1), torch.ones(2))


def test_roc_auc_is_the_share_of_correctly_ordered_pairs() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 60).astype(float)  # many ties
    labels = rng.integers(0, 2, 60)
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairs = [(p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg)]
    assert roc_auc(scores, labels) == pytest.approx(np.mean(pairs))
    assert roc_auc(np.array([0.1, 0.9]), np.array([0, 1])) == 1.0
    assert roc_auc(np.array([0.1, 0.9]), np.array([1, 1])) is None
    assert roc_auc(np.array([np.nan, 1.0, 2.0, np.nan]), np.array([1, 0, 1, 0])) is None  # a diverged model


def test_bags_cannot_be_drawn_without_targets_or_without_others() -> None:
    from mnistcli.errors import DataError

    for labels, message in (
        (torch.zeros(20, dtype=torch.long), "no image of digit 9"),
        (torch.full((20,), 9), "only images of digit 9"),
    ):
        with pytest.raises(DataError, match=message):
            make_bags(labels, 4, 9, 10.0, 2.0, torch.Generator())


def _train(runner: CliRunner, *args: str) -> dict:
    # One epoch of pretraining (the recipe's 30 at these few bags cost time and test nothing more).
    result = runner.invoke(
        app, ["train", "mil", "--bags", "16", "--epochs", "1", "--pretrain-epochs", "1", "--json", *args]
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _stopped(runner: CliRunner, monkeypatch: pytest.MonkeyPatch, args: list[str], epoch: int) -> Result:
    """`mnist train ARGS`, with Ctrl-C when the progress bar hears of its `epoch`-th epoch (attempts count on)."""
    from mnistcli.render import progress

    real, heard = progress.TrainProgress.epoch, []

    def stop(self: progress.TrainProgress, info: object) -> None:
        real(self, info)  # type: ignore[arg-type]
        heard.append(info)
        if len(heard) == epoch:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(progress.TrainProgress, "epoch", stop)
        return runner.invoke(app, args)


def _resumes_as(runner: CliRunner, name: str, report: dict, key: str) -> dict:
    """`mnist train --resume NAME` ends as the uninterrupted run `report` did: the same `key` entry (restarts or
    attempts), test number and weights, bit for bit. Returns the resumed run's report."""
    from safetensors.torch import load_file

    result = runner.invoke(app, ["train", "--resume", name, "--json"])
    assert result.exit_code == 0, result.output
    again = json.loads(result.stdout)
    assert again[key] == report[key] and again["test_accuracy"] == report["test_accuracy"]
    a, b = load_file(Path(report["path"]) / "model.safetensors"), load_file(Path(again["path"]) / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    return again


def test_train_and_eval_a_mil_model_give_the_same_test_numbers(runner: CliRunner, synthetic_env: Path) -> None:
    report = _train(runner, "--name", "bags", "--remix", "1", "--augment")
    assert report["test_measure"] == "bag AUC" and 0 <= report["test_accuracy"] <= 1
    assert report["config"]["bags"] == 16 and report["config"]["target"] == 9
    evaluated = runner.invoke(app, ["eval", "bags", "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    got = json.loads(evaluated.stdout)
    assert got["protocol"] == "bags" and got["bags"] == 1000 and got["seed"] == 0
    assert got["auc"] == pytest.approx(report["test_accuracy"])
    assert got["attention_hit"] == pytest.approx(report["attention_hit"])
    assert got["bag_accuracy"] == pytest.approx(report["bag_accuracy"])
    other = json.loads(runner.invoke(app, ["eval", "bags", "--json", "--seed", "5"]).stdout)
    assert other["seed"] == 5 and other["auc"] != got["auc"]
    shown = runner.invoke(app, ["eval", "bags"])
    assert "bag AUC" in shown.output and "attention" in shown.output
    listed = runner.invoke(app, ["checkpoints"])
    assert f"AUC {report['test_accuracy']:.4f}" in listed.output  # a ratio, not a percentage
    listed_json = [json.loads(line) for line in runner.invoke(app, ["checkpoints", "--json"]).stdout.splitlines()]
    assert any(r["name"] == "bags" and r["test_measure"] == "bag AUC" for r in listed_json)


def test_the_recipes_epochs_shrink_with_more_training_bags_unless_epochs_are_given(
    runner: CliRunner, synthetic_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert [epochs_for(n, 15) for n in (2, 50, 100, 200, 500)] == [75, 15, 11, 8, 5]
    # The rule, on a scale a test can afford: the recipe's 15 epochs as if set for 4 bags, 16 bags -> 8 epochs.
    monkeypatch.setattr(bags_family, "RECIPE_BAGS", 4)
    small = [
        "train",
        "mil",
        "--bags",
        "16",
        "--remix",
        "0",
        "--bag-size",
        "2",
        "--bag-std",
        "0",
        "--pretrain-epochs",
        "0",
    ]
    small += ["--json"]
    scaled = runner.invoke(app, small)
    assert scaled.exit_code == 0, scaled.output
    report = json.loads(scaled.stdout)
    assert report["config"]["epochs"] == 8 and len(report["history"]) == 8
    given = runner.invoke(app, [*small, "--epochs", "2"])
    assert given.exit_code == 0, given.output
    assert json.loads(given.stdout)["config"]["epochs"] == 2  # what the user asks for wins


def test_models_mil_shows_the_epochs_mnist_train_mil_uses(runner: CliRunner) -> None:
    card = runner.invoke(app, ["models", "mil", "--json"])
    assert card.exit_code == 0, card.output
    info = json.loads(card.stdout)
    assert info["recipe"]["epochs"] == 15  # as registered: for 50 bags
    assert info["config"]["bags"] == 100 and info["config"]["epochs"] == epochs_for(100, 15) == 11
    table = runner.invoke(app, ["models", "mil"])
    row = next(line for line in table.stdout.splitlines() if "--epochs" in line)
    assert " 11 " in row and "15" in row  # the epochs it trains, and the recipe's they come from


def test_runs_repeat_training_with_successive_seeds_and_report_mean_and_std(
    runner: CliRunner, synthetic_env: Path
) -> None:
    quick = ["train", "mil", "--bags", "8", "--epochs", "1", "--attempts", "1", "--pretrain-epochs", "0"]
    result = runner.invoke(app, [*quick, "--runs", "3", "--name", "r", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["runs"] == ["r-1", "r-2", "r-3"] and summary["seeds"] == [0, 1, 2]
    aucs = [each["test_accuracy"] for each in summary["each"]]
    assert summary["mean"]["test"] == pytest.approx(np.mean(aucs))
    assert summary["std"]["test"] == pytest.approx(np.std(aucs, ddof=1))
    again = runner.invoke(app, [*quick, "--runs", "3", "--name", "r"])
    assert again.exit_code == 1 and "'r-1' already exists" in again.output  # refused before any training
    table = runner.invoke(app, [*quick, "--runs", "2", "--seed", "4"])
    assert table.exit_code == 0 and "mean ± std" in table.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["mil", "--bags", "1"], "--bags must be at least 2"),
        (["mil", "--target", "10"], "--target must be a digit"),
        (["mil", "--bag-size", "1"], "--bag-size must be at least 2"),
        (["mil", "--remix", "-1"], "--remix must be 0-100"),
        (["cnn", "--bags", "10"], "--bags does not apply to a classify model"),
        (["mil", "--label-smoothing", "0.1"], "--label-smoothing does not apply to a bags model"),
        (["mil", "--runs", "0"], "--runs"),
        (["mil", "--classes", "0,1"], "--classes does not apply to a bags model"),
        (["mil", "--target-accuracy", "0.9"], "--target-accuracy does not apply to a bags model"),
        (["mil", "--bag-size", "101"], "--bag-size must be at most 100"),
        (["mil", "--bags", "100001"], "--bags must be at most 100,000"),
        (["mil", "--bags", str(10**20)], "--bags must be at most 100,000"),  # not a traceback from torch
        (["mil", "--encoder", "nothing-here"], "--encoder nothing-here:"),
    ],
)
def test_bad_mil_options_are_refused_before_training(
    runner: CliRunner, synthetic_env: Path, args: list[str], message: str
) -> None:
    result = runner.invoke(app, ["train", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_encoder_starts_the_instance_network_from_a_simclr_run(
    runner: CliRunner, synthetic_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mnistcli.families import bags as bags_family

    simclr = runner.invoke(
        app, ["train", "simclr", "--arg", "width=4", "--epochs", "1", "--batch-size", "64", "--name", "ssl"]
    )
    assert simclr.exit_code == 0, simclr.output
    report = _train(
        runner, "--encoder", "ssl", "--name", "from-ssl", "--lr", "1e-9", "--pretrain-epochs", "0", "--keep", "best"
    )
    assert report["config"]["encoder"] == "ssl"
    from mnistcli import store

    run = store.resolve("from-ssl")
    assert run.info.model.args == {"instance": "simclr", "width": 4}
    mil, ssl = store.load(run, torch.device("cpu")), store.load(store.resolve("ssl"), torch.device("cpu"))
    mine, theirs = dict(mil.body.named_parameters()), dict(ssl.encoder.named_parameters())
    assert mine.keys() == theirs.keys()
    for name, weight in mine.items():  # an lr of 1e-9: the weights are still the encoder's
        assert torch.allclose(weight, theirs[name], atol=1e-5), name
    # --keep mean (the recipe from an encoder at 50 bags or fewer): every attempt from the encoder that fitted (here:
    # every one), each still holding the encoder's weights.
    monkeypatch.setattr(bags_family, "FIT_LOSS", 100.0)
    report = _train(
        runner, "--encoder", "ssl", "--name", "committee", "--lr", "1e-9", "--keep", "mean", "--pretrain-epochs", "0"
    )
    committee = store.load(store.resolve("committee"), torch.device("cpu"))
    assert report["attempts"]["combined"] == "mean" and len(committee.members) == 3
    assert report["attempts"]["members"] == [1, 2, 3] and report["config"]["keep"] == "mean"
    for member in committee.members:
        for name, weight in member.body.named_parameters():
            assert torch.allclose(weight, theirs[name], atol=1e-5), name
    wrong = runner.invoke(app, ["train", "mil", "--encoder", "from-ssl", "--epochs", "1"])
    assert wrong.exit_code == 2 and "--encoder from-ssl:" in wrong.output and "needs contrastive" in wrong.output
    committee = runner.invoke(app, ["train", "mil", "--encoder", "ssl", "--arg", "committee=2", "--epochs", "1"])
    assert committee.exit_code == 2 and "--arg committee" in committee.output  # refused before the encoder is adopted
    clash = runner.invoke(app, ["train", "mil", "--encoder", "ssl", "--arg", "width=8", "--epochs", "1"])
    assert clash.exit_code == 2 and "set by --encoder ssl" in clash.output
    refused = runner.invoke(app, ["train", "cnn", "--encoder", "ssl"])
    assert refused.exit_code == 2 and "--encoder does not apply" in refused.output


def test_runs_summary_shows_a_diverged_runs_undefined_auc_instead_of_failing() -> None:
    from types import SimpleNamespace

    from mnistcli.api.repeating import summarize

    runs = [SimpleNamespace(test_accuracy=a, test_extra={"attention_hit": h}) for a, h in ((0.9, 0.5), (np.nan, 0.7))]
    summary = summarize(runs)  # type: ignore[arg-type]
    assert np.isnan(summary.mean["test"]) and np.isnan(summary.std["test"])
    assert summary.mean["attention_hit"] == pytest.approx(0.6)


def test_a_run_that_does_not_take_off_starts_over_and_a_resume_goes_on_the_same_way(
    runner: CliRunner, synthetic_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    from mnistcli.store import runlog

    monkeypatch.setattr(bags_family, "RESTART_LOSS", -1.0)  # every run counts as not taking off
    args = ["train", "mil", "--bags", "4", "--remix", "0", "--bag-size", "3", "--epochs", "5", "--seed", "3"]
    args += ["--restarts", "2", "--augment", "--attempts", "1"]  # restarts go with one attempt
    whole = runner.invoke(app, [*args, "--name", "whole", "--json"])
    assert whole.exit_code == 0, whole.output
    report = json.loads(whole.stdout)
    # The rule looks at epoch 3 of 5: two restarts there, then the third attempt runs its five epochs.
    assert [r["epoch"] for r in report["restarts"]] == [3, 3] and len(report["history"]) == 5
    assert "starting over with fresh weights (restart 2)" in whole.stderr and "bag loss" in whole.stderr
    folder = Path(report["path"])
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["restarts"] == report["restarts"]
    lines = [json.loads(line) for line in (folder / runlog.LOG).read_text().splitlines()]
    assert [line["event"] for line in lines].count("restart") == 2  # the log keeps the last attempt only
    assert [e["epoch"] for e in runlog.read_log(folder / runlog.LOG)[1]] == [1, 2, 3, 4, 5]

    # Ctrl-C at the end of the second attempt's epoch 2 (the 5th epoch the bar hears of), then resume.
    stopped = _stopped(runner, monkeypatch, [*args, "--name", "cut"], 5)
    assert stopped.exit_code == 130, stopped.output
    _resumes_as(runner, "cut", report, "restarts")

    never = runner.invoke(app, [*args, "--restarts", "0", "--json"])  # the last --restarts counts
    assert never.exit_code == 0 and json.loads(never.stdout)["restarts"] == []
    short = runner.invoke(app, [*args, "--epochs", "4", "--json"])  # the rule needs at least 5 epochs
    assert short.exit_code == 0 and json.loads(short.stdout)["restarts"] == []


def test_tensorboard_of_a_run_that_started_over_holds_only_the_attempt_that_counts(
    runner: CliRunner, synthetic_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setattr(bags_family, "RESTART_LOSS", -1.0)  # every run counts as not taking off
    args = ["train", "mil", "--bags", "4", "--remix", "0", "--bag-size", "3", "--epochs", "5", "--seed", "3"]
    result = runner.invoke(app, [*args, "--restarts", "1", "--attempts", "1", "--tensorboard", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert len(report["restarts"]) == 1
    events = EventAccumulator(report["tensorboard"])
    events.Reload()
    # The abandoned attempt's epochs 1-3 came first at the same steps; a plot of both would zigzag back.
    losses = [(e.step, e.value) for e in events.Scalars("epoch/train_loss")]
    assert losses == [(h["epoch"], pytest.approx(h["train_loss"])) for h in report["history"]]
    steps = [e.step for e in events.Scalars("train/loss")]
    assert steps == sorted(steps) and len(steps) == len(set(steps))


def test_the_restart_rule_looks_at_the_bag_loss_not_at_the_instance_loss_added_to_it(
    runner: CliRunner, synthetic_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A bag loss above 5 would take confidently wrong bags; with --instance-loss 100 the training loss is far above.
    monkeypatch.setattr(bags_family, "RESTART_LOSS", 5.0)
    args = ["train", "mil", "--bags", "4", "--remix", "0", "--bag-size", "3", "--epochs", "5", "--seed", "3"]
    result = runner.invoke(app, [*args, "--restarts", "1", "--attempts", "1", "--instance-loss", "100", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["history"][2]["train_loss"] > 5.0 and report["restarts"] == []


def test_runs_from_an_encoder_start_over_by_their_own_threshold(
    runner: CliRunner, synthetic_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the encoder's threshold says "not taking off": a run from an encoder restarts, one from scratch does not.
    monkeypatch.setattr(bags_family, "RESTART_LOSS", 100.0)
    monkeypatch.setattr(bags_family, "ENCODER_RESTART_LOSS", -1.0)
    simclr = runner.invoke(
        app, ["train", "simclr", "--arg", "width=4", "--epochs", "1", "--batch-size", "64", "--name", "ssl"]
    )
    assert simclr.exit_code == 0, simclr.output
    args = ["--bags", "4", "--remix", "0", "--bag-size", "3", "--epochs", "5", "--restarts", "1", "--attempts", "1"]
    assert [r["epoch"] for r in _train(runner, *args, "--encoder", "ssl")["restarts"]] == [3]
    assert _train(runner, *args)["restarts"] == []
    monkeypatch.setattr(bags_family, "ENCODER_RESTART_LOSS", 100.0)
    assert _train(runner, *args, "--encoder", "ssl")["restarts"] == []


def test_attempts_train_the_run_several_times_and_keep_the_one_that_fits_best(
    runner: CliRunner, synthetic_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors.torch import load_file

    from mnistcli.store import runlog

    args = ["train", "mil", "--bags", "4", "--remix", "0", "--bag-size", "3", "--epochs", "2", "--seed", "3"]
    args += ["--pretrain-epochs", "0"]  # without pretraining, --restarts adds no attempts (next test)
    whole = runner.invoke(app, [*args, "--attempts", "3", "--restarts", "2", "--name", "whole", "--json"])
    assert whole.exit_code == 0, whole.output
    report = json.loads(whole.stdout)
    losses, kept = report["attempts"]["losses"], report["attempts"]["kept"]
    assert len(losses) == 3 and kept == losses.index(min(losses)) + 1
    assert report["restarts"] == []  # with several attempts, every attempt runs to the end
    assert report["history"][-1]["train_loss"] == pytest.approx(losses[kept - 1]) and len(report["history"]) == 2
    assert "attempt 2 of 3 ended at a bag loss" in whole.stderr and "kept attempt" in whole.stderr
    folder = Path(report["path"])
    assert json.loads((folder / "meta.json").read_text())["attempts"] == report["attempts"]
    events = [json.loads(line)["event"] for line in (folder / runlog.LOG).read_text().splitlines()]
    assert events.count("attempt") == 2 and events[-1] == "kept" and events.count("epoch") == 6
    assert runlog.read_log(folder / runlog.LOG)[1] == [
        {"event": "epoch", **{k: v for k, v in e.items()}} for e in report["history"]
    ]

    # Attempts come one after another from the run's seed: trained only up to the one kept, the run ends the same.
    upto = json.loads(runner.invoke(app, [*args, "--attempts", str(kept), "--json"]).stdout)
    a, b = load_file(folder / "model.safetensors"), load_file(Path(upto["path"]) / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a) and upto["test_accuracy"] == report["test_accuracy"]

    # Ctrl-C in the second attempt (the 3rd epoch the bar hears of), then resume: the same run, bit for bit.
    stopped = _stopped(runner, monkeypatch, [*args, "--attempts", "3", "--name", "cut"], 3)
    assert stopped.exit_code == 130 and "interrupted in attempt 2 of 3 with 0 of 2 epochs" in stopped.output
    _resumes_as(runner, "cut", report, "attempts")


def test_when_no_pretrained_attempt_fits_its_bags_restarts_add_attempts_until_one_does(
    runner: CliRunner, synthetic_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    from mnistcli.families import bags as bags_family
    from mnistcli.store import runlog

    args = ["train", "mil", "--bags", "4", "--remix", "0", "--bag-size", "3", "--epochs", "2", "--seed", "3"]
    args += ["--pretrain-epochs", "1", "--attempts", "2", "--restarts", "2"]

    # Every attempt fits (a loss below 100): the two planned are all.
    def train(*extra: str) -> dict:
        result = runner.invoke(app, [*args, *extra, "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    monkeypatch.setattr(bags_family, "FIT_LOSS", 100.0)
    fitted = train()
    assert len(fitted["attempts"]["losses"]) == 2 and "extra" not in fitted["attempts"]

    # None fits (no loss is below 0): --restarts 2 adds two attempts, and the lowest loss of all four is kept.
    monkeypatch.setattr(bags_family, "FIT_LOSS", 0.0)
    result = runner.invoke(app, [*args, "--name", "more", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    losses, kept = report["attempts"]["losses"], report["attempts"]["kept"]
    assert len(losses) == 4 and report["attempts"]["extra"] == 2 and kept == losses.index(min(losses)) + 1
    assert losses[:2] == fitted["attempts"]["losses"]  # the planned attempts are the same runs as before
    assert "none of the 2 ended below 0, so none has fitted: attempt 3 starts" in result.stderr
    assert "(extra attempt 2 of at most 2)" in result.stderr
    folder = Path(report["path"])
    assert json.loads((folder / "meta.json").read_text())["attempts"] == report["attempts"]
    lines = [json.loads(line) for line in (folder / runlog.LOG).read_text().splitlines()]
    assert [line.get("extra") for line in lines if line["event"] == "attempt"] == [None, 1, 2]
    shown = runner.invoke(app, [*args, "--name", "shown"], env={"COLUMNS": "250"})
    assert re.search(r"kept attempt \d; 2 more because none of the first 2 fitted\)", shown.output)

    # Without pretraining the loss that tells a fit was not measured: no attempt is added.
    assert len(train("--pretrain-epochs", "0")["attempts"]["losses"]) == 2
    # With --keep mean the same attempts are added, and as none fitted, the best alone answers (no committee).
    mean = train("--keep", "mean")
    assert mean["attempts"]["losses"] == losses and mean["attempts"]["members"] == [kept]
    meta = json.loads((Path(mean["path"]) / "meta.json").read_text())
    assert "combined" not in mean["attempts"] and "committee" not in meta["model"]["args"]

    # Ctrl-C in the first extra attempt (its 2nd epoch: the 6th the bar hears of), then resume: the same run.
    stopped = _stopped(runner, monkeypatch, [*args, "--name", "cut"], 6)
    assert stopped.exit_code == 130
    assert "interrupted in attempt 3 (one added because none of the first 2 fitted) with 1 of 2 epochs" in " ".join(
        stopped.output.split()
    )
    _resumes_as(runner, "cut", report, "attempts")


def test_a_snapshot_from_before_attempts_could_be_added_resumes_as_it_would_have_ended_then(
    runner: CliRunner, synthetic_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Snapshots written before 2026-12-03's rules have no `attempts`, `extra` or `numbers` in their attempt state:
    they resume without attempts added, and --keep mean averages every attempt that did not diverge, as then."""
    from mnistcli import paths
    from mnistcli.families import bags as bags_family
    from mnistcli.store import snapshot

    def old_snapshot(name: str) -> None:
        folder = paths.runs_dir() / name
        state, run = snapshot.read(folder)
        for key in ("attempts", "extra", "numbers"):
            del state["callbacks"]["attempts"][key]
        snapshot.write(folder, state, run)

    monkeypatch.setattr(bags_family, "FIT_LOSS", 0.0)  # no attempt ever fits: the new rule would add two
    args = ["train", "mil", "--bags", "6", "--bag-size", "4", "--epochs", "2", "--remix", "0", "--seed", "1"]
    args += ["--pretrain-epochs", "1", "--attempts", "2", "--restarts", "2"]
    assert _stopped(runner, monkeypatch, [*args, "--name", "best"], 3).exit_code == 130  # in attempt 2
    old_snapshot("best")
    resumed = runner.invoke(app, ["train", "--resume", "best", "--json"])
    assert resumed.exit_code == 0, resumed.output
    assert len(json.loads(resumed.stdout)["attempts"]["losses"]) == 2 and "extra" not in resumed.stdout

    monkeypatch.setattr(bags_family, "FIT_LOSS", 100.0)
    assert _stopped(runner, monkeypatch, [*args, "--keep", "mean", "--name", "mean"], 3).exit_code == 130
    old_snapshot("mean")
    resumed = runner.invoke(app, ["train", "--resume", "mean", "--json"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["attempts"]["members"] == [1, 2]


def test_the_recipe_trains_three_attempts_at_few_bags_and_one_above() -> None:
    from mnistcli.families.bags import BagsFamily
    from mnistcli.models.mil import RECIPE

    def attempts(**options: int) -> int:
        return BagsFamily.configure(RECIPE, options)[1].attempts

    assert attempts(bags=50) == 3 and attempts(bags=51) == 1 and attempts() == 1  # the default is 100 bags
    assert attempts(bags=100, attempts=2) == 2 and attempts(bags=50, attempts=1) == 1  # given, it wins
    assert attempts(bags=50, early_stopping=2) == 1  # early stopping judges one attempt: the recipe's give way


def test_best_attempt_keeps_the_lowest_loss_the_first_on_a_tie_and_never_a_diverged_one() -> None:
    from types import SimpleNamespace

    from torch import nn

    from mnistcli.engine.callbacks import BestAttempt
    from mnistcli.engine.loop import EpochInfo

    def kept(losses: list[float], planned: int | None = None, more: int = 0, fit: float = 0.15) -> tuple[int, float]:
        model = nn.Linear(1, 1, bias=False)
        loop = SimpleNamespace(model=model, epochs=1, stop=False, metrics={}, position=SimpleNamespace(history=[]))
        loop.optimizer = SimpleNamespace(state_dict=dict)
        loop.schedule, loop.start_over = None, lambda *_: None
        attempt = BestAttempt(planned or len(losses), "bag_loss", lambda m: None, more=more, fit=fit)
        attempt.on_fit_start(loop)  # type: ignore[arg-type]
        for n, loss in enumerate(losses):
            if n >= attempt.attempts:  # the attempts that were not planned, nor added
                break
            model.weight.data.fill_(n)  # each attempt's weights tell which it was
            loop.metrics = {"bag_loss": loss}
            loop.position.history = [{"epoch": 1, "train_loss": loss}]
            attempt.on_epoch_end(loop, EpochInfo(1, loss, 0.0, 0.1, 0.0))  # type: ignore[arg-type]
        attempt.on_fit_end(loop)  # type: ignore[arg-type]
        assert attempt.kept is not None  # the kept attempt's history comes back with its weights
        assert str(loop.position.history[0]["train_loss"]) == str(losses[attempt.kept - 1])
        return attempt.kept, float(model.weight.detach())

    nan = float("nan")
    assert kept([0.3, 0.2, 0.5]) == (2, 1.0) and kept([0.1, 0.5, 0.1]) == (1, 0.0) and kept([0.5, 0.3, 0.1]) == (3, 2.0)
    assert kept([0.3, 0.2, nan])[0] == 2 and kept([nan, 0.1, 0.5])[0] == 2 and kept([nan, nan])[0] == 1

    # With `more`: attempts are added only while none has ended below `fit`, and at most `more` of them.
    losses = [0.3, 0.2, 0.1, 0.05]
    assert kept(losses, 2, more=2) == (3, 2.0)  # the third fits: the fourth is never trained
    assert kept(losses, 2, more=0) == (2, 1.0) and kept(losses, 2, more=1) == (3, 2.0)
    assert kept([0.3, 0.1, 0.05], 2, more=2) == (2, 1.0)  # the second fits: nothing is added
    assert kept([0.3, 0.2, 0.25, 0.4], 2, more=2) == (2, 1.0)  # none fits: all four, and the lowest is kept
    assert kept([nan, nan, 0.5], 2, more=1) == (3, 2.0)  # a diverged attempt has not fitted

    # Keeping every attempt (--keep mean) leaves a diverged one out of the combination.
    model = nn.Linear(1, 1, bias=False)
    loop = SimpleNamespace(model=model, epochs=1, stop=False, metrics={}, position=SimpleNamespace(history=[]))
    loop.optimizer = SimpleNamespace(state_dict=dict)
    loop.schedule, loop.start_over = None, lambda *_: None
    every = BestAttempt(3, "bag_loss", lambda m: None, keep_all=True)
    every.on_fit_start(loop)  # type: ignore[arg-type]
    for n, loss in enumerate([0.3, nan, 0.2]):
        model.weight.data.fill_(n)
        loop.metrics = {"bag_loss": loss}
        every.on_epoch_end(loop, EpochInfo(1, loss, 0.0, 0.1, 0.0))  # type: ignore[arg-type]
    assert [float(w["weight"]) for w in every.every] == [0.0, 2.0]

    # What --keep mean averages: the attempts that ended below `fit`, or, if none did, the one kept alone.
    def members(losses: list[float]) -> list[int]:
        attempt = BestAttempt(len(losses), "bag_loss", lambda m: None, keep_all=True, fit=0.15)
        attempt.on_fit_start(loop)  # type: ignore[arg-type]
        for n, loss in enumerate(losses):
            model.weight.data.fill_(n)
            loop.metrics = {"bag_loss": loss}
            attempt.on_epoch_end(loop, EpochInfo(1, loss, 0.0, 0.1, 0.0))  # type: ignore[arg-type]
        attempt.on_fit_end(loop)  # type: ignore[arg-type]
        chosen = attempt.members()
        assert [float(w["weight"]) for _, w in chosen] == [n - 1.0 for n, _ in chosen]  # each its own weights
        return [n for n, _ in chosen]

    assert members([0.3, 0.1, nan, 0.05]) == [2, 4] and members([0.3, 0.2]) == [2] and members([0.1, 0.2]) == [1]
    assert members([nan, nan]) == []  # nothing to average: the model is the last attempt's, as without --keep


def test_the_run_log_writes_a_nan_inside_a_list_as_null(tmp_path: Path) -> None:
    from mnistcli.store.runlog import RunLog

    log = RunLog(tmp_path / "log.jsonl")
    log.write("kept", {"attempt": 2, "losses": [0.5, float("nan"), float("inf")]})
    log.close()
    assert json.loads((tmp_path / "log.jsonl").read_text()) == {
        "event": "kept",
        "attempt": 2,
        "losses": [0.5, None, None],
    }


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--attempts", "0"], "--attempts must be 1-10"),
        (["--attempts", "11"], "--attempts must be 1-10"),
        (["--attempts", "2", "--early-stopping", "1", "--val-split", "0.2"], "--early-stopping does not go with"),
    ],
)
def test_bad_attempts_are_refused_before_training(
    runner: CliRunner, synthetic_env: Path, extra: list[str], says: str
) -> None:
    result = runner.invoke(app, ["train", "mil", "--bags", "4", "--epochs", "1", *extra])
    assert result.exit_code == 2 and says in result.output


def test_tensorboard_shows_each_attempt_as_a_run_of_its_own(
    runner: CliRunner, synthetic_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from mnistcli.families import bags as bags_family

    monkeypatch.setattr(bags_family, "FIT_LOSS", 100.0)  # every attempt fits: none is added, --keep mean takes all

    args = ["train", "mil", "--bags", "4", "--remix", "0", "--bag-size", "3", "--epochs", "2", "--seed", "3"]
    result = runner.invoke(app, [*args, "--attempts", "2", "--tensorboard", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    board = Path(report["tensorboard"])
    kept = report["attempts"]["kept"]
    for number, folder in ((1, board), (2, board / "attempt-2")):
        events = EventAccumulator(str(folder))
        events.Reload()
        assert [e.step for e in events.Scalars("epoch/train_loss")] == [1, 2]
        assert ("test/accuracy" in events.Tags()["scalars"]) == (number == kept)  # the test goes with the kept one
    # With --keep mean the test is the combination's: a run of its own, beside the attempts.
    result = runner.invoke(app, [*args, "--attempts", "2", "--keep", "mean", "--tensorboard", "--json"])
    board = Path(json.loads(result.stdout)["tensorboard"])
    tags = {}
    for folder in (board, board / "attempt-2", board / "attempts-mean"):
        events = EventAccumulator(str(folder))
        events.Reload()
        tags[folder.name] = events.Tags()["scalars"]
    assert "test/accuracy" in tags["attempts-mean"] and "epoch/train_loss" in tags["attempt-2"]
    assert "test/accuracy" not in tags[board.name] and "test/accuracy" not in tags["attempt-2"]


def test_the_recipe_pretrains_self_supervised_at_few_bags_from_scratch_only() -> None:
    from mnistcli.families.bags import BagsFamily
    from mnistcli.models.mil import RECIPE

    def pretrain(**options: object) -> int:
        return BagsFamily.configure(RECIPE, options)[1].pretrain_epochs

    assert pretrain(bags=50) == RECIPE["pretrain_epochs"] == 30 and pretrain(bags=51) == 0 and pretrain() == 0
    assert pretrain(bags=50, encoder="ssl") == 0  # an encoder was pretrained on every training image already
    assert pretrain(bags=50, pretrain_epochs=0) == 0 and pretrain(bags=200, pretrain_epochs=5) == 5  # given, it wins

    def keep(**options: object) -> str:
        return BagsFamily.configure(RECIPE, options)[1].keep

    assert keep(bags=50) == "best" and keep(bags=50, keep="mean") == "mean" and keep(bags=50, encoder="ssl") == "mean"
    # From an encoder the recipe averages its attempts, where there are several to average.
    assert keep(bags=51, encoder="ssl") == "best" and keep(bags=50, encoder="ssl", attempts=1) == "best"
    assert (
        keep(bags=50, encoder="ssl", early_stopping=2) == "best" and keep(bags=50, encoder="ssl", keep="best") == "best"
    )


def test_pretraining_learns_from_the_training_bags_own_images_and_nothing_else(synthetic_dir: Path) -> None:
    """Images outside the training bags (and every label) can be anything: the pretrained weights are the same."""
    from mnistcli.api.common import load_tensors
    from mnistcli.config import TrainConfig
    from mnistcli.data.tensors import TensorData
    from mnistcli.families.bags import BagsFamily, BagsParams
    from mnistcli.families.base import Data

    train = load_tensors("train", synthetic_dir, torch.device("cpu"))

    def pretrained(images: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict, torch.Tensor]:
        data = TensorData(images, train.labels)
        family = BagsFamily(BagsParams(bags=6, bag_size=4, pretrain_epochs=2), TrainConfig(seed=1))
        family.prepare(Data(data, None, data, data, data))
        torch.manual_seed(0)
        model = AttentionMIL()
        summary = family.pretrain(model)
        assert summary is not None
        return {k: v.clone() for k, v in model.body.state_dict().items()}, summary, torch.cat(family.bags)

    weights, summary, used = pretrained(train.images)
    assert summary["epochs"] == 2 and summary["images"] == len(torch.unique(used)) and summary["loss"] > 0
    others = torch.ones(len(train.images), dtype=torch.bool)
    others[used] = False
    noise = train.images.clone()
    noise[others] = torch.randint(0, 256, (int(others.sum()), 28, 28), dtype=torch.uint8)
    again, _, _ = pretrained(noise)
    assert all(torch.equal(weights[k], again[k]) for k in weights)
    torch.manual_seed(0)
    assert any(not torch.equal(weights[k], v) for k, v in AttentionMIL().body.state_dict().items())  # it learnt


def test_a_run_logs_its_pretraining_and_ctrl_c_during_it_keeps_nothing(
    runner: CliRunner, synthetic_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mnistcli.families import contrastive
    from mnistcli.store import runlog

    args = ["train", "mil", "--bags", "6", "--bag-size", "4", "--epochs", "1", "--attempts", "1"]
    report = json.loads(runner.invoke(app, [*args, "--pretrain-epochs", "2", "--json"]).stdout)
    assert report["config"]["pretrain_epochs"] == 2
    lines = [json.loads(line) for line in (Path(report["path"]) / runlog.LOG).read_text().splitlines()]
    assert lines[0]["event"] == "pretrain" and lines[0]["epochs"] == 2 and lines[0]["images"] > 0
    plain = json.loads(runner.invoke(app, [*args, "--pretrain-epochs", "0", "--json"]).stdout)
    assert all(json.loads(line)["event"] != "pretrain" for line in (Path(plain["path"]) / runlog.LOG).open())

    def interrupted(*_: object, **__: object) -> list[float]:
        raise KeyboardInterrupt

    monkeypatch.setattr(contrastive, "pretrain", interrupted)
    stopped = runner.invoke(app, [*args, "--pretrain-epochs", "2", "--name", "cut"])
    assert stopped.exit_code == 130 and "interrupted before training started" in stopped.output
    assert runner.invoke(app, ["checkpoints", "--json"]).stdout.count('"cut"') == 0
    refused = runner.invoke(app, [*args, "--pretrain-epochs", "-1"])
    assert refused.exit_code == 2 and "--pretrain-epochs must be 0-1000" in refused.output


def test_keep_mean_answers_with_every_attempt_averaged_and_resumes_bit_for_bit(
    runner: CliRunner, synthetic_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    from mnistcli import store
    from mnistcli.families import bags as bags_family
    from mnistcli.models.mil import MILCommittee
    from mnistcli.store import runlog
    from tests.helpers import make_digits, save_png

    args = ["train", "mil", "--bags", "6", "--bag-size", "4", "--epochs", "2", "--attempts", "2", "--keep", "mean"]
    args += ["--pretrain-epochs", "1", "--remix", "0", "--restarts", "0"]
    monkeypatch.setattr(bags_family, "FIT_LOSS", 100.0)  # every attempt fits its bags
    whole = runner.invoke(app, [*args, "--name", "whole", "--json"])
    assert whole.exit_code == 0, whole.output
    report = json.loads(whole.stdout)
    assert report["attempts"]["combined"] == "mean" and len(report["attempts"]["losses"]) == 2
    assert report["attempts"]["members"] == [1, 2]
    assert "those that fit their bags are kept" in whole.stderr and "attempts 1 and 2 averaged" in whole.stderr
    run = store.resolve("whole")
    assert run.info.model.args["committee"] == 2
    committee = store.load(run, torch.device("cpu")).eval()
    assert isinstance(committee, MILCommittee) and len(committee.members) == 2

    # Its answer is the mean of its members': the bag probability and each image's weight.
    x = torch.rand(2, 5, 1, 28, 28)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    with torch.no_grad():
        logits, weights = committee(x, mask)
        each = [m(x, mask) for m in committee.members]
    mean = torch.stack([torch.sigmoid(e[0]) for e in each]).mean(0)
    assert torch.allclose(torch.sigmoid(logits), mean, atol=1e-6)
    assert torch.allclose(weights, (each[0][1] + each[1][1]) / 2) and torch.all(weights[1, 3:] == 0)

    # The committee is measured, predicted and embedded like any bags checkpoint.
    evaluated = json.loads(runner.invoke(app, ["eval", "whole", "--json"]).stdout)
    assert evaluated["auc"] == pytest.approx(report["test_accuracy"])
    images, _ = make_digits(3, seed=1)
    paths = [str(save_png(images[i], tmp_path / f"{i}.png")) for i in range(3)]
    predicted = runner.invoke(app, ["predict", "--bag", *paths, "-c", "whole", "--json"])
    assert predicted.exit_code == 0, predicted.output
    assert len(json.loads(predicted.stdout)["attention"]) == 3
    embedded = runner.invoke(app, ["embed", paths[0], "-c", "whole", "--json"])
    assert len(json.loads(embedded.stdout)["embedding"]) == 1000  # both members' 500 features
    events = [json.loads(line) for line in (Path(report["path"]) / runlog.LOG).read_text().splitlines()]
    assert events[-1]["event"] == "kept" and events[-1]["all"] is True

    # Ctrl-C in the second attempt, then resume: the same committee, bit for bit.
    stopped = _stopped(runner, monkeypatch, [*args, "--name", "cut"], 3)
    assert stopped.exit_code == 130 and "interrupted in attempt 2 of 2" in stopped.output
    resumed = runner.invoke(app, ["train", "--resume", "cut", "--json"])
    assert resumed.exit_code == 0, resumed.output
    a, b = (
        load_file(Path(report["path"]) / "model.safetensors"),
        load_file(store.resolve("cut").path / "model.safetensors"),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    for extra in (
        ["--arg", "committee=2"],
        ["--arg", "committee=100000"],
    ):
        refused = runner.invoke(app, ["train", "mil", "--bags", "6", *extra])
        assert refused.exit_code == 2 and "--arg committee" in refused.output and "Traceback" not in refused.output
    bad = runner.invoke(app, [*args, "--keep", "median"])
    assert bad.exit_code == 2 and "--keep must be best or mean" in bad.output
    for one in (["--attempts", "1"], ["--bags", "60", "--attempts", "1"]):
        alone = runner.invoke(app, ["train", "mil", "--bags", "6", "--keep", "mean", *one])
        assert alone.exit_code == 2 and "--keep mean averages a run's attempts" in alone.output
    alone = runner.invoke(app, ["train", "mil", "--bags", "60", "--keep", "mean"])  # the recipe: one attempt there
    assert alone.exit_code == 2 and "give --attempts 2 or more" in alone.output


def test_ctrl_c_while_a_later_attempt_pretrains_names_the_attempt_saved(
    runner: CliRunner, synthetic_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mnistcli.families import contrastive

    real, calls = contrastive.pretrain, []

    def second_stops(*a: object, **k: object) -> list[float]:
        calls.append(1)
        if len(calls) == 2:  # attempt 2's pretraining, after attempt 1's last epoch
            raise KeyboardInterrupt
        return real(*a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(contrastive, "pretrain", second_stops)
    args = [
        "train",
        "mil",
        "--bags",
        "6",
        "--bag-size",
        "4",
        "--epochs",
        "2",
        "--attempts",
        "2",
        "--remix",
        "0",
        "--restarts",
        "0",
    ]
    stopped = runner.invoke(app, [*args, "--pretrain-epochs", "1", "--name", "cut"])
    assert stopped.exit_code == 130 and "interrupted in attempt 1 of 2 with 1 of 2 epochs done" in stopped.output
    monkeypatch.setattr(contrastive, "pretrain", real)
    resumed = runner.invoke(app, ["train", "--resume", "cut", "--json"])
    assert resumed.exit_code == 0, resumed.output
    assert len(json.loads(resumed.stdout)["attempts"]["losses"]) == 2
