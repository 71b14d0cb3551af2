"""Real-world pictures -> the digit: photos of paper, canvas drawings, uneven light, specks, ruled lines, page edges."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mnistcli.cli import app
from mnistcli.data.images import extract_ink, fit_digit, load_image, open_gray
from mnistcli.errors import ImageError
from tests.helpers import make_digits, save_png
from tests.realistic import RENDERERS


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def ink_box(ink: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the pixels fit_digit crops to."""
    rows, cols = np.flatnonzero((ink > 0.2 * ink.max()).any(1)), np.flatnonzero((ink > 0.2 * ink.max()).any(0))
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


@pytest.mark.parametrize("kind", ["photo", "canvas"])
def test_rendered_digits_come_back_as_the_clean_digit(tmp_path: Path, kind: str) -> None:
    digits, _ = make_digits(30, seed=5)
    rng = np.random.default_rng(0)
    scores = []
    for i, digit in enumerate(digits):
        picture = RENDERERS[kind](digit, rng)
        x, y, w, h = picture.info["digit_box"]
        path = tmp_path / f"{i}.png"
        picture.save(path)
        # The crop holds the digit, not the page: it lies inside the field the digit was drawn in.
        top, bottom, left, right = ink_box(extract_ink(open_gray(path)))
        slack = 0.1 * w
        assert y - slack <= top and bottom <= y + h + slack and x - slack <= left and right <= x + w + slack
        assert bottom - top > 0.4 * h  # ...and is not a speck inside it
        clean = fit_digit(digit.astype(np.float32) / 255)
        assert clean is not None
        scores.append(correlation(load_image(path), clean))
    assert min(scores) > 0.7 and np.mean(scores) > 0.9, scores  # rotation (photos) costs a little


def page(h: int = 300, w: int = 300, paper: float = 0.85) -> np.ndarray:
    return np.full((h, w), paper, dtype=np.float32)


def draw_digit(gray: np.ndarray, digit: np.ndarray, top: int, left: int, size: int = 140, pen: float = 0.15) -> None:
    """Write `digit` (28x28 uint8, light on dark) as dark ink into `gray` at (top, left), `size` pixels across."""
    big = np.asarray(Image.fromarray(digit).resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32) / 255
    window = gray[top : top + size, left : left + size]
    window[:] = window - (window - pen) * big


@pytest.fixture
def seven() -> np.ndarray:
    digits, labels = make_digits(20, seed=7)
    return digits[list(labels).index(7)]


def expected(digit: np.ndarray) -> np.ndarray:
    out = fit_digit(digit.astype(np.float32) / 255)
    assert out is not None
    return out


def test_a_page_lit_from_one_side_is_not_ink(seven: np.ndarray) -> None:
    ramp = np.linspace(0.35, 1.0, 300, dtype=np.float32)[None, :]  # the left edge gets a third of the light
    assert not extract_ink(page() * ramp).any()
    gray = page()
    draw_digit(gray, seven, 80, 120)
    gray *= ramp
    top, bottom, left, right = ink_box(extract_ink(gray))
    assert 75 <= top and bottom <= 225 and 115 <= left and right <= 265
    assert correlation(fit_digit(extract_ink(gray)), expected(seven)) > 0.9  # type: ignore[arg-type]


def test_specks_are_dropped(seven: np.ndarray) -> None:
    gray = page()
    draw_digit(gray, seven, 140, 140)
    rng = np.random.default_rng(1)
    for y, x in rng.integers(5, 295, size=(12, 2)):
        if not (130 < y < 290 and 130 < x < 290):
            gray[y - 2 : y + 2, x - 2 : x + 2] = 0.2
    top, _bottom, left, _right = ink_box(extract_ink(gray))
    assert 135 <= top and 135 <= left
    assert correlation(fit_digit(extract_ink(gray)), expected(seven)) > 0.9  # type: ignore[arg-type]


def test_every_digit_of_a_number_is_ink_but_fit_digit_leaves_out_a_stray_mark(seven: np.ndarray) -> None:
    gray = page(200, 400)
    draw_digit(gray, seven, 30, 20)
    draw_digit(gray, seven, 30, 220)
    ink = extract_ink(gray)
    assert ink[:, :200].max() == 1.0 and ink[:, 200:].max() == 1.0  # both digits of "77" kept
    marked = page()
    draw_digit(marked, seven, 20, 20)
    marked[260:268, 240:280] = 0.2  # a pen mark well away from the digit
    assert extract_ink(marked)[255:275, 235:285].max() > 0.5
    assert correlation(fit_digit(extract_ink(marked)), expected(seven)) > 0.9  # type: ignore[arg-type]


def test_ruled_lines_are_dropped_even_through_the_digit(seven: np.ndarray) -> None:
    gray = page()
    draw_digit(gray, seven, 80, 80)
    for y in (40, 120, 200, 280):  # the one at 120 crosses the digit
        gray[y : y + 2] = 0.45
    ink = extract_ink(gray)
    top, bottom, left, right = ink_box(ink)
    assert 75 <= top and bottom <= 225 and 75 <= left and right <= 225
    assert correlation(fit_digit(ink), expected(seven)) > 0.9  # type: ignore[arg-type]


