"""Run folders that are not what the store wrote: forged snapshots, FIFOs, links and folders in a file's place.

Each is refused in one line naming the file and the problem (exit 1, no traceback), never waited on, and never
hides the other runs from `mnist checkpoints`. A stopped run is claimed before `mnist train --resume` reads it, so
`mnist checkpoints rm` meanwhile is refused, or has removed it for good.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mnistcli import api, store
from mnistcli.cli import app
from mnistcli.errors import CheckpointError, FileProblem, Interrupted
from mnistcli.store import lock, runlog, snapshot
from tests.helpers import deadline, save_png

BUNDLED = store.BUNDLED_ROOT / "cnn-pretrained"


@pytest.fixture(scope="module")
def stopped_template(tmp_path_factory: pytest.TempPathFactory, synthetic_dir: Path) -> Iterator[Path]:
    """A run of `linear` stopped with 1 of 2 epochs done (its log and its resume snapshot), trained once."""
    home = tmp_path_factory.mktemp("template-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MNISTCLI_HOME", str(home))
        mp.setenv("MNIST_DATA_DIR", str(synthetic_dir))

        def stop(info: object) -> None:
            raise KeyboardInterrupt

        with pytest.raises(Interrupted, match="1 of 2 epochs done"):
            api.train("linear", {"epochs": 2, "batch_size": 50}, name="template", on_epoch=_after_first(stop))
    yield home / "runs" / "template"


def _after_first(then: object) -> object:
    """An `on_epoch` hook that lets the first epoch end (its snapshot is written) and calls `then` at the second."""
    seen = [0]

    def hook(info: object) -> None:
        seen[0] += 1
        if seen[0] == 2:
            then(info)  # type: ignore[operator]

    return hook


def stopped(home: Path, template: Path, name: str = "stopped") -> Path:
    """A copy of the stopped template run in `home`'s store, named `name`."""
    folder = home / "runs" / name
    shutil.copytree(template, folder)
    return folder


def one_error(result: object, *words: str) -> str:
    """The one `error:` line of a command that failed with exit code 1 (no traceback), checked to hold `words`."""
    output: str = result.output  # type: ignore[attr-defined]
    assert result.exit_code == 1, output  # type: ignore[attr-defined]
    assert result.exception is None or isinstance(result.exception, SystemExit), output  # type: ignore[attr-defined]
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in output, output
    assert all(w in errors[0] for w in words), errors[0]
    return errors[0]


def rewrite_snapshot(path: Path, change: object) -> None:
    """Rewrite the safetensors header of the snapshot at `path`: `change(header)` edits the parsed snapshot JSON."""
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    outer = json.loads(data[8 : 8 + size])
    inner = json.loads(outer["__metadata__"]["snapshot"])
    change(inner)  # type: ignore[operator]
    outer["__metadata__"]["snapshot"] = json.dumps(inner)
    header = json.dumps(outer).encode()
    header += b" " * (-len(header) % 8)  # safetensors pads its header to 8 bytes
    path.write_bytes(len(header).to_bytes(8, "little") + header + data[8 + size :])


def deep_snapshot(folder: Path) -> None:
    """A snapshot whose description nests 100000 lists deep (a RecursionError in any recursive reader)."""
    header = json.dumps({"__metadata__": {"snapshot": "[" * 100_000 + "]" * 100_000}}).encode()
    (folder / snapshot.SNAPSHOT).write_bytes(len(header).to_bytes(8, "little") + header)


def test_a_snapshot_nested_too_deep_hides_no_other_run(runner: CliRunner, isolated_home: Path) -> None:
    folder = isolated_home / "runs" / "deep"
    folder.mkdir(parents=True)
    (folder / runlog.LOG).write_text('{"event":"step","step":1}\n')
    deep_snapshot(folder)
    listed = runner.invoke(app, ["checkpoints"])
    assert listed.exit_code == 0 and listed.exception is None, listed.output
    assert "cnn-pretrained" in listed.stdout and "deep: interrupted before saving" in listed.stderr


def test_resuming_a_snapshot_nested_too_deep_is_one_line(runner: CliRunner, isolated_home: Path) -> None:
    folder = isolated_home / "runs" / "deep"
    folder.mkdir(parents=True)
    deep_snapshot(folder)
    one_error(runner.invoke(app, ["train", "--resume", "deep"]), "resume.safetensors", "nested too deep")
    assert lock.holder(folder) is None and not lock.lock_file(folder).exists()


