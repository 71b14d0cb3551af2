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
from tests.helpers import deadline, make_digits, save_png


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


# -- review findings: descriptors, program-named files, permissions, long names, settings, diverged runs --------

BUNDLED = Path(__file__).parent.parent / "src" / "mnistcli" / "pretrained" / "cnn-pretrained"
LONG = "a" * 300  # longer than a file name may be (255 bytes): looking it up fails with ENAMETOOLONG


def _errors(result: object) -> list[str]:
    """The `error:` lines of a CLI result, after checking there is no traceback."""
    assert "Traceback" not in result.output  # type: ignore[attr-defined]
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]  # type: ignore[attr-defined]


def _copy_run(home: Path, name: str | bytes) -> Path:
    """The bundled cnn copied into the store as a run called `name` (bytes: a name that is not UTF-8)."""
    import shutil

    runs = os.fsencode(home / "runs")
    os.makedirs(runs, exist_ok=True)
    target = os.path.join(runs, name if isinstance(name, bytes) else os.fsencode(name))
    shutil.copytree(os.fsencode(BUNDLED), target)
    return Path(os.fsdecode(target))


@pytest.mark.parametrize("spelling", ["/dev/fd/{fd}", "/proc/self/fd/{fd}"])
def test_a_descriptor_named_as_output_is_appended_to_not_replaced(
    runner: CliRunner, digit: Path, tmp_path: Path, spelling: str
) -> None:
    log = tmp_path / "a.txt"
    log.write_text("PREFIX\n")
    inode = log.stat().st_ino
    fd = os.open(log, os.O_WRONLY | os.O_APPEND)  # as a shell's `>> a.txt` opens it
    try:
        result = _embed(runner, str(digit), "-o", spelling.format(fd=fd), "--format", "csv")
    finally:
        os.close(fd)
    assert result.exit_code == 0, result.output
    lines = log.read_text().splitlines()
    assert lines[0] == "PREFIX" and lines[1].startswith("path,e0,") and len(lines) == 3
    assert log.stat().st_ino == inode  # the same file, not a new one renamed over it


def test_dev_stdout_redirected_to_a_file_is_appended_to(digit: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    log = tmp_path / "a.txt"
    log.write_text("PREFIX\n")
    with open(log, "ab") as f:
        cmd = [sys.executable, "-m", "mnistcli", "embed", str(digit), "-o", "/dev/stdout", "--format", "csv"]
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=120, check=False)
    assert done.returncode == 0
    text = log.read_text()
    assert text.startswith("PREFIX\npath,e0,") and "wrote 1 embeddings" in text and "Traceback" not in text


@pytest.mark.parametrize("output", ["/dev/stdout", "/proc/self/fd/1", "-"])
def test_standard_output_named_any_way_cannot_share_it_with_json(runner: CliRunner, digit: Path, output: str) -> None:
    result = _embed(runner, str(digit), "-o", output, "--json")
    assert result.exit_code == 2 and result.stdout == ""
    assert _errors(result) == [f"error: --output {output} and --json both write to standard output: give one of them"]


def test_plot_never_writes_into_a_fifo_at_a_file_name_it_made_up(runner: CliRunner, tmp_path: Path) -> None:
    folder = tmp_path / "pl"
    folder.mkdir()
    fifo = folder / "cnn-pretrained-curves.png"
    os.mkfifo(fifo)
    with deadline(30):
        result = runner.invoke(app, ["plot", "cnn-pretrained", "-o", str(folder)])
    assert result.exit_code == 1
    assert _errors(result) == [f"error: {fifo}: cannot write: it is a FIFO, not a regular file, and is left as it is"]
    assert stat.S_ISFIFO(fifo.stat().st_mode) and os.listdir(folder) == [fifo.name]


def test_names_are_escaped_in_the_checkpoints_table_and_eval(
    runner: CliRunner, synthetic_env: Path, isolated_home: Path
) -> None:
    names: list[str | bytes] = ["a\x1b[31mred", "new\nline", "rtl\u202eevil", b"by\xffte", "br[bold]x"]
    for name in names:
        _copy_run(isolated_home, name)
    listed = runner.invoke(app, ["checkpoints"])
    assert listed.exit_code == 0, listed.output
    table = listed.stdout
    for escaped in ("a\\x1b[31mred", "new\\nline", "rtl\\u202eevil", "by\\xffte", "br[bold]x"):
        assert escaped in table
        assert sum(escaped in line for line in table.splitlines()) == 1  # one row each, on one line
    assert "\x1b" not in table and "\u202e" not in table and "\udcff" not in table
    folder = isolated_home / "runs" / "a\x1b[31mred"
    evaluated = runner.invoke(app, ["eval", str(folder)])
    assert evaluated.exit_code == 0, evaluated.output
    assert evaluated.stdout.splitlines()[0].startswith("a\\x1b[31mred (cnn")
    assert "\x1b" not in evaluated.output
    bracket = runner.invoke(app, ["eval", str(isolated_home / "runs" / "br[bold]x")])
    assert bracket.stdout.splitlines()[0].startswith("br[bold]x (cnn")


