"""Ensembles: members trained as runs of their own, combined into one checkpoint that serves like any other;
and test-time augmentation for every classifier."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from typer.testing import CliRunner

from mnistcli import store
from mnistcli.cli import app
from mnistcli.models.ensemble import combine_probabilities, ensemble
from mnistcli.protocols.combining import select_weights
from mnistcli.protocols.inference import SHIFTS, ShiftAveraged, shifted
from mnistcli.render import progress
from tests.helpers import kill_group, make_digits, save_png

SMALL = ["--arg", "width=4", "--epochs", "2", "--batch-size", "50", "--val-split", "0.2"]


def _ok(runner: CliRunner, args: list[str]) -> dict:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout) if "--json" in args else {}


def _refused(runner: CliRunner, args: list[str], *words: str, code: int = 2) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    for word in words:
        assert word in result.stderr, result.stderr


def _images(folder: Path, n: int = 4) -> Path:
    folder.mkdir()
    images, labels = make_digits(n, seed=3)
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        save_png(image, folder / f"{i}-{label}.png")
    return folder


# -- the model ------------------------------------------------------------------------------------------------


def test_majority_vote_takes_the_most_votes_and_breaks_ties_by_the_mean_probability() -> None:
    p = torch.tensor(
        [
            [[0.6, 0.4, 0.0], [0.1, 0.5, 0.4]],
            [[0.55, 0.45, 0.0], [0.0, 0.45, 0.55]],
            [[0.1, 0.9, 0.0], [0.3, 0.0, 0.7]],
        ]
    )
    votes = combine_probabilities(p, "vote", torch.ones(3)).exp()
    assert votes[0].argmax() == 0  # two votes for 0 beat one surer vote for 1
    assert votes[1].argmax() == 2  # votes 0: 0, 1: 1, 2: 2
    assert torch.allclose(votes.sum(1), torch.ones(2))
    tie = torch.tensor([[[0.6, 0.4]], [[0.3, 0.7]]])  # one vote each: the higher mean probability wins
    assert combine_probabilities(tie, "vote", torch.ones(2)).argmax(1).item() == 1
    soft = combine_probabilities(p, "soft", torch.tensor([1.0, 0.0, 1.0])).exp()
    assert torch.allclose(soft, (p[0] + p[2]) / 2)


def test_the_ensemble_answers_with_its_members_calibrated_mean() -> None:
    torch.manual_seed(0)
    model = ensemble([{"name": "mlp", "args": {"hidden": 8}}, {"name": "linear"}], temperatures=[0.5, 2.0]).eval()
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        expected = (torch.softmax(model.members[0](x) / 0.5, 1) + torch.softmax(model.members[1](x) / 2.0, 1)) / 2
        assert torch.allclose(model(x).exp(), expected, atol=1e-6)
        features = model.features(x)
    assert features.shape == (5, model.feature_dim) and model.feature_dim == 8 + 784  # concatenated
    with pytest.raises(ValueError, match="not a classifier"):
        ensemble([{"name": "simclr"}])


def test_selection_gives_weight_to_the_member_that_lowers_the_validation_loss() -> None:
    labels = torch.arange(40) % 10
    right = F.one_hot(labels, 10).float() * 0.9 + 0.01
    wrong = F.one_hot((labels + 1) % 10, 10).float() * 0.9 + 0.01
    weights = select_weights(torch.stack([wrong, right, wrong]), labels)
    assert weights == [0.0, 1.0, 0.0]
    assert abs(sum(select_weights(torch.stack([right, right * 0.5 + 0.05]), labels)) - 1) < 1e-5


def test_shifts_move_whole_pixels_and_blank_the_edge() -> None:
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    down = shifted(x, 1, 0)
    assert torch.equal(down[0, 0, 0], torch.zeros(4)) and torch.equal(down[0, 0, 1:], x[0, 0, :3])
    left = shifted(x, 0, -1)
    assert torch.equal(left[0, 0, :, -1], torch.zeros(4)) and torch.equal(left[0, 0, :, :3], x[0, 0, :, 1:])
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    with torch.no_grad():
        mean = torch.stack([model(shifted(x, dy, dx)) for dy, dx in SHIFTS]).mean(0)
        assert torch.allclose(ShiftAveraged(model)(x), mean)


# -- the command ----------------------------------------------------------------------------------------------


def test_an_ensemble_trains_its_members_and_serves_as_one_checkpoint(
    runner: CliRunner, synthetic_env: Path, tmp_path: Path
) -> None:
    report = _ok(runner, ["train", "ensemble", "--members", "2", *SMALL, "--name", "ens", "--json"])
    assert [m["name"] for m in report["members"]] == ["01-cnn-w32", "02-cnn-w32"]
    # The recipe's robust augmentation reaches every member (`--no-robust-augment` turns it off: next test).
    assert json.loads((Path(report["path"]) / "meta.json").read_text())["config"]["member_options"]["robust_augment"]
    assert [m["seed"] for m in report["members"]] == [0, 1]
    folder = Path(report["path"])
    assert (folder / "members" / "01-cnn-w32" / "meta.json").is_file() and (
        folder / "members" / "02-cnn-w32" / "log.jsonl"
    ).is_file()
    assert not (folder / "plan.json").exists()
    listed = runner.invoke(app, ["checkpoints"])
    assert "ens" in listed.stdout and "01-cnn-w32" not in listed.stdout  # members live inside it, not in the list

    evaluated = _ok(runner, ["eval", "ens", "--json"])
    assert evaluated["accuracy"] == report["test_accuracy"]
    assert [m["name"] for m in evaluated["members"]] == ["01-cnn-w32", "02-cnn-w32"]
    assert [m["accuracy"] for m in evaluated["members"]] == [m["test_accuracy"] for m in report["members"]]
    assert evaluated["combinations"]["used"] == "soft" and evaluated["combinations"]["soft"] == evaluated["accuracy"]
    member = _ok(runner, ["eval", str(folder / "members" / "02-cnn-w32"), "--json"])  # a member is a run of its own
    assert member["accuracy"] == evaluated["members"][1]["accuracy"]

    images = _images(tmp_path / "digits")
    predicted = [
        json.loads(line)
        for line in runner.invoke(app, ["predict", str(images), "-c", "ens", "--json"]).stdout.splitlines()
    ]
    assert len(predicted) == 4 and all(abs(sum(p["probabilities"]) - 1) < 1e-4 for p in predicted)
    embedded = runner.invoke(app, ["embed", str(images), "-c", "ens", "--json"])
    assert embedded.exit_code == 0
    assert len(json.loads(embedded.stdout.splitlines()[0])["embedding"]) == 2 * 36 * 4  # two members' features
    plotted = runner.invoke(app, ["plot", "ens", "-o", str(tmp_path / "plots")])
    assert plotted.exit_code == 0, plotted.output
    assert {p.name for p in (tmp_path / "plots").iterdir()} == {
        "ens-curves.png",
        "ens-confusion.png",
        "ens-mistakes.png",
    }


def test_the_default_ensemble_is_said_once_and_old_ensembles_keep_their_members() -> None:
    """The registered recipe (read without torch), the options' defaults and the builder agree on the default; an
    ensemble saved before it changed (members `cnn-wide` with `{}`: width 24) still builds as it was trained."""
    from mnistcli import registry
    from mnistcli.families.ensemble import EnsembleParams
    from mnistcli.models.ensemble import DEFAULT_ARCH, DEFAULT_MEMBERS

    recipe = registry.declared_models()["ensemble"]
    assert (recipe["members"], recipe["arch"]) == (DEFAULT_MEMBERS, DEFAULT_ARCH) == (4, "cnn-w32")
    assert (EnsembleParams().members, EnsembleParams().arch) == (DEFAULT_MEMBERS, DEFAULT_ARCH)
    assert [m.feature_dim for m in ensemble().members] == [36 * 32] * DEFAULT_MEMBERS
    old = ensemble(members=[{"name": "cnn-wide", "args": {}}] * 10)
    assert [m.feature_dim for m in old.members] == [36 * 24] * 10
    assert sum(p.numel() for p in old.parameters()) == 614_260  # the previous default, as docs/models.md gives it


def test_no_robust_augment_turns_the_recipes_augmentation_off_for_every_member(
    runner: CliRunner, synthetic_env: Path
) -> None:
    _ok(
        runner,
        ["train", "ensemble", "--members", "1", *SMALL[:2], "--epochs", "1", "--no-robust-augment", "--name", "e"],
    )
    folder = store.resolve("e").path / "members" / "01-cnn-w32"
    assert json.loads((folder / "meta.json").read_text())["config"]["robust_augment"] is False


def test_without_augmentation_no_member_records_robust_augmentation(runner: CliRunner, synthetic_env: Path) -> None:
    _ok(runner, ["train", "ensemble", "--members", "1", *SMALL[:2], "--epochs", "1", "--no-augment", "--name", "n"])
    folder = store.resolve("n").path / "members" / "01-cnn-w32"
    config = json.loads((folder / "meta.json").read_text())["config"]
    assert config["augment"] is False and config["robust_augment"] is False


def test_a_majority_vote_is_the_members_majority(runner: CliRunner, synthetic_env: Path) -> None:
    _ok(
        runner,
        ["train", "ensemble", "--members", "3", "--arch", "mlp,linear", *SMALL[2:], "--combine", "vote", "--name", "v"],
    )
    run = store.resolve("v")
    model = store.load(run)
    assert run.info.model.args["combine"] == "vote" and [m["name"] for m in run.info.model.args["members"]] == [
        "mlp",
        "linear",
        "mlp",
    ]
    x = torch.rand(50, 1, 28, 28)
    with torch.no_grad():
        answers = torch.stack([m(x).argmax(1) for m in model.members])
        combined = model(x).argmax(1)
    for i in range(len(x)):
        counts = torch.bincount(answers[:, i], minlength=10)
        if counts.max() >= 2:  # a clear majority (with three members, else every member disagrees)
            assert combined[i] == counts.argmax()


def test_selected_weights_are_fitted_on_the_members_shared_validation_images(
    runner: CliRunner, synthetic_env: Path
) -> None:
    report = _ok(
        runner, ["train", "ensemble", "--members", "3", *SMALL, "--combine", "select", "--name", "s", "--json"]
    )
    selection = report["selection"]
    assert abs(sum(selection["weights"]) - 1) < 1e-5 and selection["images"] == 60  # 20% of 300
    assert selection["val_loss"] <= selection["val_loss_equal_weights"] + 1e-9
    configs = [store.read_checkpoint(Path(report["path"]) / "members" / m["name"]).config for m in report["members"]]
    assert {c["split_seed"] for c in configs} == {0} and [c["seed"] for c in configs] == [0, 1, 2]
    evaluated = _ok(runner, ["eval", "s", "--json"])
    assert [m["weight"] for m in evaluated["members"]] == pytest.approx(selection["weights"], abs=1e-5)


def test_from_builds_an_ensemble_of_finished_runs(runner: CliRunner, synthetic_env: Path) -> None:
    for seed in ("1", "2"):
        _ok(runner, ["train", "cnn", *SMALL, "--seed", seed, "--split-seed", "9", "--name", f"c{seed}"])
    report = _ok(runner, ["train", "ensemble", "--from", "c1,c2", "--combine", "select", "--name", "both", "--json"])
    assert [m["name"] for m in report["members"]] == ["01-c1", "02-c2"]
    assert report["calibration"]["fitted_on"] == "validation"
    _ok(runner, ["train", "linear", "--epochs", "1", "--name", "other"])  # holds out other images
    _refused(runner, ["train", "ensemble", "--from", "c1,other", "--combine", "select"], "same --val-split", code=2)
    _ok(runner, ["train", "cnn", *SMALL, "--classes", "0,1,2", "--name", "c012"])
    _refused(runner, ["train", "ensemble", "--from", "c1,c012"], "different digits")
    _refused(runner, ["train", "ensemble", "--from", "c1,c2", "--jobs", "2"], "--jobs", "--from")
    assert sorted(p.name for p in (Path(os.environ["MNISTCLI_HOME"]) / "runs").iterdir()) == sorted(
        ["c1", "c2", "both", "other", "c012"]
    )  # nothing refused left a folder behind
    soft = _ok(runner, ["train", "ensemble", "--from", "c1,other", "--name", "mixed", "--json"])
    assert soft["calibration"]["temperature"] == 1.0 and "different" in soft["calibration"]["note"]
    assert soft["config"]["from"] and soft["config"]["arch"] == "cnn,linear" and soft["config"]["members"] == 2
    _refused(runner, ["train", "ensemble", "--from", "c1,c1"], "twice")
    _refused(runner, ["train", "ensemble", "--from", "c1,nothing-here"], "nothing-here", code=1)
    _refused(runner, ["train", "ensemble", "--from", "c1,c2", "--epochs", "3"], "--epochs", "--from")


def test_bad_ensemble_options_are_refused_before_training(runner: CliRunner, synthetic_env: Path) -> None:
    _refused(runner, ["train", "ensemble", "--members", "0"], "--members")
    _refused(runner, ["train", "ensemble", "--arch", "simclr"], "simclr", "classifier")
    _refused(runner, ["train", "ensemble", "--arch", "cnnn"], "cnnn", code=2)
    _refused(runner, ["train", "ensemble", "--combine", "average"], "--combine")
    _refused(runner, ["train", "ensemble", "--arch", "cnn,mlp", "--arg", "width=4"], "width", code=2)
    _refused(runner, ["train", "cnn", "--jobs", "2"], "--jobs", "ensembles")
    _refused(runner, ["train", "cnn", "--from", "a,b"], "--from", "ensembles")
    _refused(runner, ["train", "ensemble", "--jobs", "0"], "--jobs")
    runs = Path(os.environ["MNISTCLI_HOME"]) / "runs"
    assert not runs.exists() or not any(runs.iterdir())  # nothing was claimed


def _stop_in_member(monkeypatch: pytest.MonkeyPatch, member: str, epoch: int) -> None:
    real = progress.RunView.on_epoch

    def epoch_then_stop(self: progress.RunView, info: object) -> None:
        real(self, info)
        if self.name == member and info.epoch == epoch:  # type: ignore[attr-defined]
            raise KeyboardInterrupt

    monkeypatch.setattr(progress.RunView, "on_epoch", epoch_then_stop)


def test_an_interrupted_ensemble_keeps_its_finished_members_and_resumes_the_rest(
    runner: CliRunner, synthetic_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["train", "ensemble", "--members", "3", *SMALL, "--epochs", "3"]
    whole = _ok(runner, [*args, "--name", "whole", "--json"])
    with monkeypatch.context() as patch:
        _stop_in_member(patch, "02-cnn-w32", 2)
        stopped = runner.invoke(app, [*args, "--name", "cut"])
    assert stopped.exit_code == 130, stopped.output
    assert "1 of 3 members done" in stopped.stderr and "mnist train --resume cut" in stopped.stderr
    listed = runner.invoke(app, ["checkpoints"])
    assert "cut: stopped with 1 of 3 members done" in listed.stderr
    first = store.run_folder("cut") / "members" / "01-cnn-w32" / "model.safetensors"
    before = first.stat().st_mtime_ns
    resumed = _ok(runner, ["train", "--resume", "cut", "--json"])
    assert first.stat().st_mtime_ns == before  # the finished member was not trained again
    assert resumed["test_accuracy"] == whole["test_accuracy"]
    a, b = load_file(Path(whole["path"]) / "model.safetensors"), load_file(Path(resumed["path"]) / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # as if never stopped


def test_ctrl_c_before_any_member_saved_anything_leaves_nothing(
    runner: CliRunner, synthetic_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def stop(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # Ctrl-C while the first member loads its data

    monkeypatch.setattr("mnistcli.api.training._setup", stop)
    stopped = runner.invoke(app, ["train", "ensemble", "--members", "2", *SMALL, "--name", "gone"])
    assert stopped.exit_code == 130 and "before training started" in stopped.stderr
    assert not (Path(os.environ["MNISTCLI_HOME"]) / "runs" / "gone").exists()


def _in_parallel(name: str, members: int, epochs: int) -> tuple[subprocess.Popen[str], Path]:
    """`mnist train ensemble --jobs 2` in a process group of its own (so Ctrl-C can reach it), and its members folder."""
    command = [sys.executable, "-m", "mnistcli", "train", "ensemble", "--members", str(members), *SMALL[:2]]
    command += ["--epochs", str(epochs), "--batch-size", "50", "--jobs", "2", "--name", name, "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    return process, Path(os.environ["MNISTCLI_HOME"]) / "runs" / name / "members"


def _wait_for_snapshots(folder: Path, count: int) -> None:
    """Until `count` members have written their first snapshot (both workers are training), at most a minute."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(folder.glob("*/resume.safetensors"))) < count:
        time.sleep(0.2)