def _set(path: str, value: object) -> object:
    """A change to a snapshot's JSON setting the field at dotted `path` (under "run") to `value`."""

    def change(inner: dict) -> None:
        *parents, last = path.split(".")
        where = inner["run"]
        for key in parents:
            where = where[key]
        where[last] = value

    return change


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("model", ["cnn"], "'run.model'"),
        ("model", "no-such-model", "'run.model'"),
        ("options", [1, 2], "'run.options'"),
        ("options.epochs", "5", "'run.options.epochs'"),
        ("options.lr", -1.0, "'run.options'"),
        ("options.no_such_option", 1, "'run.options'"),
        ("args", "width=4", "'run.args'"),
        ("data", 5, "'run.data'"),
        ("log_bytes", -3, "'run.log_bytes'"),
        ("tensorboard", "yes", "'run.tensorboard'"),
    ],
)
def test_a_forged_run_description_is_one_line_naming_the_field(
    field: str, value: object, named: str, runner: CliRunner, isolated_home: Path, stopped_template: Path
) -> None:
    folder = stopped(isolated_home, stopped_template)
    rewrite_snapshot(folder / snapshot.SNAPSHOT, _set(field, value))
    for args in (["train", "--resume", "stopped"], ["train", "--resume", "stopped", "--nproc", "2"]):
        one_error(runner.invoke(app, args), "resume.safetensors", named)
    assert lock.holder(folder) is None and not lock.lock_file(folder).exists()  # released on the way out


def test_a_snapshot_without_a_position_is_one_line(
    runner: CliRunner, isolated_home: Path, stopped_template: Path
) -> None:
    folder = stopped(isolated_home, stopped_template)
    rewrite_snapshot(folder / snapshot.SNAPSHOT, lambda inner: inner.update(state={"__dict__": []}))
    one_error(runner.invoke(app, ["train", "--resume", "stopped"]), "resume.safetensors", "position")


@pytest.mark.parametrize("nproc", [[], ["--nproc", "2"]])
def test_a_fifo_snapshot_is_refused_without_waiting(nproc: list[str], runner: CliRunner, isolated_home: Path) -> None:
    folder = isolated_home / "runs" / "piped"
    folder.mkdir(parents=True)
    os.mkfifo(folder / snapshot.SNAPSHOT)
    with deadline(20):
        resumed = runner.invoke(app, ["train", "--resume", "piped", *nproc])
    one_error(resumed, "resume.safetensors", "not a regular file (a FIFO)")


def test_a_fifo_log_is_refused_by_resume_and_plot_without_waiting(
    runner: CliRunner, isolated_home: Path, stopped_template: Path, tmp_path: Path
) -> None:
    folder = stopped(isolated_home, stopped_template)
    (folder / runlog.LOG).unlink()
    os.mkfifo(folder / runlog.LOG)
    with deadline(30):
        resumed = runner.invoke(app, ["train", "--resume", "stopped"])
        nproc = runner.invoke(app, ["train", "--resume", "stopped", "--nproc", "2"])
        plotted = runner.invoke(app, ["plot", "stopped", "-o", str(tmp_path / "curves.png")])
    for result in (resumed, nproc, plotted):
        one_error(result, "log.jsonl", "a FIFO")
    assert lock.holder(folder) is None and not lock.lock_file(folder).exists()


@pytest.mark.parametrize("kind", ["link", "folder"])
def test_a_log_that_is_no_file_in_the_run_is_never_written(
    kind: str, runner: CliRunner, isolated_home: Path, stopped_template: Path, tmp_path: Path
) -> None:
    """A log.jsonl linking to a file elsewhere would have been appended to, and cut to the snapshot's length."""
    folder = stopped(isolated_home, stopped_template)
    log = folder / runlog.LOG
    outside = tmp_path / "precious.txt"
    outside.write_text("x" * 100_000)
    log.unlink()
    if kind == "link":
        log.symlink_to(outside)
    else:
        log.mkdir()
    one_error(runner.invoke(app, ["train", "--resume", "stopped"]), "log.jsonl", "cannot write the run log")
    assert outside.read_text() == "x" * 100_000


