"""Data-parallel training (engine/dist.py, api/launching.py): `mnist train --nproc 2` as two gloo processes on loopback.

Two processes must train what one process trains: the same global batches in the same order, the same augmentation,
the gradients of the global batch's mean. A model without batch norm therefore follows one process's loss to float
precision; with batch norm (per-process statistics) it stays within noise. A killed process ends the job with one
message and no checkpoint, and the run goes on from its snapshot on any number of processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mnistcli.engine.dist import SINGLE, Dist
from mnistcli.engine.sampling import Shuffled, batch_starts
from mnistcli.errors import UsageError
from mnistcli.families import get_family
from mnistcli.registry import get_entry
from tests.helpers import write_mnist


def test_a_share_is_every_world_th_row_of_every_part() -> None:
    x, y = torch.arange(10), torch.arange(10) * 10
    assert SINGLE.shard((x, y)) == (x, y)
    first, second = Dist(0, 2).shard((x, None, y)), Dist(1, 2).shard((x, None, y))
    assert first[0].tolist() == [0, 2, 4, 6, 8] and first[1] is None and first[2].tolist() == [0, 20, 40, 60, 80]
    assert second[0].tolist() == [1, 3, 5, 7, 9]
    shares = [Dist(r, 3).shard(x).tolist() for r in range(3)]
    assert sorted(row for share in shares for row in share) == list(range(10))  # nothing dropped, nothing twice


def test_a_last_batch_too_small_to_share_joins_the_one_before() -> None:
    assert batch_starts(10, 4) == [0, 4, 8]  # a last batch of 2 is kept for one process
    assert batch_starts(10, 4, smallest=4) == [0, 4]  # two processes need 2 each: it joins the one before
    assert batch_starts(9, 4) == [0, 4]  # a last batch of 1 always joins
    assert batch_starts(5, 1) == [0, 1, 2, 3, 4]  # batches of one stay one
    assert len(Shuffled(1001, 64, smallest=4)) == 16


def test_families_say_when_their_batches_cannot_be_shared() -> None:
    def check(model: str, world: int, **options: object) -> None:
        family = get_family(get_entry(model).family)
        config, _ = family.configure(get_entry(model).recipe, options)
        family.check_processes(world, config)

    check("cnn", 2)
    with pytest.raises(UsageError, match="at least 4 images"):
        check("cnn", 2, batch_size=3)
    with pytest.raises(UsageError, match="one bag at a time"):
        check("mil", 2)
    with pytest.raises(UsageError, match="2 of each"):
        check("siamese", 4, batch_size=60)
    check("siamese", 1, batch_size=60)


def test_nproc_refuses_what_it_cannot_run(runner, synthetic_env) -> None:
    from mnistcli.cli import app

    result = runner.invoke(app, ["train", "cnn", "--nproc", "two"])
    assert result.exit_code == 2 and "--nproc 'two'" in result.output
    result = runner.invoke(app, ["train", "ensemble", "--nproc", "2"])
    assert result.exit_code == 2 and "--jobs" in result.output


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        ({"WORLD_SIZE": "abc"}, "WORLD_SIZE='abc' in the environment"),
        ({"RANK": "abc", "WORLD_SIZE": "2"}, "RANK='abc' in the environment"),
        ({"RANK": "0", "WORLD_SIZE": "2"}, "no MASTER_ADDR or MASTER_PORT"),
        ({"RANK": "5", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "9"}, "RANK must be from 0"),
    ],
)
def test_a_broken_distributed_environment_is_one_line_not_a_hang(
    runner, synthetic_env, monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], message: str
) -> None:
    from mnistcli.cli import app

    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    result = runner.invoke(app, ["train", "linear", "--epochs", "1"])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_nproc_from_python_refuses_rather_than_relaunching_another_command(runner, synthetic_env, monkeypatch) -> None:
    from mnistcli.cli import app

    monkeypatch.setattr(sys, "argv", ["mnist", "models"])  # what a test or an embedding program has
    result = runner.invoke(app, ["train", "linear", "--epochs", "1", "--nproc", "2"])
    assert result.exit_code == 2 and "in a shell" in result.output


def test_nproc_from_a_program_whose_own_arguments_hold_train_still_refuses(runner, synthetic_env, monkeypatch) -> None:
    from mnistcli.cli import app

    monkeypatch.setattr(sys, "argv", ["embed.py", "train"])  # the program's own command line, not this command
    result = runner.invoke(app, ["train", "linear", "--epochs", "1", "--nproc", "2"])
    assert result.exit_code == 2 and "in a shell" in result.output


def test_a_rank_other_than_0_says_its_own_errors(runner, synthetic_env, monkeypatch) -> None:
    from mnistcli.cli import app
    from mnistcli.render import console

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(console, "_speaker", "")
    try:
        result = runner.invoke(app, ["train", "linear", "--epochs", "1"])
    finally:
        console.out.quiet = console.err.quiet = False
        console._speaker = ""
    assert result.exit_code == 2 and "error: process 1: WORLD_SIZE=2 but no MASTER_ADDR" in result.output


def test_nproc_is_checked_before_any_process_starts(runner, synthetic_env) -> None:
    from mnistcli.cli import app

    result = runner.invoke(app, ["train", "cnn", "--nproc", "2", "--batch-size", "3"])
    assert result.exit_code == 2 and "at least 4 images" in result.output
    result = runner.invoke(app, ["train", "mil", "--nproc", "2"])
    assert result.exit_code == 2 and "one bag at a time" in result.output
    cores = os.cpu_count() or 1
    result = runner.invoke(app, ["train", "cnn", "--nproc", str(cores + 1), "--device", "cpu"])
    assert result.exit_code == 2 and "CPU cores" in result.output


# -- two real processes -----------------------------------------------------------------------------


def mnist(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [sys.executable, "-m", "mnistcli", *args], env=env, capture_output=True, text=True, timeout=600
    )
    if check:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.fixture
def env(tmp_path: Path, isolated_home: Path) -> dict[str, str]:
    """A private home and a synthetic MNIST of 2,001 training images (uneven batches), as the processes' environment."""
    data = write_mnist(tmp_path / "mnist", n_train=2001, n_test=200)
    return {**os.environ, "MNISTCLI_HOME": str(isolated_home), "MNIST_DATA_DIR": str(data), "OMP_NUM_THREADS": "1"}


