"""data/prefetch.py: MNIST read in a background thread while `mnist train` imports torch, handed over only as the
files are; the reader's errors are the caller's to meet."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mnistcli.cli import app
from mnistcli.data import mnist, prefetch
from tests.helpers import write_mnist


def wait(folder: Path, split: str) -> None:
    prefetch._reads[(folder, split)].done.wait()


def test_a_split_read_in_the_background_is_the_one_read_now(tmp_path: Path) -> None:
    folder = write_mnist(tmp_path / "data", n_train=50, n_test=20)
    prefetch.start(folder)
    for split in ("train", "test"):
        got, read = prefetch.take(split, folder), mnist.load_split(split, folder)
        assert got is not None
        np.testing.assert_array_equal(got.images, read.images)
        np.testing.assert_array_equal(got.labels, read.labels)
        assert (got.images_path, got.labels_path) == (read.images_path, read.labels_path)
        assert prefetch.take(split, folder) is None  # handed over once


def test_nothing_is_handed_over_unless_begun_there(tmp_path: Path) -> None:
    folder = write_mnist(tmp_path / "data", n_train=50, n_test=20)
    other = write_mnist(tmp_path / "other", n_train=50, n_test=20)
    assert prefetch.take("train", folder) is None
    prefetch.start(other, ("test",))
    assert prefetch.take("test", folder) is None
    assert prefetch.take("test", other) is not None


def test_a_file_changed_since_it_was_read_is_read_again(tmp_path: Path) -> None:
    folder = write_mnist(tmp_path / "data", n_train=50, n_test=20)
    prefetch.start(folder, ("test",))
    wait(folder, "test")
    write_mnist(tmp_path / "data", n_train=50, n_test=30)  # the test split replaced: 30 images now
    assert prefetch.take("test", folder) is None
    assert len(mnist.load_split("test", folder).labels) == 30


def test_a_file_the_caller_would_now_read_instead_is_read(tmp_path: Path) -> None:
    """A raw file put beside the .gz one after the read began: `load_split` now prefers it, and so does `take`."""
    folder = write_mnist(tmp_path / "data", n_train=50, n_test=20)
    prefetch.start(folder, ("test",))
    wait(folder, "test")
    write_mnist(tmp_path / "data", n_train=50, n_test=30, gz=False)
    assert prefetch.take("test", folder) is None
    assert len(mnist.load_split("test", folder).labels) == 30


def test_the_readers_errors_are_left_to_the_caller(tmp_path: Path) -> None:
    folder = write_mnist(tmp_path / "data", n_train=50, n_test=20)
    broken = folder / "t10k-images-idx3-ubyte.gz"
    broken.write_bytes(broken.read_bytes()[:-10])
    prefetch.start(folder)
    assert prefetch.take("test", folder) is None  # nothing raised here
    assert prefetch.take("train", folder) is not None


def test_mnist_train_trains_on_what_was_read_in_the_background(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_mnist(tmp_path / "data", n_train=200, n_test=100)
    monkeypatch.setenv("MNISTCLI_HOME", str(tmp_path / "home"))
    taken: list[tuple[str, bool]] = []
    take = prefetch.take

    def counted(split: str, f: Path) -> mnist.Split | None:
        got = take(split, f)
        taken.append((split, got is not None))
        return got

    monkeypatch.setattr(prefetch, "take", counted)
    again: list[str] = []
    load = mnist.load_split
    monkeypatch.setattr(mnist, "load_split", lambda split, f: again.append(split) or load(split, f))
    options = ["--arg", "hidden=16", "--epochs", "1", "--json", "--data-dir", str(folder)]
    result = CliRunner().invoke(app, ["train", "mlp", *options])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["epochs"] == 1
    assert taken == [("train", True), ("test", True)]
    assert again == []  # nothing read a second time


def test_a_broken_file_fails_mnist_train_with_its_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_mnist(tmp_path / "data", n_train=200, n_test=100)
    broken = folder / "train-images-idx3-ubyte.gz"
    broken.write_bytes(gzip.compress(b"\0\0\x08\x03" + b"\0\0\0\x05")[:-12])
    monkeypatch.setenv("MNISTCLI_HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(app, ["train", "mlp", "--epochs", "1", "--data-dir", str(folder)])
    assert result.exit_code == 1
    assert "train-images-idx3-ubyte.gz" in result.output and "Traceback" not in result.output