def test_the_run_log_refuses_what_is_no_regular_file_itself(tmp_path: Path) -> None:
    """RunLog and cut check what they opened (fstat), not only what was there before: a FIFO with a reader opens."""
    fifo, outside, link = tmp_path / "fifo", tmp_path / "outside", tmp_path / "link"
    os.mkfifo(fifo)
    outside.write_text("keep me")
    link.symlink_to(outside)
    with deadline(10):
        with pytest.raises(FileProblem, match="a FIFO"):
            runlog.RunLog(fifo)  # no reader: it cannot even be opened
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        try:
            with pytest.raises(FileProblem, match="a FIFO"):
                runlog.RunLog(fifo)  # a reader: it opens, and fstat refuses it
            with pytest.raises(FileProblem, match="a FIFO"):
                runlog.cut(fifo, 0)
        finally:
            os.close(reader)
        with pytest.raises(FileProblem, match="symbolic link"):
            runlog.RunLog(link)
        with pytest.raises(FileProblem, match="symbolic link"):
            runlog.cut(link, 2)
        with pytest.raises(FileProblem, match="a FIFO"):
            runlog.read_log(fifo)
    assert outside.read_text() == "keep me"
    log = runlog.RunLog(tmp_path / "log.jsonl")  # a regular file is written as ever
    log.write("step", {"step": 1})
    log.close()
    runlog.cut(tmp_path / "log.jsonl", 5)
    assert (tmp_path / "log.jsonl").read_text() == '{"eve'


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_a_run_training_now_is_said_to_be_in_use(
    command: str, runner: CliRunner, isolated_home: Path, stopped_template: Path, tmp_path: Path
) -> None:
    folder = stopped(isolated_home, stopped_template, "busy")
    image = save_png(np.zeros((28, 28), np.uint8), tmp_path / "digit.png")
    args = ["eval", "busy"] if command == "eval" else ["predict", "-c", "busy", str(image)]
    with lock.claimed(folder):  # as a training holds it
        in_use = runner.invoke(app, args)
    one_error(in_use, f"run 'busy' is in use by a training (pid {os.getpid()})")
    free = runner.invoke(app, args)  # once it is not: what it is
    one_error(free, "interrupted before saving", "--resume busy")


