"""User images -> MNIST-style input: polarity, transparency, cropping, fitting and centring."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import tracemalloc
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mnistcli.data.components import components, dilate
from mnistcli.data.images import collect_paths, fit_digit, load_image, load_images, open_gray
from mnistcli.errors import ImageError
from tests.helpers import deadline, make_digits, save_png


def centre_of_mass(a: np.ndarray) -> tuple[float, float]:
    ys, xs = np.indices(a.shape)
    return float((ys * a).sum() / a.sum()), float((xs * a).sum() / a.sum())


def test_mnist_style_image_passes_through_exactly(tmp_path: Path) -> None:
    images, _ = make_digits(20, seed=3)
    for i, img in enumerate(images):
        out = load_image(save_png(img, tmp_path / f"{i}.png"))
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, img.astype(np.float32) / 255)


def test_other_pictures_are_fitted_into_20x20_and_centred_by_mass(tmp_path: Path) -> None:
    images, _ = make_digits(20, seed=3)
    for i, img in enumerate(images):
        out = load_image(save_png(255 - img, tmp_path / f"{i}.png"))  # dark on light: not MNIST-style
        assert out.shape == (28, 28) and out.dtype == np.float32
        assert 0.0 <= out.min() and out.max() <= 1.0
        rows, cols = np.flatnonzero(out.max(1) > 0.2), np.flatnonzero(out.max(0) > 0.2)
        assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 in (19, 20, 21)
        cy, cx = centre_of_mass(out)
        assert abs(cy - 14) < 1 and abs(cx - 14) < 1
        # the same strokes as the original, anti-aliasing kept
        assert np.corrcoef(out.ravel(), fit_digit(img.astype(np.float32) / 255).ravel())[0, 1] > 0.95
        assert ((out > 0.05) & (out < 0.95)).sum() > 10


def draw_one(size: int, ink: int, paper: int, mode: str = "L") -> Image.Image:
    """A big '1'-like vertical stroke with a foot, `ink` on `paper`, off centre."""
    image = Image.new(mode, (size, size), paper)
    draw = ImageDraw.Draw(image)
    draw.rectangle((size // 5, size // 8, size // 5 + size // 10, size * 7 // 8), fill=ink)
    return image


def test_dark_on_light_photo_is_inverted_cropped_and_centred(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    draw_one(300, ink=30, paper=230).convert("RGB").save(path, quality=90)
    out = load_image(path)
    assert out[0, 0] == 0 and out.max() > 0.9  # light ink on a black field
    rows = np.flatnonzero(out.max(1) > 0.5)
    assert rows[-1] - rows[0] + 1 in (19, 20, 21)  # the tall side fits 20 pixels
    cy, cx = centre_of_mass(out)
    assert abs(cy - 14) < 1 and abs(cx - 14) < 1


@pytest.mark.parametrize("ink", [(0, 0, 0, 255), (255, 255, 255, 255)])
def test_strokes_on_a_transparent_canvas(tmp_path: Path, ink: tuple[int, int, int, int]) -> None:
    stroke = np.asarray(draw_one(200, 255, 0)) > 0
    rgba = np.zeros((200, 200, 4), dtype=np.uint8)  # fully transparent black
    rgba[stroke] = ink
    path = tmp_path / "canvas.png"
    Image.fromarray(rgba).save(path)
    out = load_image(path)
    assert out[0, 0] == 0 and out.max() > 0.9 and (out > 0.5).sum() > 20


def test_equivalent_drawings_give_the_same_input(tmp_path: Path) -> None:
    a = draw_one(280, ink=255, paper=0)
    b = draw_one(280, ink=0, paper=255)
    a.save(tmp_path / "a.png")
    b.save(tmp_path / "b.png")
    np.testing.assert_allclose(load_image(tmp_path / "a.png"), load_image(tmp_path / "b.png"), atol=1e-5)


def test_blank_unreadable_and_missing_files_are_image_errors(tmp_path: Path) -> None:
    Image.new("L", (50, 50), 255).save(tmp_path / "blank.png")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "cut.png").write_bytes(_png_bytes()[:60])
    for name, message in (
        ("blank.png", "blank image"),
        ("notes.txt", "not a readable image"),
        ("cut.png", "cannot read image|not a readable image"),
        ("missing.png", "no such file"),
    ):
        with pytest.raises(ImageError, match=message) as info:
            load_image(tmp_path / name)
        assert name in str(info.value)


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    draw_one(64, 255, 0).save(buf, format="PNG")
    return buf.getvalue()


def test_load_images_keeps_going_after_a_bad_file(tmp_path: Path) -> None:
    draw_one(64, 255, 0).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_text("junk")
    draw_one(64, 0, 255).save(tmp_path / "c.png")
    kinds = [type(item).__name__ for _, item in load_images([str(tmp_path / n) for n in ("a.png", "b.png", "c.png")])]
    assert kinds == ["ndarray", "ImageError", "ndarray"]


def test_collect_paths_expands_folders_and_stdin(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name in ("b.png", "a.jpg", "sub/c.PNG", "readme.txt"):
        (tmp_path / name).write_bytes(b"")
    stdin = io.StringIO("x.png\n\n  y.png \n")
    got = collect_paths([str(tmp_path), "-", "z.png"], stdin=stdin)
    assert got == [
        str(tmp_path / "a.jpg"),
        str(tmp_path / "b.png"),
        str(tmp_path / "sub/c.PNG"),
        "x.png",
        "y.png",
        "z.png",
    ]


def test_sixteen_bit_and_float_images(tmp_path: Path) -> None:
    stroke = np.asarray(draw_one(64, 255, 0)) > 0
    sixteen = np.where(stroke, 30000, 1000).astype(np.uint16)
    Image.fromarray(sixteen).save(tmp_path / "deep.png")
    floats = np.where(stroke, 0.9, 0.1).astype(np.float32)
    Image.fromarray(floats).save(tmp_path / "float.tif")
    for name in ("deep.png", "float.tif"):
        out = load_image(tmp_path / name)
        assert out.max() > 0.9 and (out > 0.5).sum() > 20, name


def test_twelve_bit_data_in_a_sixteen_bit_png(tmp_path: Path) -> None:
    stroke = np.asarray(draw_one(64, 255, 0)) > 0
    Image.fromarray(np.where(stroke, 3500, 300).astype(np.uint16)).save(tmp_path / "twelve.png")  # 0-4095
    out = load_image(tmp_path / "twelve.png")
    assert out.max() > 0.9 and (out > 0.5).sum() > 20


def test_fit_digit_when_the_brightest_ink_is_a_stray_mark() -> None:
    ink = np.zeros((100, 100), np.float32)
    ink[20:60, 20:30] = 0.15  # a faint "1"
    ink[95:97, 95:97] = 1.0  # a bright speck in the corner, left out as a stray mark
    out = fit_digit(ink)
    assert out is not None and out.max() == pytest.approx(1.0)
    rows = np.flatnonzero(out.max(axis=1) > 0.2)
    assert rows[-1] - rows[0] + 1 == 20  # the "1" fills the 20x20 box, the speck is gone


def flood_fill_count(mask: np.ndarray) -> int:
    """8-connected components, the slow obvious way."""
    seen, count = np.zeros_like(mask), 0
    for start in zip(*np.nonzero(mask), strict=True):
        if seen[start]:
            continue
        count, stack = count + 1, [start]
        seen[start] = True
        while stack:
            y, x = stack.pop()
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    q = (y + dy, x + dx)
                    if 0 <= q[0] < mask.shape[0] and 0 <= q[1] < mask.shape[1] and mask[q] and not seen[q]:
                        seen[q] = True
                        stack.append(q)
    return count


def test_one_component_labelling_for_ink_and_segmenting() -> None:
    rng = np.random.default_rng(0)
    for density in (0.1, 0.3, 0.5):
        mask = rng.random((40, 50)) < density
        labels, boxes = components(mask)
        assert len(boxes) == labels.max() == flood_fill_count(mask)
        assert ((labels > 0) == mask).all() and boxes[:, 4].sum() == mask.sum()
        grown = dilate(mask, 2)
        ys, xs = np.nonzero(mask)
        assert grown[np.clip(ys + 2, 0, 39), np.clip(xs - 2, 0, 49)].all() and grown.sum() > mask.sum()


# Issue 17: anything but a regular image file is a per-file ImageError, never a hang or a huge allocation.

no_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")


@no_fifo
def test_a_fifo_is_a_per_file_error_and_the_others_still_load(tmp_path: Path) -> None:
    draw_one(64, 255, 0).save(tmp_path / "good.png")
    os.mkfifo(tmp_path / "fifo.png")
    (tmp_path / "link.png").symlink_to(tmp_path / "fifo.png")
    paths = [str(tmp_path / n) for n in ("good.png", "fifo.png", "link.png", "good.png")]
    with deadline(10):
        items = list(load_images(paths))
    assert [type(item).__name__ for _, item in items] == ["ndarray", "ImageError", "ImageError", "ndarray"]
    assert str(items[1][1]) == f"{tmp_path / 'fifo.png'}: not a regular file (a FIFO)"


def test_devices_and_folders_are_per_file_errors(tmp_path: Path) -> None:
    if os.path.exists("/dev/zero"):
        with deadline(10), pytest.raises(ImageError, match=r"^/dev/zero: not a regular file \(a character device\)$"):
            open_gray("/dev/zero")
    with pytest.raises(ImageError, match="a folder with no image files in it"):
        open_gray(tmp_path)


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares `width` x `height` grayscale pixels, with almost no data after it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(1000))) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("size", [(50_000, 50_000), (10_000, 6_000), (12_000, 12_000)])
def test_decompression_bombs_are_refused_in_little_memory(tmp_path: Path, size: tuple[int, int]) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(png_declaring(*size))
    tracemalloc.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no DecompressionBombWarning on stderr either
            with pytest.raises(ImageError, match=r"bomb\.png: image too large"):
                open_gray(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20


@no_fifo
def test_mnist_predict_answers_the_good_image_before_a_fifo(tmp_path: Path) -> None:
    """Through the CLI (the bundled checkpoint), in a subprocess with a timeout so that a regression fails, not hangs."""
    images, _ = make_digits(1, seed=5)
    good = save_png(images[0], tmp_path / "good.png")
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    command = [sys.executable, "-m", "mnistcli", "predict", str(good), str(fifo), "--json"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["path"] for r in rows] == [str(good)] and len(rows[0]["probabilities"]) == 10
    assert result.stderr == f"error: {fifo}: not a regular file (a FIFO)\n"


def test_a_socket_is_named_as_one(tmp_path: Path) -> None:
    """Opening a socket fails (ENXIO) before fstat could say what it is: it is named all the same."""
    socket = pytest.importorskip("socket")
    if not hasattr(socket, "AF_UNIX"):
        pytest.skip("needs Unix sockets")
    with tempfile.TemporaryDirectory(dir="/tmp") as folder:  # a socket's path must be short (108 bytes)
        path = Path(folder) / "s.png"
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(str(path))
            with pytest.raises(ImageError, match=r"s\.png: not a regular file \(a socket\)$"):
                open_gray(path)


def test_a_broken_link_is_named_as_one(tmp_path: Path) -> None:
    (tmp_path / "link.png").symlink_to(tmp_path / "gone.png")
    with pytest.raises(
        ImageError, match=r"link\.png: a broken symbolic link \(to .*gone\.png, which does not exist\)$"
    ):
        open_gray(tmp_path / "link.png")
    with pytest.raises(ImageError, match=r"missing\.png: no such file$"):
        open_gray(tmp_path / "missing.png")


def test_a_picture_far_longer_than_wide_is_refused_from_its_header(tmp_path: Path) -> None:
    """49,000,000 x 1 is under the pixel limit but no picture of a digit: refused before it is decoded."""
    path = tmp_path / "long.png"
    path.write_bytes(png_declaring(49_000_000, 1))
    tracemalloc.start()
    try:
        with pytest.raises(ImageError, match=r"long\.png: not a picture of a digit \(49000000x1: over 100 times"):
            load_image(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20
    draw_one(64, 255, 0).resize((6400, 64)).save(tmp_path / "wide.png")  # 100:1 is still a picture
    assert open_gray(tmp_path / "wide.png", max_side=10_000).shape == (64, 6400)


def test_a_large_picture_is_reduced_before_the_float_work(tmp_path: Path) -> None:
    """A 7000 x 7000 PNG: its decoded pixels (49 MB) and little more, not the gigabyte the float pipeline took.

    Measured in a subprocess (Pillow's pixel buffers are not seen by tracemalloc): the peak resident
    size grows by under 150 MB while the picture is read (it grew by about 650 MB before).
    """
    image = Image.new("L", (7000, 7000), 230)
    ImageDraw.Draw(image).rectangle((3200, 2000, 3800, 5000), fill=20)
    image.save(tmp_path / "big.png")
    image.resize((70, 70), Image.Resampling.BOX).save(tmp_path / "small.png")
    del image
    script = (
        "import resource, sys, numpy as np\n"
        "from mnistcli.data.images import load_image\n"
        "load_image(sys.argv[2])\n"  # the small one: imports and first-use allocations
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "big = load_image(sys.argv[1])\n"
        "grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before\n"
        "print(grew, float(np.abs(big - load_image(sys.argv[2])).max()))\n"
    )
    command = [sys.executable, "-c", script, str(tmp_path / "big.png"), str(tmp_path / "small.png")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    grew_kb, difference = result.stdout.split()
    assert int(grew_kb) < 150 * 1024, f"reading grew the peak resident size by {int(grew_kb) // 1024} MB"
    assert float(difference) < 0.1  # the same digit as the small picture


def test_cli_refuses_a_long_thin_picture_in_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mnistcli.cli import app

    path = tmp_path / "long.png"
    path.write_bytes(png_declaring(49_000_000, 1))
    result = CliRunner().invoke(app, ["predict", str(path)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"error: {path}: not a picture of a digit" in result.output