def test_a_page_edge_along_the_border_is_dropped(seven: np.ndarray) -> None:
    gray = page()
    draw_digit(gray, seven, 80, 60)
    gray[:, 240:] = 0.1  # the dark table beside the page
    _top, _bottom, left, right = ink_box(extract_ink(gray))
    assert 55 <= left and right <= 205
    assert correlation(fit_digit(extract_ink(gray)), expected(seven)) > 0.9  # type: ignore[arg-type]


@pytest.mark.slow  # a 12 MP photo: about 2 s
def test_a_full_size_phone_photo_reads_like_a_small_one(tmp_path: Path, seven: np.ndarray) -> None:
    picture = RENDERERS["photo"](seven, np.random.default_rng(3))
    picture.save(tmp_path / "small.png")
    picture.resize((picture.width * 8, picture.height * 8), Image.Resampling.BICUBIC).save(tmp_path / "big.jpg")
    ink = extract_ink(open_gray(tmp_path / "big.jpg"))
    assert ink.shape == (picture.height * 8, picture.width * 8)  # worked on shrunk, returned full size
    assert correlation(load_image(tmp_path / "big.jpg"), load_image(tmp_path / "small.png")) > 0.95


def test_plain_paper_with_camera_noise_is_blank(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    noisy = np.clip(page() + rng.normal(0, 0.03, (300, 300)), 0, 1)
    Image.fromarray((noisy * 255).astype(np.uint8)).save(tmp_path / "paper.jpg", quality=70)
    with pytest.raises(ImageError, match="blank image"):
        load_image(tmp_path / "paper.jpg")


def test_open_gray_reads_files_and_names_the_broken_ones(tmp_path: Path) -> None:
    Image.new("RGB", (40, 30), (255, 0, 0)).save(tmp_path / "red.png")
    gray = open_gray(tmp_path / "red.png")
    assert gray.shape == (30, 40) and gray.dtype == np.float32 and abs(float(gray[0, 0]) - 0.299) < 0.01
    with pytest.raises(ImageError, match=r"missing\.png.*no such file"):
        open_gray(tmp_path / "missing.png")


def test_predict_show_input_writes_what_the_model_saw(runner: CliRunner, tmp_path: Path) -> None:
    digits, _ = make_digits(3, seed=9)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    RENDERERS["photo"](digits[0], np.random.default_rng(0)).save(tmp_path / "a" / "seven.jpg")
    save_png(digits[1], tmp_path / "b" / "seven.png")  # same name, another folder
    save_png(digits[2], tmp_path / "b" / "mnist.png")
    (tmp_path / "b" / "broken.png").write_text("not a picture")
    out = tmp_path / "seen" / "inputs"
    args = ["predict", str(tmp_path / "a"), str(tmp_path / "b"), "--show-input", str(out), "-c", "cnn-pretrained"]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 1  # the broken file; the others still go through
    assert sorted(p.name for p in out.iterdir()) == ["mnist.png", "seven-2.png", "seven.png"]
    seen = np.asarray(Image.open(out / "seven.png"))
    assert seen.shape == (28, 28) and seen.dtype == np.uint8
    np.testing.assert_array_equal(seen, (load_image(tmp_path / "a" / "seven.jpg") * 255).round())
    np.testing.assert_array_equal(np.asarray(Image.open(out / "mnist.png")), digits[2])  # exactly as given
    assert str(out) in result.stderr and "broken.png" in result.stderr


def test_show_input_must_be_a_folder(runner: CliRunner, tmp_path: Path) -> None:
    digits, _ = make_digits(1, seed=9)
    image = save_png(digits[0], tmp_path / "one.png")
    result = runner.invoke(app, ["predict", str(image), "--show-input", str(image), "-c", "cnn-pretrained"])
    assert result.exit_code == 2 and "--show-input" in result.stderr and "not a folder" in result.stderr
    np.testing.assert_array_equal(np.asarray(Image.open(image)), digits[0])  # untouched


def test_robust_augmentation_varies_slant_pen_and_focus_repeatably() -> None:
    import torch

    from mnistcli.data.augment import real_world_view

    digits, _ = make_digits(64, seed=4)
    x = torch.from_numpy(digits.astype(np.float32) / 255).unsqueeze(1)
    a = real_world_view(x, torch.Generator().manual_seed(0))
    b = real_world_view(x, torch.Generator().manual_seed(0))
    c = real_world_view(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert torch.equal(a, b) and not torch.equal(a, c)
    ink = (a > 0.5).flatten(1).sum(1).float() / (x > 0.5).flatten(1).sum(1).float()
    assert float(ink.min()) < 0.8 and float(ink.max()) > 1.2  # some pens finer, some broader


def test_train_robust_augment_is_recorded(runner: CliRunner, synthetic_env: Path) -> None:
    import json

    args = ["train", "cnn", "--epochs", "1", "--per-class", "10", "--robust-augment", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    from mnistcli import store

    run = store.resolve(json.loads(result.stdout.splitlines()[-1])["run"])
    assert run.meta["config"]["robust_augment"] is True and run.meta["config"]["augment"] is True


@pytest.mark.parametrize("given", ["--robust-augment", "--no-robust-augment"])
def test_a_switch_refused_is_named_as_the_user_gave_it(runner: CliRunner, synthetic_env: Path, given: str) -> None:
    result = runner.invoke(app, ["train", "simclr", given])
    assert result.exit_code == 2
    assert f"{given} does not apply to a contrastive model" in result.output


def test_show_input_never_replaces_a_file_already_there(runner: CliRunner, tmp_path: Path) -> None:
    digits, _ = make_digits(2, seed=9)
    (tmp_path / "photos").mkdir()
    image = save_png(digits[0], tmp_path / "photos" / "seven.png")
    out = tmp_path / "out"
    out.mkdir()
    Image.new("L", (500, 400), 128).save(out / "seven.png")  # the user's own file, not an input
    result = runner.invoke(app, ["predict", str(image), "--show-input", str(out), "-c", "cnn-pretrained"])
    assert result.exit_code == 0, result.output
    assert Image.open(out / "seven.png").size == (500, 400)  # untouched
    assert Image.open(out / "seven-2.png").size == (28, 28)
    assert "seven-2.png" not in result.stdout  # results on stdout, where the pictures went on stderr


def test_show_input_refuses_a_folder_holding_inputs(runner: CliRunner, tmp_path: Path) -> None:
    """Pictures written among the inputs would be read as inputs by the next run over that folder."""
    digits, _ = make_digits(1, seed=9)
    (tmp_path / "same").mkdir()
    save_png(digits[0], tmp_path / "same" / "one.png")
    for show in ("same", "."):
        result = runner.invoke(
            app, ["predict", str(tmp_path / "same"), "--show-input", str(tmp_path / show), "-c", "cnn-pretrained"]
        )
        assert result.exit_code == 2 and "holds input images" in result.stderr, result.output
    assert sorted(p.name for p in (tmp_path / "same").iterdir()) == ["one.png"]


def test_show_input_folder_is_not_made_when_the_checkpoint_fails(runner: CliRunner, tmp_path: Path) -> None:
    digits, _ = make_digits(1, seed=9)
    image = save_png(digits[0], tmp_path / "one.png")
    result = runner.invoke(app, ["predict", str(image), "--show-input", str(tmp_path / "seen"), "-c", "nosuch"])
    assert result.exit_code != 0 and not (tmp_path / "seen").exists()


def test_read_reports_the_same_calibrated_confidence_as_predict(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`predict` applies the checkpoint's temperature; `read` must too (found by the issue 11 review). On torch: the
    temperature is changed here in memory, and the fast path's model.onnx has the stored one built in."""
    from mnistcli import store

    monkeypatch.setattr(store.Run, "temperature", property(lambda self: 3.0))
    digits, _ = make_digits(1, seed=9)
    RENDERERS["photo"](digits[0], np.random.default_rng(0)).save(tmp_path / "seven.jpg")
    args = [str(tmp_path / "seven.jpg"), "-c", "cnn-pretrained", "--json", "--backend", "torch"]
    predicted = json.loads(runner.invoke(app, ["predict", *args]).stdout)
    read = json.loads(runner.invoke(app, ["read", *args]).stdout)
    assert read["digits"][0]["digit"] == predicted["digit"]
    assert abs(read["digits"][0]["confidence"] - predicted["confidence"]) < 0.02
    assert predicted["confidence"] < 0.9  # T = 3 flattens it: the temperature really was applied


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


@pytest.mark.slow  # renders and reads large photos: about 5 s
def test_a_digit_small_in_a_big_photo_is_found(tmp_path: Path) -> None:
    """MNIST digits whose field is 5-10% of a 2000x1500 photo's width (was: 10 in 40 'blank')."""
    digits, _ = make_digits(6, seed=5)
    rng = np.random.default_rng(4)
    for i, digit in enumerate(digits):
        picture = RENDERERS["photo_small"](digit, rng)
        assert picture.size == (2000, 1500)
        picture.save(tmp_path / f"{i}.jpg", quality=95)
        assert correlation(load_image(tmp_path / f"{i}.jpg"), expected(digit)) > 0.8, i


def test_pure_noise_stays_blank_at_any_size() -> None:
    rng = np.random.default_rng(6)
    for h, w in ((40, 60), (300, 300), (1500, 2000)):
        light = 0.8 - 0.3 * np.linspace(0, 1, w, dtype=np.float32)[None]
        assert not extract_ink(np.clip(light + rng.normal(0, 0.04, (h, w)), 0, 1)).any(), (h, w)
