"""Where the data comes from, as a new user meets it: a folder that worked is remembered, `mnist settings`
shows and changes it, missing folders and files are named, and eval needs only the test files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mnistcli.cli import app
from mnistcli.data import mnist
from mnistcli.errors import DataError, UsageError
from tests.helpers import write_mnist

TRAIN = ["train", "linear", "--epochs", "1", "--batch-size", "50", "--json"]
THREE_WAYS = ("--data-dir DIR", "MNIST_DATA_DIR=DIR", "mnist settings data_dir=DIR")


def settings(runner: CliRunner, *args: str) -> dict:
    result = runner.invoke(app, ["settings", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_the_quickstart_remembers_the_folder_that_worked(runner: CliRunner, synthetic_dir: Path) -> None:
    assert settings(runner) == {"data_dir": None}
    trained = runner.invoke(app, [*TRAIN, "--data-dir", str(synthetic_dir)])
    assert trained.exit_code == 0, trained.output
    assert f"remembered {synthetic_dir}" in trained.stderr and "mnist settings" in trained.stderr
    assert settings(runner) == {"data_dir": str(synthetic_dir)}
    evaluated = runner.invoke(app, ["eval", "--json"])  # the quickstart's next line, no --data-dir
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["accuracy"] == pytest.approx(json.loads(trained.stdout)["test_accuracy"])
    again = runner.invoke(app, ["eval", "--data-dir", str(synthetic_dir), "--json"])
    assert again.exit_code == 0 and "remembered" not in again.stderr  # said once, when it changed
    assert settings(runner, "--reset") == {"data_dir": None}
    forgotten = runner.invoke(app, ["eval"])  # no mirror answers in the tests
    assert forgotten.exit_code == 1 and "could not download" in forgotten.stderr
    assert all(way in forgotten.stderr for way in THREE_WAYS), forgotten.stderr


def test_search_order_data_dir_then_environment_then_remembered_then_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    given, env, remembered = (write_mnist(tmp_path / n, n_train=10, n_test=10) for n in ("given", "env", "kept"))
    assert mnist.remember(remembered) == remembered.resolve()
    assert mnist.resolve_dir(None) == remembered
    monkeypatch.setenv("MNIST_DATA_DIR", str(env))
    assert mnist.resolve_dir(None) == env
    assert mnist.resolve_dir(given) == given
    assert mnist.remember(remembered) is None  # unchanged
    assert mnist.remember(tmp_path / "nothing") is None and mnist.remember(tmp_path) is None  # not MNIST folders


def test_settings_change_validate_and_reset(runner: CliRunner, tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "my mnist"
    folder.mkdir()
    monkeypatch.chdir(tmp_path)
    assert settings(runner, "data_dir=my mnist") == {"data_dir": str(folder)}  # stored absolute
    note = runner.invoke(app, ["settings", "data_dir=my mnist"])
    assert note.exit_code == 0 and "no MNIST file for train-images-idx3-ubyte" in note.stderr  # accepted, but said
    table = runner.invoke(app, ["settings"])
    assert table.exit_code == 0 and "data_dir" in table.stdout and str(folder) in table.stdout.replace("\n", "")
    (tmp_path / "a-file").write_text("")
    for pair, message in (
        ("data_dir=/no/such/folder", "data_dir=/no/such/folder: no such folder"),
        (f"data_dir={tmp_path / 'a-file'}", "not a folder"),
        ("colour=blue", "unknown setting 'colour' (known: data_dir)"),
        ("data_dir", "expected KEY=VALUE"),
    ):
        refused = runner.invoke(app, ["settings", pair])
        assert refused.exit_code == 2 and message in refused.stderr, refused.output
        assert refused.stderr.count("\n") == 1
    assert settings(runner) == {"data_dir": str(folder)}  # a refused change writes nothing
    assert settings(runner, "data_dir=") == {"data_dir": None}  # an empty value: back to the default


def test_a_corrupt_settings_file_is_one_line_and_reset_mends_it(
    runner: CliRunner, isolated_home: Path, synthetic_dir: Path
) -> None:
    (isolated_home / "settings.json").write_text("{not json")
    broken = runner.invoke(app, ["settings"])
    assert broken.exit_code == 1 and "settings.json: unreadable settings" in broken.stderr
    assert "mnist settings --reset" in broken.stderr and broken.stderr.count("\n") == 1
    # a command given its data needs no settings, and does not overwrite the file it cannot read
    assert runner.invoke(app, ["eval", "--data-dir", str(synthetic_dir)]).exit_code == 0
    assert (isolated_home / "settings.json").read_text() == "{not json"
    assert settings(runner, "--reset") == {"data_dir": None}
    (isolated_home / "settings.json").write_text('{"data_dir": 3}')
    assert "data_dir must be str or null" in runner.invoke(app, ["eval"]).stderr


def test_folders_that_are_not_there_are_named(runner: CliRunner, tmp_path: Path, synthetic_dir: Path) -> None:
    missing = runner.invoke(app, ["eval", "--data-dir", str(tmp_path / "Downloads")])
    assert missing.exit_code == 2 and f"{tmp_path / 'Downloads'} (--data-dir): no such folder" in missing.stderr
    (tmp_path / "file").write_text("")
    a_file = runner.invoke(app, ["eval", "--data-dir", str(tmp_path / "file")])
    assert a_file.exit_code == 2 and "(--data-dir): not a folder" in a_file.stderr
    moved = tmp_path / "moved"
    write_mnist(moved, n_train=10, n_test=10)
    assert settings(runner, f"data_dir={moved}") == {"data_dir": str(moved)}
    (moved / "t10k-images-idx3-ubyte.gz").unlink()
    gone = runner.invoke(app, ["eval"])
    assert gone.exit_code == 1 and "(data_dir in " in gone.stderr and "no MNIST file for t10k-images" in gone.stderr
    assert "mnist settings data_dir=DIR" in gone.stderr


def test_eval_needs_only_the_test_files_and_training_names_what_is_missing(runner: CliRunner, tmp_path: Path) -> None:
    full = write_mnist(tmp_path / "full", n_train=20, n_test=30)
    only_test = tmp_path / "test-only"
    only_test.mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (only_test / name).write_bytes((full / name).read_bytes())
    evaluated = runner.invoke(app, ["eval", "--data-dir", str(only_test), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["total"] == 30
    assert "remembered" not in evaluated.stderr and settings(runner) == {"data_dir": None}  # not a whole MNIST
    trained = runner.invoke(app, [*TRAIN, "--data-dir", str(only_test)])
    assert trained.exit_code == 1 and trained.stderr.count("\n") == 1
    assert "no MNIST file for train-images-idx3-ubyte, train-labels-idx1-ubyte (raw or .gz)" in trained.stderr


def test_resolve_per_split(tmp_path: Path) -> None:
    folder = write_mnist(tmp_path, n_train=10, n_test=10)
    (folder / "train-labels-idx1-ubyte.gz").unlink()
    assert mnist.resolve_dir(folder, splits=("test",)) == folder
    with pytest.raises(DataError, match=r"no MNIST file for train-labels-idx1-ubyte \(raw"):
        mnist.resolve_dir(folder)
    with pytest.raises(UsageError, match="no such folder"):
        mnist.resolve_dir(tmp_path / "nope", splits=("test",))


def test_settings_never_imports_torch(tmp_path: Path) -> None:
    code = (
        "import sys; from mnistcli.cli import main; sys.argv=['mnist','settings','--json']\n"
        "try: main()\nexcept SystemExit as e: assert not e.code, e.code\n"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"data_dir": None}


def test_an_empty_settings_file_holds_no_settings_and_a_folder_in_its_place_is_named(
    runner: CliRunner, isolated_home: Path
) -> None:
    (isolated_home / "settings.json").write_text("")
    assert settings(runner) == {"data_dir": None}
    (isolated_home / "settings.json").unlink()
    (isolated_home / "settings.json").mkdir()
    result = runner.invoke(app, ["settings"])
    assert result.exit_code == 1 and "settings.json: is a folder" in result.stderr and "--reset" not in result.stderr
