"""The README's quickstart, line after line as a new user types it, on the real MNIST files with the fast model.

The user names the data once (`--data-dir`); every later line finds it by itself. The slower models
(simclr, siamese, adder) have their own real-data tests in test_real_mnist.py and test_simclr.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mnistcli.cli import app
from mnistcli.data import mnist
from tests.helpers import save_png

pytestmark = pytest.mark.slow


def test_the_quickstart_in_order(
    runner: CliRunner, real_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MNIST_DATA_DIR")  # a new user has only a folder of the four files
    monkeypatch.chdir(tmp_path)
    test = mnist.load_split("test", real_mnist)
    digits = tmp_path / "digits"
    digits.mkdir()
    for i in range(20):
        save_png(test.images[i], digits / f"{i:02d}-{test.labels[i]}.png")

    def run(*args: str, stdin: str | None = None) -> str:
        result = runner.invoke(app, list(args), input=stdin)
        assert result.exit_code == 0, (args, result.output)
        return result.stdout

    trained = json.loads(run("train", "cnn-fast", "--target-accuracy", "0.99", "--data-dir", str(real_mnist), "--json"))
    assert trained["target"]["reached"]
    report = json.loads(run("eval", "--json"))  # no --data-dir: the folder that worked is remembered
    assert report["checkpoint"] == trained["run"] and report["accuracy"] == pytest.approx(trained["test_accuracy"])
    one = json.loads(run("predict", str(digits / f"00-{test.labels[0]}.png"), "--json"))
    assert one["digit"] == test.labels[0] and one["checkpoint"] == trained["run"]
    rows = [
        json.loads(line)
        for line in run("predict", "-", "--json", stdin="\n".join(map(str, sorted(digits.iterdir())))).splitlines()
    ]
    assert np.mean([r["digit"] == int(Path(r["path"]).stem.split("-")[1]) for r in rows]) >= 0.95
    run("embed", "digits/", "--output", "vectors.npy")
    assert np.load(tmp_path / "vectors.npy").shape[0] == 20
    pictures = json.loads(run("plot", trained["run"], "-o", "pics/", "--json"))  # pics/ does not exist yet
    assert {f["kind"] for f in pictures["files"]} == {"learning curves", "confusion matrix", "misclassified digits"}
    assert all(Path(f["path"]).is_file() for f in pictures["files"])
    assert "cnn-fast" in run("models")
    assert trained["run"] in run("checkpoints")
    assert json.loads(run("settings", "--json")) == {"data_dir": str(real_mnist.resolve())}
