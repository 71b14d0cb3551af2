"""How a command's process ends once torch is loaded (mnistcli/exiting.py): without the interpreter's finalization,
but with its exit handlers run, its output whole and its exit status kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**os.environ, **env}
    )


def test_leave_runs_the_exit_handlers_flushes_and_keeps_the_status() -> None:
    done = python(
        "import atexit, sys, torch\nfrom mnistcli import exiting\n"
        "atexit.register(lambda: print('handler ran'))\n"
        "sys.stdout.write('written, never flushed; ')\nexiting.leave(3)\n"
    )
    assert done.returncode == 3 and done.stdout == "written, never flushed; handler ran\n"
    said = python("from mnistcli import exiting\nexiting.leave('error: no such run')")
    assert said.returncode == 1 and said.stderr == "error: no such run\n"
    assert python("from mnistcli import exiting\nexiting.leave(None)").returncode == 0


def test_a_thread_still_working_gets_the_ordinary_exit_which_waits_for_it(tmp_path: Path) -> None:
    mark = tmp_path / "mark"
    done = python(
        "import sys, threading, time, torch\nfrom mnistcli.cli import main\n"
        f"def work():\n    time.sleep(0.5)\n    open({str(mark)!r}, 'w').write('done')\n"
        "threading.Thread(target=work).start()\n"
        "sys.argv = ['mnist', 'models', '--json']\nmain()\n"
    )
    assert done.returncode == 0 and [json.loads(line) for line in done.stdout.splitlines()]
    assert mark.read_text() == "done"


def test_a_training_process_ends_with_its_run_whole_and_released(synthetic_dir: Path, tmp_path: Path) -> None:
    env = {"MNIST_DATA_DIR": str(synthetic_dir), "MNISTCLI_HOME": str(tmp_path / "home")}
    command = "import sys\nfrom mnistcli.cli import main\nsys.argv = ['mnist', *sys.argv[1:]]\nmain()\n"
    trained = subprocess.run(
        [sys.executable, "-c", command, "train", "linear", "--epochs", "1", "--name", "r", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )
    assert trained.returncode == 0, trained.stderr
    assert json.loads(trained.stdout)["run"] == "r"
    removed = subprocess.run(
        [sys.executable, "-m", "mnistcli", "checkpoints", "rm", "r"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )
    assert removed.returncode == 0, removed.stderr  # the claim on the run went with the exit handlers
    assert not (tmp_path / "home" / "runs" / "r").exists()


MAIN = "import sys{torch}\nfrom mnistcli.cli import main\nsys.argv = ['mnist', *sys.argv[1:]]\nmain()\n"
USER_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # buffered, as a user's shell has it
# (what is run, with torch loaded first or not): JSON lines, a rich table, rich's help (typer's own console)
ENDINGS = [(["models", "--json"], ""), (["models", "--json"], ", torch"), (["models"], ""), (["--help"], "")]


@pytest.mark.parametrize(("args", "torch"), ENDINGS)
def test_output_that_cannot_be_written_is_an_error_not_a_silent_success(args: list[str], torch: str) -> None:
    with open("/dev/full", "w") as full:  # every write: ENOSPC, as on a full disk
        done = subprocess.run(
            [sys.executable, "-c", MAIN.format(torch=torch), *args],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            env=USER_ENV,
        )
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines() == ["error: standard output: No space left on device"]


@pytest.mark.parametrize(("args", "torch"), ENDINGS)
def test_a_reader_that_left_is_no_error(args: list[str], torch: str) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", MAIN.format(torch=torch), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=USER_ENV,
    )
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()  # gone before the first line is written
    assert child.wait(timeout=120) == 0
    assert child.stderr.read() == b""


def test_a_closed_standard_output_is_one_line() -> None:
    done = subprocess.run(
        ["bash", "-c", f"{sys.executable} -m mnistcli models --json >&-"],
        capture_output=True,
        text=True,
        timeout=120,
        env=USER_ENV,
    )
    assert done.returncode == 1 and done.stderr == "error: standard output is closed\n"