def test_an_rm_while_resume_reads_the_snapshot_is_refused(
    runner: CliRunner, isolated_home: Path, stopped_template: Path, synthetic_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run is claimed before its snapshot is read: an rm then is refused (it was not claimed, and took the run
    away under the training's feet)."""
    stopped(isolated_home, stopped_template)
    read, tried = snapshot.read, []

    def read_then_rm(folder: Path) -> tuple[dict, dict]:
        found = read(folder)
        with pytest.raises(CheckpointError, match="is in use by a training") as refused:
            store.remove("stopped")
        tried.append(str(refused.value))
        return found

    monkeypatch.setattr(snapshot, "read", read_then_rm)
    resumed = runner.invoke(app, ["train", "--resume", "stopped"])
    assert resumed.exit_code == 0, resumed.output
    assert len(tried) == 1 and (isolated_home / "runs" / "stopped" / store.META).is_file()


def test_a_run_removed_before_resume_claims_it_is_not_made_again(
    runner: CliRunner, isolated_home: Path, stopped_template: Path, synthetic_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = stopped(isolated_home, stopped_template)
    claim, removed = lock.claim, []

    def rm_then_claim(where: Path, doing: str = lock.TRAINING) -> None:
        if where == folder and doing == lock.TRAINING and not removed:
            removed.append(
                store.remove("stopped")
            )  # `mnist checkpoints rm stopped`, done between finding the run and claiming it
        claim(where, doing)

    monkeypatch.setattr(lock, "claim", rm_then_claim)
    one_error(runner.invoke(app, ["train", "--resume", "stopped"]), "run 'stopped' is gone")
    assert not folder.exists() and not lock.lock_file(folder).exists()


@pytest.mark.parametrize("kind", ["fifo", "device", "folder", "dangling"])
def test_a_run_whose_weights_are_no_file_is_listed_as_unreadable(
    kind: str, runner: CliRunner, isolated_home: Path
) -> None:
    runs = isolated_home / "runs"
    for name in ("good", "odd"):
        shutil.copytree(BUNDLED, runs / name)
    weights = runs / "odd" / store.WEIGHTS
    weights.unlink()
    if kind == "fifo":
        os.mkfifo(weights)
    elif kind == "device":
        weights.symlink_to(os.devnull)
    elif kind == "folder":
        weights.mkdir()
    else:
        weights.symlink_to(runs / "nowhere")
    with deadline(20):
        listed = runner.invoke(app, ["checkpoints", "--json"])
    assert listed.exit_code == 0 and listed.exception is None, listed.output
    names = [json.loads(line)["name"] for line in listed.stdout.splitlines() if line.strip()]
    assert "good" in names and "odd" not in names, listed.stdout
    errors = [line for line in listed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "odd: cannot be read" in errors[0] and store.WEIGHTS in errors[0], listed.stderr


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_a_run_log_on_a_full_disk_is_still_one_error_naming_it(tmp_path: Path) -> None:
    """A log linked to /dev/full is refused now (a device): the full disk is met by the log's own descriptor."""
    path = tmp_path / "log.jsonl"
    full = os.open("/dev/full", os.O_WRONLY)
    try:
        log = runlog.RunLog(path)
        os.dup2(full, log.file.fileno())  # every write: ENOSPC
        with pytest.raises(FileProblem, match=r"log\.jsonl: cannot write the run log \(No space left on device\)"):
            log.write("step", {"step": 1})
        log.close()  # what it could not write is not reported twice
        assert log.file.closed
        other = runlog.RunLog(path)
        os.dup2(full, other.file.fileno())
        other.file.write("x")  # not a whole line yet: it reaches the file when a snapshot flushes the log
        with pytest.raises(FileProblem, match="No space left on device"):
            other.flush()
        other.close()
    finally:
        os.close(full)


def _position(field: str, value: object) -> object:
    """A change to a snapshot's JSON setting the loop position's `field` to `value` (JSON as the store encodes it)."""

    def change(inner: dict) -> None:
        position = next(v for k, v in inner["state"]["__dict__"] if k == "position")["__dict__"]
        for pair in position:
            if pair[0] == field:
                pair[1] = value
                return
        position.append([field, value])

    return change


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("step", "x", "'state.position.step'"),
        ("seconds", -1, "'state.position.seconds'"),
        ("history", [5], "'state.position.history[0]'"),
        ("history", [{"epoch": 1}], "'state.position.history[0].train_loss'"),
        ("stopped_early", "no", "'state.position.stopped_early'"),
        ("elsewhere", 1, "'elsewhere'"),
    ],
)
def test_a_forged_position_is_one_line_naming_the_field(
    field: str, value: object, named: str, runner: CliRunner, isolated_home: Path, stopped_template: Path
) -> None:
    folder = stopped(isolated_home, stopped_template)
    rewrite_snapshot(folder / snapshot.SNAPSHOT, _position(field, value))
    one_error(runner.invoke(app, ["train", "--resume", "stopped"]), "resume.safetensors", named)
    assert not (folder / "meta.json").exists()  # nothing trained on, nothing saved that cannot be read back


def test_a_snapshot_without_the_model_state_is_one_line(
    runner: CliRunner, isolated_home: Path, stopped_template: Path
) -> None:
    folder = stopped(isolated_home, stopped_template)

    def drop_model(inner: dict) -> None:
        inner["state"]["__dict__"] = [p for p in inner["state"]["__dict__"] if p[0] != "model"]

    rewrite_snapshot(folder / snapshot.SNAPSHOT, drop_model)
    one_error(runner.invoke(app, ["train", "--resume", "stopped"]), "resume.safetensors", "does not fit the run")
    assert lock.holder(folder) is None


def test_a_snapshot_or_a_log_larger_than_any_run_writes_is_refused_unread(
    runner: CliRunner, isolated_home: Path, stopped_template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stopped(isolated_home, stopped_template)
    monkeypatch.setattr(snapshot, "MAX_SNAPSHOT_BYTES", 100)  # as a 20 GB file meets the real limit
    one_error(runner.invoke(app, ["train", "--resume", "stopped"]), "resume.safetensors", "more than a snapshot")
    monkeypatch.setattr(runlog, "MAX_LOG_BYTES", 10)
    one_error(runner.invoke(app, ["plot", "stopped", "-o", str(isolated_home / "pics")]), "log.jsonl", "more than")
