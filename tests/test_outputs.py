"""Hostile input at the edges the user controls: where outputs go, numeric options and model arguments, control
characters in names, and numbers JSON cannot hold (issue 17, findings 1, 5 for new models, 8 and 9)."""

from __future__ import annotations

import io
import json
import os
import socket
import stat
import threading
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mnistcli.atomic import atomic_write_bytes, write_output
from mnistcli.cli import app
from mnistcli.errors import FileProblem
from mnistcli.render import console
from tests.helpers import make_digits, save_png


@pytest.fixture
def digit(tmp_path: Path) -> Path:
    images, _ = make_digits(1, seed=2)
    return save_png(images[0], tmp_path / "digit.png")


def _embed(runner: CliRunner, *args: str) -> object:
    return runner.invoke(app, ["embed", *args])  # the bundled cnn: no training needed


# -- where outputs go -----------------------------------------------------------------------------------------


def test_an_output_fifo_is_written_to_and_stays_a_fifo(runner: CliRunner, digit: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "vectors.npy"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    result = _embed(runner, str(digit), "--output", str(fifo))
    reader.join(timeout=60)
    assert result.exit_code == 0, result.output
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert np.load(io.BytesIO(got[0])).shape == (1, 576)


def test_an_output_device_is_written_to_and_stays_a_device(runner: CliRunner, digit: Path, tmp_path: Path) -> None:
    null = tmp_path / "null"
    try:
        os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # a private /dev/null: the real one is never risked
    except PermissionError:
        pytest.skip("making a device node needs root")
    result = _embed(runner, str(digit), "--output", str(null))
    assert result.exit_code == 0, result.output
    assert stat.S_ISCHR(null.stat().st_mode)


def test_dash_is_standard_output_and_cannot_share_it_with_json(runner: CliRunner, digit: Path) -> None:
    result = runner.invoke(app, ["embed", str(digit), "--output", "-"])
    assert result.exit_code == 0, result.output
    assert np.load(io.BytesIO(result.stdout_bytes)).shape == (1, 576)
    assert "standard output" in result.stderr
    both = runner.invoke(app, ["embed", str(digit), "--output", "-", "--json"])
    assert both.exit_code == 2 and "--output - and --json" in both.stderr


def test_a_socket_or_a_folder_is_refused_and_left_alone(runner: CliRunner, digit: Path, tmp_path: Path) -> None:
    sock_path = tmp_path / "s.npy"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    try:
        result = _embed(runner, str(digit), "--output", str(sock_path))
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert "it is a socket, not a regular file" in result.stderr and str(sock_path) in result.stderr
        assert stat.S_ISSOCK(sock_path.stat().st_mode)
    finally:
        server.close()
    folder = tmp_path / "out"
    folder.mkdir()
    result = _embed(runner, str(digit), "--output", str(folder))
    assert result.exit_code == 1 and "it is a folder" in result.stderr and folder.is_dir()


def test_through_a_link_the_file_it_names_is_replaced_and_the_link_stays(
    runner: CliRunner, digit: Path, tmp_path: Path
) -> None:
    real, link = tmp_path / "real.npy", tmp_path / "link.npy"
    real.write_bytes(b"old")
    link.symlink_to(real)
    assert _embed(runner, str(digit), "--output", str(link)).exit_code == 0
    assert link.is_symlink() and np.load(real).shape == (1, 576)


def test_the_store_never_writes_into_a_special_file(tmp_path: Path) -> None:
    fifo = tmp_path / "meta.json"
    os.mkfifo(fifo)
    with pytest.raises(FileProblem, match="it is a FIFO, not a regular file"):
        atomic_write_bytes(fifo, b"{}")  # an internal file: refused, never blocking on the FIFO
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    written = write_output(tmp_path / "new.bin", lambda f: f.write(b"x"))
    assert written.read_bytes() == b"x"


# -- options and model arguments ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--momentum", "nan"], "--momentum must be a finite number, not nan"),
        (["--momentum", "1.5"], "--momentum must be in [0, 1)"),
        (["--weight-decay", "-10"], "--weight-decay must be in [0, 1]"),
        (["--lr", "inf"], "--lr must be a finite number, not inf"),
        (["--label-smoothing", "nan"], "--label-smoothing must be a finite number"),
        (["--val-split", "nan"], "--val-split must be a finite number"),
        (["--target-accuracy", "nan"], "--target-accuracy must be a finite number"),
        (["--arg", "width=nan"], "width must be a whole number of at least 1, not 'nan'"),
        (["--arg", "width=1e400"], "width must be a whole number of at least 1, not inf"),
        (["--arg", "width=2.5"], "width must be a whole number"),
        (["--arg", "width=0"], "width must be a whole number"),
        (["--arg", "width=100000"], "would hold 900,041,300,013 numbers"),
    ],
)
def test_numeric_options_and_model_arguments_are_checked_before_training(
    runner: CliRunner, synthetic_env: Path, args: list[str], message: str
) -> None:
    result = runner.invoke(app, ["train", "cnn", "--epochs", "1", *args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("model", "args", "message"),
    [
        ("siamese", ["--margin", "nan"], "--margin must be a finite number"),
        ("simclr", ["--temperature", "inf"], "--temperature must be a finite number"),
        ("mil", ["--bag-size", "nan"], "--bag-size must be a finite number"),
        ("mlp-deep", ["--arg", "dropout=nan"], "dropout must be a finite number"),
        ("mlp-deep", ["--arg", "widths=[64,0]"], "widths must be a list of whole numbers"),
    ],
)
def test_every_family_refuses_numbers_that_are_not_finite(
    runner: CliRunner, synthetic_env: Path, model: str, args: list[str], message: str
) -> None:
    result = runner.invoke(app, ["train", model, "--epochs", "1", *args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr


def test_json_never_holds_nan_a_warning_names_what_became_null(capsys: pytest.CaptureFixture[str]) -> None:
    console.json_line({"test_loss": float("nan"), "each": [{"auc": float("inf")}, {"auc": 0.5}], "name": "x"})
    out, err = capsys.readouterr()
    assert json.loads(out) == {"test_loss": None, "each": [{"auc": None}, {"auc": 0.5}], "name": "x"}
    assert "NaN" not in out and "Infinity" not in out
    assert "test_loss (nan)" in err and "each[0].auc (inf)" in err


# -- control characters ---------------------------------------------------------------------------------------


def test_control_characters_in_names_are_escaped_in_tsv_tables_and_errors(runner: CliRunner, tmp_path: Path) -> None:
    images, _ = make_digits(2, seed=5)
    hostile = save_png(images[0], tmp_path / "a\nb\x1b[31mred.png")
    other = save_png(images[1], tmp_path / "plain.png")
    missing = tmp_path / "gone\x1b]0;title\x07.png"
    result = runner.invoke(app, ["predict", str(hostile), str(other), str(missing)])  # not a terminal: TSV
    assert result.exit_code == 1
    rows = result.stdout.splitlines()
    assert len(rows) == 2 and all(len(row.split("\t")) == 3 for row in rows)  # one record, one line
    assert rows[0].startswith(str(tmp_path / "a\\nb\\x1b[31mred.png") + "\t")
    assert "\x1b" not in result.stdout and "\x1b" not in result.stderr and "\x07" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "gone\\x1b]0;title\\x07.png" in errors[0]


def test_a_name_that_is_not_utf8_is_shown_as_its_bytes(tmp_path: Path) -> None:
    name = os.fsdecode(b"caf\xe9.png")  # Latin-1 bytes: Python holds them as surrogates
    assert console.shown(name) == "caf\\xe9.png"
    assert console.shown("tab\there\u202eevil") == "tab\\there\\u202eevil"
    assert console.shown("plain ünïcode 7") == "plain ünïcode 7"
