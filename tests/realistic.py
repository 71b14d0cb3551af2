"""Realistic pictures made from MNIST-style digits: phone photos of paper, canvas drawings, thick and thin pens.

Each renderer takes a 28x28 uint8 digit (light on dark) and a seeded `np.random.Generator`, and
returns a PIL image as a user would hand it to `mnist predict` (photo and canvas also note in
`image.info["digit_box"]` where the 28x28 field landed: x, y, width, height). Made here, never downloaded, so the
tests and `benchmarks/realworld.py` can measure how preprocessing and a model cope with real input.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter

Renderer = Callable[[np.ndarray, np.random.Generator], Image.Image]


def _upscale(digit: np.ndarray, size: int, angle: float = 0.0) -> Image.Image:
    """The 28x28 digit as a smooth `size` x `size` picture, rotated by `angle` degrees."""
    big = Image.fromarray(digit).resize((size, size), Image.Resampling.BICUBIC)
    return big.rotate(angle, resample=Image.Resampling.BICUBIC) if angle else big


def clean(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """The digit itself, as MNIST stores it: the reference the others are measured against."""
    return Image.fromarray(digit)


def photo(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A phone photo of the digit written on paper: dark ink on light grey, lit from one side, noisy, blurred, JPEG.

    The digit is a few hundred pixels tall, off centre on a larger page, turned by up to 8 degrees.
    """
    size = int(rng.integers(150, 320))
    angle = float(rng.uniform(-8, 8))
    return _photo(digit, rng, size, angle, int(size * rng.uniform(1.2, 1.8)), int(size * rng.uniform(1.2, 1.8)))


def photo_small(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A photo as `photo`, but 2000x1500 with the digit small in it: its 28x28 field 5-10% of the width."""
    return _photo(digit, rng, int(2000 * rng.uniform(0.05, 0.10)), float(rng.uniform(-8, 8)), 1500, 2000)


def _photo(digit: np.ndarray, rng: np.random.Generator, size: int, angle: float, h: int, w: int) -> Image.Image:
    """The digit's field, `size` pixels square and turned by `angle` degrees, somewhere on an h x w photo of paper."""
    ink = np.asarray(_upscale(digit, size, angle), dtype=np.float32) / 255
    y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    page = np.zeros((h, w), dtype=np.float32)
    page[y : y + size, x : x + size] = ink
    # Light falls off across the page in a random direction: from 1 down to 0.55-0.85 of the brightest.
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:h, 0:w] / max(h, w)
    ramp = np.cos(angle) * xs + np.sin(angle) * ys
    light = 1 - rng.uniform(0.15, 0.45) * (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    paper, pen = rng.uniform(0.7, 0.92), rng.uniform(0.08, 0.3)
    value = light * (paper - (paper - pen) * page)
    tint = np.array([1.0, rng.uniform(0.95, 1.0), rng.uniform(0.85, 1.0)], dtype=np.float32)  # warm paper
    rgb = value[..., None] * tint + rng.normal(0, rng.uniform(0.01, 0.04), (h, w, 3))
    image = Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8))
    image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 2.5))))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(rng.integers(50, 90)))
    image = Image.open(io.BytesIO(buffer.getvalue()))
    image.info["digit_box"] = (x, y, size, size)  # where the 28x28 field went, for tests
    return image


def canvas(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A drawing on a web canvas: RGBA, transparent background, the strokes in black or a colour."""
    size = int(rng.integers(140, 400))
    alpha = _upscale(digit, int(size * rng.uniform(0.6, 0.9)))
    layer = Image.new("L", (size, size), 0)
    room = size - alpha.width
    position = (int(rng.integers(0, room + 1)), int(rng.integers(0, room + 1)))
    layer.paste(alpha, position)
    colour = (0, 0, 0) if rng.random() < 0.5 else tuple(int(c) for c in rng.integers(0, 200, 3))
    image = Image.new("RGBA", (size, size), (*colour, 0))
    image.putalpha(layer)
    image.info["digit_box"] = (*position, alpha.width, alpha.height)
    return image


def _pen(digit: np.ndarray, rng: np.random.Generator, grow: bool) -> Image.Image:
    """The digit drawn with a wider or narrower pen (max or min filter at 4x), dark on white."""
    big = _upscale(digit, 112)
    big = big.filter(ImageFilter.MaxFilter(int(rng.choice([5, 7]))) if grow else ImageFilter.MinFilter(5))
    return Image.eval(big, lambda v: 255 - v)


def thick(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Strokes about 1-1.5 MNIST pixels wider on each side."""
    return _pen(digit, rng, grow=True)


def thin(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Strokes about 0.5 MNIST pixel narrower on each side."""
    return _pen(digit, rng, grow=False)


RENDERERS: dict[str, Renderer] = {
    "clean": clean,
    "photo": photo,
    "photo_small": photo_small,
    "canvas": canvas,
    "thick": thick,
    "thin": thin,
}
