"""A run's life under faults: killed at any moment, a full disk, and two processes after the same run.

The trainings that meet a fault run as `mnist train` processes with a `sitecustomize.py` on their PYTHONPATH (as in
tests/test_distributed.py) that acts at a chosen call, `MNIST_FAULT=SITE:N:ACTION`: at the N-th call of SITE it
SIGKILLs the process (`kill`), fills the disk (`full`: RLIMIT_FSIZE lowered under what is being written, with SIGXFSZ
ignored, so the write fails with EFBIG as it would with ENOSPC), or stops there holding its run (`pause`, after
touching the file MNIST_FAULT_READY). What comes after (`mnist checkpoints`, `eval`, `--resume`, `rm`) runs here,
through the CLI runner.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mnistcli.cli import app
from mnistcli.errors import CheckpointError
from mnistcli.store import lock, snapshot

HOOK = r"""
import os, signal, time

site, n, action = os.environ["MNIST_FAULT"].split(":")
calls = [0]


def due():
    calls[0] += 1
    return calls[0] == int(n)


def act(room=0):
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "pause":
        open(os.environ["MNIST_FAULT_READY"], "w").close()
        while True:
            time.sleep(60)
    elif action == "full":  # no room for more than `room` bytes in any file
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (room, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


from mnistcli import atomic, store
from mnistcli.engine import loop
from mnistcli.store import runlog, weights
from mnistcli.store import snapshot as snap

if site == "begin":  # the run's folder is claimed: nothing written yet
    begin = store.begin

    def hooked_begin(*args, **kwargs):
        folder = begin(*args, **kwargs)
        if due():
            act()
        return folder

    store.begin = hooked_begin
elif site == "step":  # an optimizer step, mid-epoch
    update = loop.Loop._update

    def hooked_update(self):
        if due():
            act()
        update(self)

    loop.Loop._update = hooked_update
elif site == "log":  # a line of log.jsonl
    write = runlog.RunLog.write

    def hooked_write(self, event, values):
        if due():
            self.file.flush()
            act(self.file.tell())
        write(self, event, values)

    runlog.RunLog.write = hooked_write
elif site in ("weights", "meta"):  # the checkpoint's files: the weights, then meta.json
    names = {"weights": "model.safetensors", "meta": "meta.json"}
    for writer in ("atomic_write_bytes", "atomic_write_text"):  # store/weights.py writes both
        def hooked_save(path, payload, _real=getattr(weights, writer)):
            if path.name == names[site] and due():
                act(len(payload) // 2)
            return _real(path, payload)

        setattr(weights, writer, hooked_save)
elif site == "snapshot":  # the resume snapshot, killed half-way through writing it
    real = snap.atomic_write_bytes

    def hooked_snapshot(path, payload):
        if due():
            if action == "kill":
                def half(f):
                    f.write(payload[: len(payload) // 2])
                    f.flush()
                    act()

                return atomic.atomic_write(path, half)
            act(len(payload) // 2)
        return real(path, payload)

    snap.atomic_write_bytes = hooked_snapshot
"""

EPOCHS, STEPS = 3, 8  # 250 training images (50 held out to calibrate) in batches of 32: 8 steps an epoch
TRAIN = ["train", "linear", "--epochs", str(EPOCHS), "--batch-size", "32", "--seed", "1"]
rng = random.Random(17)
# (site, call): where the training dies, and whether a resume snapshot is there afterwards. The first snapshot is
# written before the first step, so a run killed at any step can be resumed; one killed while writing it cannot.
KILLS = [
    ("begin", 1, False),
    ("step", rng.randint(1, EPOCHS * STEPS), True),
    ("snapshot", 1, False),
    ("snapshot", rng.randint(2, EPOCHS + 1), True),
    ("meta", 1, True),
]


def hooked_env(tmp_path: Path, fault: str) -> dict[str, str]:
    hook = tmp_path / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(HOOK)
    env = {**os.environ, "PYTHONPATH": str(hook), "MNIST_FAULT": fault, "OMP_NUM_THREADS": "1"}
    return {**env, "MNIST_FAULT_READY": str(tmp_path / "ready")}


def mnist(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "mnistcli", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def one_line_error(result: subprocess.CompletedProcess[str] | object, *words: str) -> str:
    """The one `error:` line of a failed command (no traceback), checked to hold `words`."""
    stderr: str = result.stderr  # type: ignore[attr-defined]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert all(w in errors[0] for w in words), errors[0]
    return errors[0]


def leftovers(folder: Path) -> list[str]:
    """Temporary files of writes that never finished in the run's folder, and its lock file beside it."""
    found = [p.name for p in folder.rglob(".*.tmp")]
    return sorted(found + ([lock.lock_file(folder).name] if lock.lock_file(folder).exists() else []))


@pytest.mark.parametrize(("site", "call", "resumable"), KILLS, ids=[f"{s}-{c}" for s, c, _ in KILLS])
def test_a_training_killed_at_any_moment_leaves_a_store_that_works(
    site: str, call: int, resumable: bool, tmp_path: Path, runner: CliRunner, synthetic_env: Path, isolated_home: Path
) -> None:
    done = runner.invoke(app, [*TRAIN, "--epochs", "1", "--name", "done"])
    assert done.exit_code == 0, done.output
    killed = mnist(*TRAIN, "--name", "victim", env=hooked_env(tmp_path, f"{site}:{call}:kill"))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    folder = isolated_home / "runs" / "victim"

    listed = runner.invoke(app, ["checkpoints"])
    assert listed.exit_code == 0 and "Traceback" not in listed.output, listed.output
    assert ("--resume victim" in listed.output) == resumable
    latest = runner.invoke(app, ["eval"])
    assert latest.exit_code == 0 and "done" in latest.output, latest.output
    assert (folder / snapshot.SNAPSHOT).is_file() == resumable
    resumed = runner.invoke(app, ["train", "--resume", "victim"])
    if resumable:
        assert resumed.exit_code == 0, resumed.output
        assert runner.invoke(app, ["eval", "victim"]).exit_code == 0
        assert leftovers(folder) == []  # a killed write's temporary file is swept when the run is taken up again
    else:
        assert resumed.exit_code == 1, resumed.output
        one_line_error(resumed, "nothing to resume")
        assert runner.invoke(app, ["checkpoints", "rm", "victim"]).exit_code == 0


@pytest.mark.parametrize("site", ["weights", "meta", "log", "snapshot"])
def test_a_full_disk_ends_with_one_line_naming_the_file(
    site: str, tmp_path: Path, runner: CliRunner, synthetic_env: Path, isolated_home: Path
) -> None:
    call = {"log": 5, "snapshot": 2}.get(site, 1)  # the log's 5th line comes after the first epoch's snapshot
    full = mnist(*TRAIN, "--name", "full", env=hooked_env(tmp_path, f"{site}:{call}:full"))
    assert full.returncode == 1, full.stderr[-3000:]
    file = {"weights": "model.safetensors", "meta": "meta.json", "log": "log.jsonl", "snapshot": "resume.safetensors"}
    one_line_error(full, f"{file[site]}: cannot write", "File too large", "--resume full")
    folder = isolated_home / "runs" / "full"
    assert not (folder / "meta.json").exists() and leftovers(folder) == []  # nothing half-written
    if site == "meta":  # the weights went in whole before the disk filled up
        assert (folder / "model.safetensors").is_file()
    listed = runner.invoke(app, ["checkpoints"])
    assert listed.exit_code == 0 and "--resume full" in listed.output, listed.output
    resumed = runner.invoke(app, ["train", "--resume", "full"])  # once there is room again
    assert resumed.exit_code == 0, resumed.output
    assert (folder / "meta.json").is_file()


def test_a_run_in_training_is_refused_to_others_and_freed_when_its_process_dies(
    tmp_path: Path, runner: CliRunner, synthetic_env: Path, isolated_home: Path
) -> None:
    env = hooked_env(tmp_path, "step:3:pause")
    cmd = [sys.executable, "-m", "mnistcli", *TRAIN, "--name", "busy"]
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ready = tmp_path / "ready"
        deadline = time.monotonic() + 300
        while not ready.exists():  # waits for the training to reach its third step, holding its run
            assert first.poll() is None and time.monotonic() < deadline, "the training never got to its third step"
            time.sleep(0.1)
        folder = isolated_home / "runs" / "busy"
        assert lock.holder(folder) == f"a training (pid {first.pid})"
        in_use = f"run 'busy' is in use by a training (pid {first.pid})"
        for args in (
            [*TRAIN, "--name", "busy"],
            ["train", "--resume", "busy"],
            ["checkpoints", "rm", "busy"],
        ):
            refused = runner.invoke(app, args)
            assert refused.exit_code == 1, (args, refused.output)
            one_line_error(refused, in_use)
        listed = runner.invoke(app, ["checkpoints"])  # said to be training, not stopped and resumable
        assert listed.exit_code == 0 and f"busy: in use by a training (pid {first.pid})" in listed.stderr
        assert "--resume busy" not in listed.output, listed.output
        assert (folder / snapshot.SNAPSHOT).is_file() and first.poll() is None  # untouched, still training
    finally:
        first.kill()
        first.wait()
    assert lock.holder(folder) is None  # the kernel dropped the lock with the process
    resumed = runner.invoke(app, ["train", "--resume", "busy"])
    assert resumed.exit_code == 0, resumed.output
    assert leftovers(folder) == []
    removed = runner.invoke(app, ["checkpoints", "rm", "busy"])
    assert removed.exit_code == 0 and not folder.exists(), removed.output


def test_an_ensemble_and_the_member_in_training_are_both_claimed(synthetic_env: Path, isolated_home: Path) -> None:
    from mnistcli import api, store

    ens, seen = isolated_home / "runs" / "ens", []

    def probe(info: object) -> None:
        member = store.member_folders(ens)[-1]
        seen.append((lock.holder(ens), lock.holder(member)))
        with pytest.raises(CheckpointError, match="run 'ens' is in use by a training"):
            store.remove("ens")

    options = {"members": 2, "arch": "linear", "epochs": 1, "batch_size": 50, "val_split": 0.2}
    api.train("ensemble", options, name="ens", on_epoch=probe)
    me = f"a training (pid {os.getpid()})"
    assert seen == [(me, me), (me, me)]
    assert lock.holder(ens) is None and leftovers(ens) == [] and store.member_folders(ens)
