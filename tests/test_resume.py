"""Stopping and resuming: Ctrl-C saves what a run needs, `mnist train --resume` finishes it as if never stopped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from mnistcli import api, store
from mnistcli.cli import app
from mnistcli.errors import Interrupted
from mnistcli.render import progress
from mnistcli.store import snapshot
from mnistcli.store.runlog import read_log

# One run per family, small, with what draws random numbers or keeps state across epochs switched on:
# augmentation, a schedule, a validation split with early stopping (best weights), calibration.
RUNS = {
    "cnn": ["--arg", "width=4", "--augment", "--scheduler", "onecycle", "--early-stopping", "5", "--val-split", "0.2"],
    "mlp-deep": ["--arg", "widths=[16]", "--scheduler", "cosine", "--optimizer", "nesterov", "--lr", "0.05"],
    "adder": ["--arg", "width=4", "--augment"],
    "simclr": ["--arg", "width=4", "--batch-size", "32"],
    # self-supervision for epoch 1, then grouped and self-labelled afresh at epochs 2 and 3 (the stop falls in 2; the
    # test keeps every group, which a tiny model on 300 images is rarely confident enough for)
    "siamese": "--arg width=4 --arg dim=16 --batch-size 30 --ssl-weight 0.5 --classes 0,1,2 --per-class 20 --clusters 5"
    " --cluster-from 2".split(),
    "mil": ["--bags", "12", "--batch-size", "2", "--augment", "--remix", "1"],
}


def _train(runner: CliRunner, model: str, name: str, epochs: int = 3) -> dict:
    args = ["train", model, *RUNS[model], "--epochs", str(epochs), "--seed", "7", "--name", name, "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _stop_in_epoch(monkeypatch: pytest.MonkeyPatch, epoch: int) -> None:
    """Ctrl-C as the progress bar hears of epoch `epoch`'s end (before that epoch's snapshot)."""
    real = progress.TrainProgress.epoch

    def epoch_then_stop(self: progress.TrainProgress, info: object) -> None:
        real(self, info)  # type: ignore[arg-type]
        if info.epoch == epoch:  # type: ignore[attr-defined]
            raise KeyboardInterrupt

    monkeypatch.setattr(progress.TrainProgress, "epoch", epoch_then_stop)


def _epochs(report: dict) -> list[dict]:
    """The per-epoch metrics without their wall-clock times."""
    return [{k: v for k, v in e.items() if k != "seconds"} for e in report["history"]]


@pytest.mark.parametrize("model", list(RUNS))
def test_a_resumed_run_ends_bit_identical_to_an_uninterrupted_one(
    model: str, runner: CliRunner, synthetic_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mnistcli.protocols import clustering

    monkeypatch.setattr(clustering, "CONFIDENCE", -1.0)  # every image self-labelled (siamese)
    whole = _train(runner, model, "whole")
    with monkeypatch.context() as patch:
        _stop_in_epoch(patch, 2)
        args = ["train", model, *RUNS[model], "--epochs", "3", "--seed", "7", "--name", "cut"]
        stopped = runner.invoke(app, args)
    assert stopped.exit_code == 130, stopped.output
    assert "resume with `mnist train --resume cut`" in stopped.stderr and "Traceback" not in stopped.output
    folder = store.run_folder("cut")
    assert (folder / snapshot.SNAPSHOT).is_file() and not (folder / store.META).exists()
    assert store.resolve(None, suggest=model).name != "cut"  # never anyone's latest model while unfinished

    resumed = runner.invoke(app, ["train", "--resume", "cut", "--json"])
    assert resumed.exit_code == 0, resumed.output
    report = json.loads(resumed.stdout)
    assert _epochs(report) == _epochs(whole) and report["test_accuracy"] == whole["test_accuracy"]
    assert report["calibration"] == whole["calibration"]
    a, b = load_file(Path(whole["path"]) / "model.safetensors"), load_file(folder / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), model
    steps, epochs = read_log(folder / "log.jsonl")
    assert [e["epoch"] for e in epochs] == [1, 2, 3]  # the stopped epoch's lines were replaced, not repeated
    assert [s["step"] for s in steps] == sorted({s["step"] for s in steps})
    assert not (folder / snapshot.SNAPSHOT).exists()  # a complete run needs no snapshot
    assert "cut" in [r.name for r in store.list_runs()]  # now a checkpoint like any other


def test_resume_refuses_what_it_cannot_do(runner: CliRunner, synthetic_env: Path) -> None:
    with pytest.raises(Interrupted, match=r"0 of 2 epochs done and saved: resume with `mnist train --resume cut`"):

        def stop(info: object) -> None:
            raise KeyboardInterrupt

        api.train("linear", {"epochs": 2, "batch_size": 50}, name="cut", on_epoch=stop)
    listed = runner.invoke(app, ["checkpoints"])
    assert "cut" in listed.stderr + listed.stdout and "--resume cut" in listed.stderr + listed.stdout
    other = runner.invoke(app, ["train", "--resume", "cut", "--epochs", "5"])
    assert other.exit_code == 2 and "--epochs" in other.stderr and "Traceback" not in other.output
    done = runner.invoke(app, ["train", "linear", "--epochs", "1", "--name", "done"])
    assert done.exit_code == 0
    again = runner.invoke(app, ["train", "--resume", "done"])
    assert again.exit_code == 1 and "complete" in again.stderr
    missing = runner.invoke(app, ["train", "--resume", "nothing-here"])
    assert missing.exit_code == 1 and "nothing-here" in missing.stderr
    broken = store.run_folder("cut") / snapshot.SNAPSHOT
    broken.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    bad = runner.invoke(app, ["train", "--resume", "cut"])
    assert bad.exit_code == 1 and "resume.safetensors" in bad.stderr and "Traceback" not in bad.output


def test_every_family_is_resumed_above() -> None:
    from mnistcli.families import family_names
    from mnistcli.registry import get_entry

    # An ensemble resumes member by member: tests/test_ensemble.py stops one in a member and resumes it.
    assert {get_entry(model).family for model in RUNS} | {"ensemble"} == set(family_names())


def _stop_at(epoch: int):  # type: ignore[no-untyped-def]
    def stop(info: object) -> None:
        if info.epoch == epoch:  # type: ignore[attr-defined]
            raise KeyboardInterrupt

    return stop


def test_ctrl_c_in_the_first_epoch_after_a_resume_keeps_the_run(synthetic_env: Path) -> None:
    """From the review: this deleted the whole folder, snapshot included."""
    with pytest.raises(Interrupted):
        api.train("linear", {"epochs": 4, "batch_size": 50}, name="cut", on_epoch=_stop_at(2))
    with pytest.raises(Interrupted, match="1 of 4 epochs done"):
        api.resume("cut", on_step=_stop_at(2))  # Ctrl-C during epoch 2, before its snapshot
    assert (store.run_folder("cut") / snapshot.SNAPSHOT).is_file()
    api.resume("cut")
    assert len(store.resolve("cut").info.history) == 4


@pytest.mark.parametrize("where", ["mnistcli.families.classify.ClassifyFamily.test", "mnistcli.store.save"])
def test_ctrl_c_after_the_last_epoch_says_how_to_resume(
    where: str, runner: CliRunner, synthetic_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C in the final test or while saving: the last snapshot is still there, and the message says so."""

    def stop(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(where, stop)
        stopped = runner.invoke(app, ["train", "linear", "--epochs", "2", "--name", "late"])
    assert stopped.exit_code == 130 and "2 of 2 epochs done and saved: resume with" in stopped.stderr
    resumed = runner.invoke(app, ["train", "--resume", "late", "--json"])
    assert resumed.exit_code == 0 and len(json.loads(resumed.stdout)["history"]) == 2


def test_resume_takes_run_names_and_folders_not_model_names(runner: CliRunner, synthetic_env: Path) -> None:
    with pytest.raises(Interrupted):
        api.train("linear", {"epochs": 2, "batch_size": 50}, name="cut", on_epoch=_stop_at(1))
    model = runner.invoke(app, ["train", "--resume", "cnn"])
    assert model.exit_code == 1 and "no run named 'cnn' to resume" in model.stderr
    folder = store.run_folder("cut")
    (folder / "log.jsonl").unlink()  # a stopped run whose log is gone is still listed, and still resumes
    assert "cut" in api.interrupted_runs()
    by_file = runner.invoke(app, ["train", "--resume", str(folder / snapshot.SNAPSHOT)])
    assert by_file.exit_code == 0, by_file.output
    assert "resumed after epoch 0" in by_file.stderr.replace("\n", " ")


def test_sigterm_stops_a_training_as_ctrl_c_does_and_it_resumes(
    runner: CliRunner, synthetic_env: Path, isolated_home: Path
) -> None:
    """`kill PID` (or a scheduler ending the job): the snapshot is kept, the run is released, exit 143, one line."""
    import os
    import signal
    import subprocess
    import sys
    import time

    command = [sys.executable, "-m", "mnistcli", "train", "mlp", "--arg", "hidden=16", "--epochs", "300"]
    command += ["--batch-size", "50", "--name", "term"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    folder = isolated_home / "runs" / "term"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (folder / snapshot.SNAPSHOT).is_file():
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "resume with `mnist train --resume term`" in errors[0] and "Traceback" not in err
    assert not (isolated_home / "runs" / ".term.lock").exists()  # released, not left behind
    listed = runner.invoke(app, ["checkpoints"])
    assert "--resume term" in listed.output, listed.output
