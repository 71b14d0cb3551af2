"""`mnist train --runs N --jobs J`: repeated runs trained several at a time, each in a worker process."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mnistcli.cli import app
from tests.helpers import kill_group

QUICK = ["train", "mlp", "--arg", "hidden=16", "--epochs", "2", "--batch-size", "50"]


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One CPU thread here, so that a run in this process and a worker's (its share: one) add up floats alike."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_runs_at_once_train_the_same_models_as_one_after_another(
    runner: CliRunner, synthetic_env: Path, one_thread: None
) -> None:
    together = runner.invoke(app, [*QUICK, "--runs", "3", "--jobs", "2", "--name", "p", "--json"])
    assert together.exit_code == 0, together.output
    in_turn = runner.invoke(app, [*QUICK, "--runs", "3", "--name", "s", "--json"])
    assert in_turn.exit_code == 0, in_turn.output
    a, b = json.loads(together.stdout), json.loads(in_turn.stdout)
    assert a["runs"] == ["p-1", "p-2", "p-3"] and a["seeds"] == b["seeds"] == [0, 1, 2]
    assert [e["test_accuracy"] for e in a["each"]] == [e["test_accuracy"] for e in b["each"]]
    assert a["mean"] == b["mean"] and a["std"] == b["std"]
    listed = runner.invoke(app, ["checkpoints", "--json"])
    assert {"p-1", "p-2", "p-3", "s-1", "s-2", "s-3"} <= {json.loads(r)["name"] for r in listed.stdout.splitlines()}


def test_runs_at_once_without_names_each_get_a_run_of_their_own(runner: CliRunner, synthetic_env: Path) -> None:
    result = runner.invoke(app, [*QUICK, "--runs", "3", "--jobs", "3", "--json"])
    assert result.exit_code == 0, result.output
    runs = json.loads(result.stdout)["runs"]
    stem = runs[0].removesuffix("-1")  # mlp-<UTC date-time>: one name for the three, numbered in seed order
    assert re.fullmatch(r"mlp-\d{8}-\d{6}", stem) and runs == [f"{stem}-{i}" for i in (1, 2, 3)], runs


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--jobs", "2"], ["--jobs is for ensembles", "--runs"]),
        (["--runs", "2", "--jobs", "0"], ["--jobs must be 1-64"]),
        (["--runs", "3", "--name", "bad/name"], ["invalid run name 'bad/name'"]),
        (["--runs", "2", "--jobs", "2", "--momentum", "2"], ["--momentum"]),
        (["--runs", "2", "--jobs", "2", "--arg", "hidden=0"], ["hidden must be a whole number of at least 1"]),
        (
            ["--runs", "2", "--jobs", "2", "--optimizer", "sgd", "--scheduler", "onecycle", "--epochs", "0"],
            ["--epochs"],
        ),
        (["--runs", "2", "--jobs", "2", "--nproc", "2"], ["--jobs and --nproc"]),
    ],
)
def test_jobs_without_repeats_or_with_nproc_is_refused(
    runner: CliRunner, synthetic_env: Path, args: list[str], words: list[str]
) -> None:
    result = runner.invoke(app, [*QUICK, *args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stderr.count("\n") == 1 and "at a time" not in result.stderr  # refused before any work is announced
    for word in words:
        assert word in result.stderr
    assert not (Path(os.environ["MNISTCLI_HOME"]) / "runs").exists()


def test_runs_at_once_are_refused_in_a_process_torchrun_started(
    runner: CliRunner, synthetic_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = runner.invoke(app, [*QUICK, "--runs", "2", "--jobs", "2"])
    assert result.exit_code == 2, result.output
    assert (
        result.stderr == "error: --jobs: this is already one of several processes (torchrun started it); drop --jobs\n"
    )


def test_ctrl_c_stops_every_run_and_names_those_that_can_go_on(synthetic_env: Path) -> None:
    # Epochs enough that no run ends before both workers are under way, however slowly they start.
    command = [sys.executable, "-m", "mnistcli", *QUICK[:4], "--epochs", "5000", "--batch-size", "50"]
    command += ["--runs", "3", "--jobs", "2", "--name", "c"]
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    runs = Path(os.environ["MNISTCLI_HOME"]) / "runs"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(list(runs.glob("c-*/resume.safetensors"))) < 2:
            time.sleep(0.2)
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C at a terminal does: the whole foreground group
        _, err = process.communicate(timeout=120)
    finally:  # nothing of the 5000 epochs trains on after the test, whatever stopped it
        kill_group(process)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    said = [line for line in err.splitlines() if line.startswith("error:")]
    assert said == [
        "error: interrupted: 0 of 3 runs finished and are kept; resume c-1, c-2 with `mnist train --resume NAME`;"
        " c-3 never got to an epoch's end (train it again)"
    ], err


def test_a_failed_run_stops_the_others_with_one_message(synthetic_env: Path, tmp_path: Path) -> None:
    # A site hook (not product code) makes the run with seed 1 fail as it starts, in whichever worker runs it.
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "from mnistcli.api import training\n"
        "from mnistcli.errors import DataError\n"
        "train = training.train\n"
        "def failing(model, options, *args, **kwargs):\n"
        "    if options.get('seed') == 1:\n"
        "        raise DataError('injected failure')\n"
        "    return train(model, options, *args, **kwargs)\n"
        "training.train = failing\n"
    )
    env = {**os.environ, "PYTHONPATH": str(hook), "OMP_NUM_THREADS": "2"}
    command = [sys.executable, "-m", "mnistcli", *QUICK, "--runs", "3", "--jobs", "2", "--name", "f"]
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: f-2: injected failure (")
    assert "Traceback" not in out.stderr
    runs = Path(os.environ["MNISTCLI_HOME"]) / "runs"
    assert not (runs / "f-2").exists() and not (runs / "f-3" / "meta.json").exists()  # f-3 never finished


def test_unnamed_repeats_started_in_the_same_second_get_names_of_their_own(
    isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import datetime, timezone

    from mnistcli.api import repeating

    class Frozen(datetime):
        @classmethod
        def now(cls, tz: object = None) -> datetime:  # type: ignore[override]
            return datetime(2026, 12, 4, 10, 50, 15, tzinfo=timezone.utc)

    monkeypatch.setattr(repeating, "datetime", Frozen)
    first = repeating.repeat_names(None, 2, "mlp")  # each holds its stem until its process ends
    second = repeating.repeat_names(None, 2, "mlp")
    assert first == ["mlp-20261204-105015-1", "mlp-20261204-105015-2"]
    assert second == ["mlp-20261204-105015.2-1", "mlp-20261204-105015.2-2"]