def test_replacing_an_output_keeps_its_permissions(runner: CliRunner, digit: Path, tmp_path: Path) -> None:
    private = tmp_path / "priv.npy"
    private.write_bytes(b"old")
    private.chmod(0o600)
    linked = tmp_path / "link.npy"
    os.link(private, linked)
    assert _embed(runner, str(digit), "-o", str(private)).exit_code == 0
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert np.load(private).shape == (1, 576)
    assert linked.read_bytes() == b"old"  # atomic replacement: a new file; the hard link keeps the old one


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["plot", "cnn-pretrained", "-o", LONG], f"--output {LONG}"),
        (["predict", "{digit}", "--plot", LONG + ".png"], LONG + ".png"),
        (["predict", "{digit}", "--show-input", LONG], f"--show-input {LONG}"),
        (["oneshot", "{digit}", "--support-dir", LONG], f"--support-dir {LONG}"),
        (["settings", f"data_dir={LONG}"], f"data_dir={LONG}"),
    ],
)
def test_a_path_too_long_is_one_line_not_a_traceback(
    runner: CliRunner, digit: Path, args: list[str], named: str
) -> None:
    result = runner.invoke(app, [a.format(digit=digit) for a in args])
    assert result.exit_code == 2, result.output
    assert _errors(result) == [f"error: {named}: file name too long"]


def test_a_settings_file_that_is_a_fifo_is_refused_not_waited_on(runner: CliRunner, isolated_home: Path) -> None:
    os.mkfifo(isolated_home / "settings.json")
    for args in (["settings"], ["eval", "cnn-pretrained"]):  # eval: no data folder given, so it reads the settings
        with deadline(30):
            result = runner.invoke(app, args)
        assert result.exit_code == 1, result.output
        assert _errors(result) == [f"error: {isolated_home / 'settings.json'}: not a regular file (a FIFO)"]


@pytest.mark.parametrize(("depth", "problem"), [(30_000, "nested too deeply"), (100_000, "larger than 64 KiB")])
def test_a_settings_file_nested_deep_or_huge_is_one_line(
    runner: CliRunner, isolated_home: Path, depth: int, problem: str
) -> None:
    (isolated_home / "settings.json").write_text("[" * depth + "]" * depth)
    result = runner.invoke(app, ["settings"])
    assert result.exit_code == 1
    errors = _errors(result)
    assert len(errors) == 1 and str(isolated_home / "settings.json") in errors[0] and problem in errors[0]


def test_a_diverged_run_answers_no_digit(runner: CliRunner, digit: Path, isolated_home: Path) -> None:
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    weights = _copy_run(isolated_home, "diverged") / "model.safetensors"
    with safe_open(str(weights), "np") as f:
        metadata = f.metadata()
    nan = {k: np.full_like(v, np.nan) if v.dtype.kind == "f" else v for k, v in load_file(weights).items()}
    save_file(nan, str(weights), metadata=metadata)
    result = runner.invoke(app, ["predict", str(digit), "-c", "diverged"])
    assert result.exit_code == 1 and result.stdout == ""
    assert _errors(result) == [f"error: {digit}: the model's output is not a number: the run diverged"]


def test_invisible_and_reordering_characters_are_escaped_too() -> None:
    # A name that reads as another: zero-width spaces and joiners, bidi marks, the word joiner, a byte-order mark.
    for char in ("\u200b", "\u200c", "\u200d", "\u200e", "\u200f", "\u061c", "\u2060", "\ufeff", "\u202e"):
        assert console.shown(f"lin{char}1") == f"lin\\u{ord(char):04x}1"
    assert console.shown("naïve ünïcode, 日本") == "naïve ünïcode, 日本"  # letters stay as they are


def test_a_support_folder_named_with_an_escape_is_escaped_in_oneshot(runner: CliRunner, tmp_path: Path) -> None:
    images, _ = make_digits(4, seed=3)
    support = tmp_path / "support"
    for label in ("1\x1b[31m", "plain"):
        (support / label).mkdir(parents=True)
    save_png(images[0], support / "1\x1b[31m" / "a.png")
    save_png(images[1], support / "plain" / "b.png")
    query = save_png(images[2], tmp_path / "q.png")
    result = runner.invoke(app, ["oneshot", "-c", "cnn-pretrained", "--support-dir", str(support), str(query)])
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stdout and len(result.stdout.splitlines()) == 1


def test_a_nul_in_the_remembered_folder_and_a_home_too_long_are_one_line(
    runner: CliRunner, isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MNIST_DATA_DIR", raising=False)
    (isolated_home / "settings.json").write_text('{"data_dir": "\\u0000x"}')
    for args in (["settings"], ["eval", "-c", "cnn-pretrained"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert result.stderr.endswith(
            "settings.json: data_dir holds a NUL character; fix it or run `mnist settings --reset`\n"
        )
    monkeypatch.setenv("MNISTCLI_HOME", str(isolated_home / ("a" * 300)))
    result = runner.invoke(app, ["checkpoints"])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert result.stderr.count("\n") == 1 and "File name too long" in result.stderr, result.output