def train_json(*args: str, env: dict[str, str]) -> dict:
    return json.loads(mnist("train", *args, "--json", env=env).stdout.splitlines()[-1])


@pytest.mark.slow  # two trainings of two processes each
def test_two_processes_train_what_one_process_trains(env: dict[str, str], isolated_home: Path) -> None:
    # 1,951 training images (50 held out to calibrate) in batches of 64: 31 steps an epoch, the last of 31 images
    # shared 16/15; with augmentation, 4 epochs, 124 optimizer steps.
    common = ["mlp", "--epochs", "4", "--batch-size", "64", "--augment", "--seed", "3"]
    one = train_json(*common, "--name", "one", env=env)
    two = train_json(*common, "--name", "two", "--nproc", "2", env=env)
    # No batch norm in mlp: the same images, the same augmentation, the same mean gradient, so the same curve.
    for a, b in zip(one["history"], two["history"], strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        assert b["train_accuracy"] == pytest.approx(a["train_accuracy"], abs=1e-3)
    assert two["test_accuracy"] == pytest.approx(one["test_accuracy"], abs=0.01)
    meta = json.loads((isolated_home / "runs" / "two" / "meta.json").read_text())
    assert meta["processes"] == 2 and meta["config"]["batch_size"] == 64
    assert json.loads((isolated_home / "runs" / "one" / "meta.json").read_text())["processes"] == 1
    # only rank 0 wrote: one run folder each, one log line per report
    assert sorted(p.name for p in (isolated_home / "runs").iterdir()) == ["one", "two"]
    log = (isolated_home / "runs" / "two" / "log.jsonl").read_text().splitlines()
    assert len(log) == len((isolated_home / "runs" / "one" / "log.jsonl").read_text().splitlines())


@pytest.mark.slow
def test_batch_norm_runs_stay_within_noise_and_evaluate(env: dict[str, str]) -> None:
    common = ["cnn", "--epochs", "2", "--batch-size", "64", "--seed", "1"]
    one = train_json(*common, "--name", "one", env=env)
    two = train_json(*common, "--name", "two", "--nproc", "2", env=env)
    assert abs(two["history"][-1]["train_loss"] - one["history"][-1]["train_loss"]) < 0.25
    assert two["test_accuracy"] > 0.5 and one["test_accuracy"] > 0.5
    evaluated = json.loads(mnist("eval", "two", "--json", env=env).stdout.splitlines()[-1])
    assert evaluated["accuracy"] == pytest.approx(two["test_accuracy"])  # the saved model is the one tested


def wait_for_an_epoch(folder: Path, job: subprocess.Popen[str]) -> None:
    """Until the run in `folder` has finished its first epoch (and saved its snapshot), or 5 minutes."""
    log = folder / "log.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and job.poll() is None:
        if log.exists() and '"event":"epoch"' in log.read_text():
            time.sleep(0.5)  # the snapshot follows the epoch's line
            return
        time.sleep(0.2)
    raise AssertionError(f"no epoch finished in {folder} (exit code {job.poll()})")


def ranks_of(home: Path) -> dict[int, int]:
    """{rank: pid} of the training processes whose MNISTCLI_HOME is `home` (Linux /proc)."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = dict(item.split("=", 1) for item in (proc / "environ").read_text().split("\0") if "=" in item)
        except OSError:
            continue
        if environ.get("MNISTCLI_HOME") == str(home) and "RANK" in environ and "LOCAL_RANK" in environ:
            found[int(environ["RANK"])] = int(proc.name)
    return found


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the processes through /proc")
def test_a_killed_process_stops_the_job_cleanly_and_the_run_resumes_on_one(
    env: dict[str, str], isolated_home: Path
) -> None:
    args = ["train", "cnn", "--epochs", "12", "--batch-size", "32", "--name", "killed", "--nproc", "2"]
    job = subprocess.Popen(
        [sys.executable, "-m", "mnistcli", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    wait_for_an_epoch(isolated_home / "runs" / "killed", job)
    ranks = ranks_of(isolated_home)
    assert 1 in ranks, (ranks, job.poll())
    os.kill(ranks[1], signal.SIGKILL)
    _, err = job.communicate(timeout=120)
    assert job.returncode == 1
    assert "process 1 of 2 was killed by SIGKILL" in err
    assert "Traceback" not in err
    assert not (isolated_home / "runs" / "killed" / "meta.json").exists()  # no checkpoint, half-written or not
    assert not ranks_of(isolated_home)  # no process left behind
    # The snapshot holds everything the processes shared: the run goes on in one process, to its end.
    resumed = json.loads(
        mnist("train", "--resume", "killed", "--json", env={**env, "OMP_NUM_THREADS": "2"}).stdout.splitlines()[-1]
    )
    assert len(resumed["history"]) == 12
    meta = json.loads((isolated_home / "runs" / "killed" / "meta.json").read_text())
    assert meta["processes"] == 1


@pytest.mark.slow
def test_repeated_runs_share_one_process_group_and_print_one_json_object(env: dict[str, str]) -> None:
    out = mnist("train", "linear", "--epochs", "1", "--runs", "2", "--nproc", "2", "--json", env=env)
    lines = out.stdout.splitlines()
    assert len(lines) == 1 and len(json.loads(lines[0])["runs"]) == 2


@pytest.mark.slow
@pytest.mark.parametrize("rank", [0, 1])
def test_an_error_in_one_process_is_said_once_and_leaves_no_run(
    env: dict[str, str], isolated_home: Path, tmp_path: Path, rank: int
) -> None:
    # A site hook (not product code) makes one process fail at its third optimizer step.
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os\n"
        "if os.environ.get('RANK') == os.environ.get('FAIL_RANK'):\n"
        "    from mnistcli.engine import loop\n"
        "    from mnistcli.errors import DataError\n"
        "    update = loop.Loop._update\n"
        "    def failing(self):\n"
        "        if self.position.step == 3:\n"
        "            raise DataError('injected failure')\n"
        "        update(self)\n"
        "    loop.Loop._update = failing\n"
    )
    failing = {**env, "PYTHONPATH": str(hook), "FAIL_RANK": str(rank)}
    out = mnist("train", "cnn", "--epochs", "2", "--name", "f", "--nproc", "2", env=failing, check=False)
    assert out.returncode == 1
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {'' if rank == 0 else 'process 1: '}injected failure"], out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    assert not (isolated_home / "runs" / "f" / "meta.json").exists()


@pytest.mark.slow
def test_ctrl_c_stops_every_process_with_one_resume_hint(env: dict[str, str], isolated_home: Path) -> None:
    args = ["train", "cnn", "--epochs", "12", "--batch-size", "32", "--name", "stopped", "--nproc", "2"]
    job = subprocess.Popen(  # its own process group, as a terminal's job: Ctrl-C reaches every process
        [sys.executable, "-m", "mnistcli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    wait_for_an_epoch(isolated_home / "runs" / "stopped", job)
    os.killpg(job.pid, signal.SIGINT)
    _, err = job.communicate(timeout=120)
    assert job.returncode == 130
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "resume with `mnist train --resume stopped`" in errors[0], err[-2000:]
    assert "Traceback" not in err
    resumed = json.loads(mnist("train", "--resume", "stopped", "--nproc", "2", "--json", env=env).stdout)
    assert len(resumed["history"]) == 12


@pytest.mark.slow
def test_sigterm_to_the_launcher_says_so_once_and_keeps_the_snapshot(env: dict[str, str], isolated_home: Path) -> None:
    args = ["train", "cnn", "--epochs", "12", "--batch-size", "32", "--name", "termed", "--nproc", "2"]
    job = subprocess.Popen(
        [sys.executable, "-m", "mnistcli", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    wait_for_an_epoch(isolated_home / "runs" / "termed", job)
    job.terminate()  # a scheduler or `timeout` stopping the job: only the launcher gets the signal
    _, err = job.communicate(timeout=120)
    assert job.returncode == 128 + signal.SIGTERM
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "stopped by SIGTERM" in errors[0] and "Traceback" not in err
    assert (isolated_home / "runs" / "termed" / "resume.safetensors").exists()
    assert not ranks_of(isolated_home)


def test_a_process_of_several_leaves_with_its_exit_code_and_all_it_printed(tmp_path: Path, isolated_home: Path) -> None:
    # One of several processes ends through os._exit (api/launching.py `leave`), skipping the interpreter's
    # finalization where gloo's threads can abort it: what it printed must still all come out, and its code.
    env = {**os.environ, "MNISTCLI_HOME": str(isolated_home), "WORLD_SIZE": "2", "RANK": "1"}
    listed = subprocess.run(
        [sys.executable, "-m", "mnistcli", "models", "--json"], env=env, capture_output=True, text=True, timeout=120
    )
    assert listed.returncode == 0 and len([json.loads(line) for line in listed.stdout.splitlines()]) > 10
    refused = subprocess.run(
        [sys.executable, "-m", "mnistcli", "train", "linear", "--epochs", "1"],
        env={k: v for k, v in env.items() if k not in ("MASTER_ADDR", "MASTER_PORT")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 2 and "no MASTER_ADDR" in refused.stderr and "Traceback" not in refused.stderr


def test_a_killed_process_is_named_even_when_the_one_it_stopped_is_seen_first() -> None:
    # The others of a job whose process was killed leave with PEER_EXIT and say nothing (PeerFailed); if the launcher
    # sees one of them first, the cause is still the killed one (CI caught the race once the ranks left faster).
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    from mnistcli.api.launching import _cause
    from mnistcli.errors import PEER_EXIT

    peer = ProcessFailure(local_rank=0, pid=1, exitcode=PEER_EXIT, error_file="<none>")
    killed = ProcessFailure(local_rank=1, pid=2, exitcode=-9, error_file="<none>")
    peer.timestamp, killed.timestamp = 100, 200
    rank, failure = _cause(ChildFailedError("mnistcli", {0: peer, 1: killed}))
    assert (rank, failure.exitcode) == (1, -9)
    rank, failure = _cause(ChildFailedError("mnistcli", {0: peer}))
    assert (rank, failure.exitcode) == (0, PEER_EXIT)
    stopped = ProcessFailure(local_rank=0, pid=1, exitcode=-15, error_file="<none>")  # the launcher's SIGTERM
    stopped.timestamp = killed.timestamp  # recorded within the same second
    rank, failure = _cause(ChildFailedError("mnistcli", {0: stopped, 1: killed}))
    assert (rank, failure.exitcode) == (1, -9)
    failed = ProcessFailure(local_rank=0, pid=1, exitcode=1, error_file="<none>")  # an error of its own, said
    stopped.timestamp, failed.timestamp = 100, 200
    rank, failure = _cause(ChildFailedError("mnistcli", {0: failed, 1: stopped}))
    assert (rank, failure.exitcode) == (0, 1)