@pytest.mark.parametrize("stop", [False, True])
def test_members_train_in_parallel_processes_and_ctrl_c_stops_them_all(synthetic_env: Path, stop: bool) -> None:
    process, folder = _in_parallel("par", 3, 5000 if stop else 2)  # stopped long before any member ends
    try:
        if stop:
            _wait_for_snapshots(folder, 2)
            os.killpg(process.pid, signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:  # nothing of the 5000 epochs trains on after the test, whatever stopped it
        kill_group(process)
    if not stop:
        assert process.returncode == 0, err
        report = json.loads(out)
        assert [m["name"] for m in report["members"]] == ["01-cnn-w32", "02-cnn-w32", "03-cnn-w32"]
        return
    assert process.returncode == 130, err
    assert "mnist train --resume par" in err and "Traceback" not in err
    assert sorted(p.parent.name for p in folder.glob("*/resume.safetensors")) == ["01-cnn-w32", "02-cnn-w32"]
    assert not (folder / "03-cnn-w32").exists()  # never started: Ctrl-C stops the ensemble, not just one member


# -- test-time augmentation -----------------------------------------------------------------------------------


def test_tta_averages_shifted_views_in_eval_and_predict(runner: CliRunner, synthetic_env: Path, tmp_path: Path) -> None:
    _ok(runner, ["train", "cnn", *SMALL, "--name", "c"])
    plain, tta = _ok(runner, ["eval", "c", "--json"]), _ok(runner, ["eval", "c", "--tta", "--json"])
    assert plain["tta"] is False and tta["tta"] is True and tta["total"] == plain["total"]
    run = store.resolve("c")
    model = store.load(run)
    images = _images(tmp_path / "digits")
    out = runner.invoke(app, ["predict", str(images), "-c", "c", "--tta", "--json"])
    assert out.exit_code == 0, out.output
    answers = [json.loads(line) for line in out.stdout.splitlines()]
    from mnistcli.data.images import load_image

    x = torch.from_numpy(np.stack([load_image(a["path"]) for a in answers])).unsqueeze(1)
    with torch.no_grad():
        expected = torch.softmax(ShiftAveraged(model)(x) / run.temperature, 1)
    assert np.allclose([a["probabilities"] for a in answers], expected.numpy(), atol=2e-6)
    _ok(runner, ["train", "simclr", "--arg", "width=4", "--epochs", "1", "--batch-size", "64", "--name", "ssl"])
    _refused(runner, ["eval", "ssl", "--tta"], "--tta")
    _refused(runner, ["predict", str(images), "-c", "ssl", "--tta"], "ssl", code=1)


def test_select_without_held_out_images_is_refused_before_anything_is_written(
    runner: CliRunner, synthetic_env: Path
) -> None:
    _refused(
        runner,
        ["train", "ensemble", "--members", "2", *SMALL[:4], "--val-split", "0", "--combine", "select"],
        "--val-split above 0",
    )
    runs = Path(os.environ["MNISTCLI_HOME"]) / "runs"
    assert not runs.exists() or not any(runs.iterdir())


def test_a_small_validation_split_fits_no_temperature_and_repeats_take_fresh_seeds(
    runner: CliRunner, synthetic_env: Path
) -> None:
    small = [*SMALL[:6], "--val-split", "0.1"]  # 30 held-out images: too few to fit a temperature on
    report = _ok(runner, ["train", "ensemble", "--members", "2", *small, "--name", "r", "--runs", "2", "--json"])
    assert report["each"][0]["run"] == "r-1"
    seeds = [
        [m["seed"] for m in store.read_checkpoint(store.run_folder(f"r-{i}")).family_entries["members"]] for i in (1, 2)
    ]
    assert seeds == [[0, 1], [2, 3]]  # no member trained twice
    calibration = store.read_checkpoint(store.run_folder("r-1")).calibration
    assert calibration is not None and calibration["temperature"] == 1.0 and "fewer than 50" in calibration["note"]


def test_tampered_ensembles_are_refused_in_one_line(runner: CliRunner, synthetic_env: Path, tmp_path: Path) -> None:
    _ok(runner, ["train", "ensemble", "--members", "2", *SMALL, "--name", "t"])
    meta_path = store.run_folder("t") / "meta.json"
    meta = json.loads(meta_path.read_text())
    for change, words in [
        (lambda m: m["model"]["args"].update(weights=[-1.0, 2.0]), "weights"),
        (lambda m: m["model"]["args"].update(temperatures=[0.0, 1.0]), "temperatures"),
        (lambda m: m["model"]["args"].update(weights=[1.0]), "one weight"),
        (lambda m: m.update(members=[{"name": 5}, {"name": None}]), "members"),
        (lambda m: m["model"]["args"].update(temperatures=[1e-320, 1.0]), "temperatures"),
        (lambda m: m["model"]["args"].update(weights=[True, False]), "weights"),
    ]:
        tampered = json.loads(json.dumps(meta))
        change(tampered)
        meta_path.write_text(json.dumps(tampered))
        _refused(runner, ["eval", "t"], words, code=1)
    meta_path.write_text(json.dumps(meta))
    honest = _ok(runner, ["eval", "t", "--json"])
    huge = json.loads(json.dumps(meta))
    huge["model"]["args"]["weights"] = [1e308, 1e308]  # equal weights, however large: the same ensemble
    meta_path.write_text(json.dumps(huge))
    assert _ok(runner, ["eval", "t", "--json"])["loss"] == pytest.approx(honest["loss"], rel=1e-5)
    meta_path.write_text(json.dumps(meta))

    with pytest.MonkeyPatch.context() as patch:
        _stop_in_member(patch, "02-cnn-w32", 1)
        assert runner.invoke(app, ["train", "ensemble", "--members", "2", *SMALL, "--name", "p"]).exit_code == 130
    plan_path = store.run_folder("p") / "plan.json"
    plan = json.loads(plan_path.read_text())
    for change in (
        lambda p: p.pop("member_options"),
        lambda p: p["members"][0].update(seed="x"),
        lambda p: p["members"][1].update(model="siamese"),
        lambda p: p.update(members=[]),
        lambda p: p["member_options"].update(epochs="x"),
        lambda p: p["options"].update(members="x"),
    ):
        tampered = json.loads(json.dumps(plan))
        change(tampered)
        plan_path.write_text(json.dumps(tampered))
        _refused(runner, ["train", "--resume", "p"], "plan.json", code=1)
    plan_path.write_text(json.dumps(plan))
    _refused(runner, ["train", "--resume", "p", "--jobs", "0"], "--jobs")
    _refused(runner, ["train", "--resume", "t", "--jobs", "2"], "not a stopped ensemble")
    _ok(runner, ["train", "--resume", "p"])


def test_a_worker_killed_outright_fails_the_ensemble_and_starts_no_more(synthetic_env: Path) -> None:
    process, folder = _in_parallel("k", 4, 300)
    _wait_for_snapshots(folder, 2)
    workers = subprocess.run(["pgrep", "-P", str(process.pid), "-f", "spawn_main"], capture_output=True, text=True)
    os.kill(int(workers.stdout.split()[0]), signal.SIGKILL)
    _, err = process.communicate(timeout=120)  # no hang: the other worker stops, the pending ones never start
    assert process.returncode == 1, err
    assert "ended without a result" in err and "mnist train --resume k" in err and "Traceback" not in err
    assert not (folder / "03-cnn-w32").exists() and not (folder / "04-cnn-w32").exists()
