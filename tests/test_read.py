"""`mnist read`: numbers composed from synthetic digits are cut into the right boxes and read by the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from mnistcli.cli import app
from mnistcli.data.images import extract_ink, open_gray
from mnistcli.data.segment import label, segment
from tests.helpers import make_digits


def compose(digits: np.ndarray, gaps: list[int], rng: np.random.Generator, scale: int = 1) -> tuple[np.ndarray, list]:
    """Digits (light on dark uint8) cropped to their ink and laid left to right with `gaps` pixels between,
    jittered up and down; returns the canvas and each digit's true box (x, y, width, height)."""
    crops = []
    for d in digits:
        rows, cols = np.flatnonzero(d.any(1)), np.flatnonzero(d.any(0))
        crops.append(d[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
    height = max(c.shape[0] for c in crops) + 16
    canvas = np.zeros((height, sum(c.shape[1] for c in crops) + sum(gaps) + 12), dtype=np.uint8)
    boxes, x = [], 6
    for c, gap in zip(crops, [*gaps, 0], strict=True):
        y = 8 + int(rng.integers(-3, 4))
        canvas[y : y + c.shape[0], x : x + c.shape[1]] = c
        boxes.append((x * scale, y * scale, c.shape[1] * scale, c.shape[0] * scale))
        x += c.shape[1] + gap
    if scale > 1:
        canvas = np.asarray(Image.fromarray(canvas).resize((canvas.shape[1] * scale, height * scale)))
    return canvas, boxes


def overlap(a: tuple, b: tuple) -> float:
    """Intersection over union of two (x, y, width, height) boxes."""
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def write_number(canvas: np.ndarray, path: Path, kind: str) -> Path:
    """Save light-on-dark `canvas` as dark ink on light paper, or as dark strokes on a transparent canvas."""
    if kind == "paper":
        Image.fromarray(255 - canvas).save(path)
    else:
        rgba = np.zeros((*canvas.shape, 4), dtype=np.uint8)
        rgba[..., :3] = 20
        rgba[..., 3] = canvas
        Image.fromarray(rgba, "RGBA").save(path)
    return path


def boxes_of(path: Path) -> list[tuple[int, int, int, int]]:
    return [c.box for c in segment(extract_ink(open_gray(path)))]


def flood_fill(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """The reference: 8-connected labelling by depth-first search, one pixel at a time."""
    labels, n = np.zeros(mask.shape, dtype=int), 0
    for start in zip(*np.nonzero(mask), strict=True):
        if labels[start]:
            continue
        n += 1
        labels[start], stack = n, [start]
        while stack:
            y, x = stack.pop()
            for yy in range(max(y - 1, 0), min(y + 2, mask.shape[0])):
                for xx in range(max(x - 1, 0), min(x + 2, mask.shape[1])):
                    if mask[yy, xx] and not labels[yy, xx]:
                        labels[yy, xx] = n
                        stack.append((yy, xx))
    return labels, n


def test_labelling_matches_a_flood_fill() -> None:
    rng = np.random.default_rng(0)
    for _ in range(100):
        mask = rng.random((int(rng.integers(1, 25)), int(rng.integers(1, 25)))) < rng.uniform(0.05, 0.7)
        got, n = label(mask)
        want, k = flood_fill(mask)
        assert n == k and ((got > 0) == mask).all()
        assert len(set(zip(got[mask].tolist(), want[mask].tolist(), strict=True))) == n  # the same partition


@pytest.mark.parametrize("count", [2, 3, 4, 5, 6])
@pytest.mark.parametrize("kind", ["paper", "canvas"])
def test_numbers_are_cut_into_their_digits_left_to_right(count: int, kind: str, tmp_path: Path) -> None:
    images, _ = make_digits(60, seed=count)
    rng = np.random.default_rng(count)
    for trial in range(4):
        scale = 1 + trial % 3  # also bigger images: boxes come back in the image's own pixels
        chosen = images[rng.choice(60, count, replace=False)]
        canvas, truth = compose(chosen, [int(g) for g in rng.integers(3, 12, count - 1)], rng, scale)
        found = boxes_of(write_number(canvas, tmp_path / f"{kind}{trial}.png", kind))
        assert len(found) == count
        assert [b[0] for b in found] == sorted(b[0] for b in found)
        height, width = canvas.shape
        assert all(x >= 0 and y >= 0 and x + w <= width and y + h <= height for x, y, w, h in found)
        assert all(overlap(f, t) > 0.6 for f, t in zip(found, truth, strict=True))


def draw(strokes: list[list[tuple[int, int]]], size: tuple[int, int], width: int = 6) -> np.ndarray:
    """Pen strokes (polylines) drawn light on black: each stroke one pen-down."""
    image = Image.new("L", size, 0)
    pen = ImageDraw.Draw(image)
    for stroke in strokes:
        pen.line(stroke, fill=255, width=width, joint="curve")
    return np.asarray(image, dtype=np.float32) / 255


def test_pieces_of_one_digit_are_merged() -> None:
    four = [[(40, 10), (12, 60), (68, 60)], [(52, 25), (52, 52)], [(52, 70), (52, 95)]]  # vertical lifted off the bar
    one = [[(110, 10), (110, 45)], [(110, 52), (110, 95)]]  # a stroke broken in two
    five = [[(170, 10), (200, 10)], [(162, 14), (160, 45), (185, 45), (195, 70), (180, 95), (158, 90)]]  # loose bar
    ink = draw(four + one + five, (220, 110))
    assert label(ink > 0.25)[1] == 7  # seven separate strokes ...
    boxes = [c.box for c in segment(ink)]
    assert len(boxes) == 3  # ... three digits
    assert boxes[0][0] < 20 and boxes[0][0] + boxes[0][2] > 66  # the 4's box spans its bar and its vertical
    assert boxes[1][1] < 12 and boxes[1][1] + boxes[1][3] > 93  # both halves of the 1


def test_points_and_specks_are_not_digits() -> None:
    ink = draw([[(20, 10), (20, 90)], [(60, 10), (60, 90)], [(120, 10), (120, 90)]], (160, 100))
    ink[84:91, 88:95] = 1.0  # a decimal point: 1.1 -> "11" then "1"
    ink[5, 150] = 1.0  # a speck of dust
    boxes = [c.box for c in segment(ink)]
    assert len(boxes) == 3 and all(
        abs(x + w / 2 - line) <= 1 for (x, _, w, _), line in zip(boxes, [20, 60, 120], strict=True)
    )


def test_digits_joined_by_a_thin_stroke_are_cut_and_wide_digits_are_not() -> None:
    image = Image.new("L", (130, 70), 0)
    pen = ImageDraw.Draw(image)
    pen.ellipse((10, 10, 50, 60), outline=255, width=5)
    pen.ellipse((62, 10, 102, 60), outline=255, width=5)
    pen.line((48, 35, 64, 35), fill=255, width=2)  # "00" written without lifting the pen
    joined = segment(np.asarray(image, dtype=np.float32) / 255)
    assert len(joined) == 2 and 48 <= joined[0].x + joined[0].width <= 64 <= joined[1].x + 3
    wide_two = draw([[(10, 10), (90, 10), (10, 50), (90, 50)]], (100, 60))  # a Z wider than tall: 1.6 to 1
    assert len(segment(wide_two)) == 1  # every column crosses a stroke: no safe cut


def test_blank_ink_has_no_digits() -> None:
    assert segment(np.zeros((30, 40), dtype=np.float32)) == []


@pytest.fixture(scope="module")
def trained_home(synthetic_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny cnn trained once on the synthetic digits (the bundled model knows handwriting, not this font)."""
    home = tmp_path_factory.mktemp("read-home")
    env = {"MNISTCLI_HOME": str(home), "MNIST_DATA_DIR": str(synthetic_dir)}
    args = ["train", "cnn", "--epochs", "4", "--batch-size", "32", "--no-augment", "--lr", "0.01", "--name", "font"]
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    return home


@pytest.fixture
def numbers(trained_home: Path, isolated_home: Path, tmp_path: Path) -> dict[str, str]:
    """Twelve numbers of 2-6 digits as dark-on-light PNGs in one folder: {path: the number}."""
    shutil.copytree(trained_home / "runs", isolated_home / "runs")
    images, labels = make_digits(100, seed=21)
    rng = np.random.default_rng(5)
    folder = tmp_path / "numbers"
    folder.mkdir()
    truth = {}
    for i in range(12):
        idx = rng.choice(100, int(rng.integers(2, 7)), replace=False)
        canvas, _ = compose(images[idx], [int(g) for g in rng.integers(3, 12, len(idx) - 1)], rng)
        truth[str(write_number(canvas, folder / f"{i:02d}.png", "paper"))] = "".join(map(str, labels[idx]))
    return truth


def test_read_json_gives_the_number_its_digits_and_the_checkpoint(runner: CliRunner, numbers: dict[str, str]) -> None:
    result = runner.invoke(app, ["read", *numbers, "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["path"] for r in rows] == list(numbers)
    assert all(r["checkpoint"] == "font" and r["model"] == "cnn" for r in rows)
    for r in rows:
        assert r["text"] == "".join(str(d["digit"]) for d in r["digits"])
        assert r["confidence"] == min(d["confidence"] for d in r["digits"])
        xs = [d["box"][0] for d in r["digits"]]
        assert xs == sorted(xs) and all(len(d["box"]) == 4 for d in r["digits"])
    assert sum(r["text"] == numbers[r["path"]] for r in rows) >= 10  # a tiny model: most numbers exactly


def test_read_pipes_tsv_reads_stdin_and_folders_and_survives_bad_files(
    runner: CliRunner, numbers: dict[str, str], tmp_path: Path
) -> None:
    paths = list(numbers)
    folder = runner.invoke(app, ["read", str(Path(paths[0]).parent)])
    assert folder.exit_code == 0
    rows = [line.split("\t") for line in folder.stdout.splitlines()]  # not a terminal: TSV
    assert [r[0] for r in rows] == paths and all(r[1].isdigit() and 0 < float(r[2]) <= 1 for r in rows)
    bad, blank = tmp_path / "not-an-image.png", tmp_path / "blank.png"
    bad.write_text("hello")
    Image.new("L", (40, 30), 200).save(blank)
    stdin = runner.invoke(app, ["read", "-", "--json"], input="\n".join([paths[0], str(bad), str(blank), paths[1]]))
    assert stdin.exit_code == 1
    assert [json.loads(line)["path"] for line in stdin.stdout.splitlines()] == paths[:2]
    assert stdin.stderr.splitlines() == [
        f"error: {bad}: not a readable image",
        f"error: {blank}: blank image: no digit found (no ink, or only marks too faint or small to be one)",
    ]
    assert runner.invoke(app, ["read", "-"], input="").exit_code == 0
    assert runner.invoke(app, ["read"]).exit_code == 2


def test_a_number_small_in_a_phone_photo_is_not_blank() -> None:
    """Four digits 150 px tall (a 600 px wide number) in a 4032x3024 photo: clearly there, yet 'blank'."""
    digits, _ = make_digits(4, seed=3)
    row = np.concatenate(list(digits), axis=1).astype(np.float32) / 255
    number = np.asarray(Image.fromarray(row).resize((600, 150), Image.Resampling.BICUBIC))
    page = np.full((3024, 4032), 0.8, np.float32)
    page[1400:1550, 1800:2400] *= 1 - 0.85 * np.clip(number, 0, 1)
    assert extract_ink(page).any()
