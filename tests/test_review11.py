"""Review of issue 11: failing tests that demonstrate defects found by the adversarial review."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mnistcli.cli import app
from tests.helpers import make_digits
from tests.realistic import RENDERERS


def test_show_input_does_not_overwrite_a_users_file(runner: CliRunner, tmp_path: Path) -> None:
    digits, _ = make_digits(1, seed=9)
    RENDERERS["photo"](digits[0], np.random.default_rng(0)).save(tmp_path / "seven.jpg")
    Image.new("RGB", (300, 200), "red").save(tmp_path / "seven.png")  # the user's own picture, not an input
    before = (tmp_path / "seven.png").read_bytes()
    runner.invoke(app, ["predict", str(tmp_path / "seven.jpg"), "--show-input", str(tmp_path), "-c", "cnn-pretrained"])
    assert (tmp_path / "seven.png").read_bytes() == before


def test_read_reports_the_same_calibrated_confidence_as_predict(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every new classifier is calibrated (a temperature); `predict` applies it, `read` must too."""
    import json

    from mnistcli import store

    monkeypatch.setattr(store.Run, "temperature", property(lambda self: 3.0))
    digits, _ = make_digits(1, seed=9)
    RENDERERS["photo"](digits[0], np.random.default_rng(0)).save(tmp_path / "seven.jpg")
    args = [str(tmp_path / "seven.jpg"), "-c", "cnn-pretrained", "--json"]
    predicted = json.loads(runner.invoke(app, ["predict", *args]).stdout)
    read = json.loads(runner.invoke(app, ["read", *args]).stdout)
    assert read["digits"][0]["digit"] == predicted["digit"]
    assert abs(read["digits"][0]["confidence"] - predicted["confidence"]) < 0.02
