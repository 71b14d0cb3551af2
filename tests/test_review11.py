"""Review of issue 11: failing tests that demonstrate defects found by the adversarial review."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mnistcli.cli import app
from mnistcli.data.images import extract_ink
from tests.helpers import make_digits
from tests.realistic import RENDERERS


def test_show_input_does_not_overwrite_a_users_file(runner: CliRunner, tmp_path: Path) -> None:
    digits, _ = make_digits(1, seed=9)
    RENDERERS["photo"](digits[0], np.random.default_rng(0)).save(tmp_path / "seven.jpg")
    Image.new("RGB", (300, 200), "red").save(tmp_path / "seven.png")  # the user's own picture, not an input
    before = (tmp_path / "seven.png").read_bytes()
    runner.invoke(app, ["predict", str(tmp_path / "seven.jpg"), "--show-input", str(tmp_path), "-c", "cnn-pretrained"])
    assert (tmp_path / "seven.png").read_bytes() == before


def test_a_number_small_in_a_phone_photo_is_not_blank() -> None:
    """Four digits 150 px tall (a 600 px wide number) in a 4032x3024 photo: clearly there, yet 'blank'."""
    digits, _ = make_digits(4, seed=3)
    row = np.concatenate(list(digits), axis=1).astype(np.float32) / 255
    number = np.asarray(Image.fromarray(row).resize((600, 150), Image.Resampling.BICUBIC))
    page = np.full((3024, 4032), 0.8, np.float32)
    page[1400:1550, 1800:2400] *= 1 - 0.85 * np.clip(number, 0, 1)
    assert extract_ink(page).any()



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


def test_a_thin_digit_on_a_page_lit_from_one_side_is_found() -> None:
    """A '1' 300 px tall, 14 px wide, pencil-grey on paper lit 0.6 -> 0.9 across a 2000x1500 photo.

    The ink is under 0.5% of the picture, so the 0.5/99.5 percentiles that decide polarity see only
    the lighting, guess light ink, and the photo comes back 'blank'.
    """
    page = 0.6 + 0.3 * np.linspace(0, 1, 2000, dtype=np.float32)[None] ** 2 * np.ones((1500, 1), np.float32)
    page[600:900, 1300:1314] = 0.3
    page += np.random.default_rng(0).normal(0, 0.02, page.shape).astype(np.float32)
    ink_map = extract_ink(np.clip(page, 0, 1))
    assert ink_map[600:900, 1300:1314].mean() > 0.5
