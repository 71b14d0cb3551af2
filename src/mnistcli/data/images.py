"""User images -> MNIST-style 28x28 arrays, made the way MNIST itself was made.

MNIST digits are light ink on a black background, anti-aliased into a 20x20 box that keeps the
aspect ratio, then placed in a 28x28 field so that the centre of mass sits at the centre. Photos,
scans and canvas drawings are brought to that form here: transparency composited away, grayscale,
dark-on-light inverted, the background level subtracted, cropped to the ink, fitted into 20x20 and
centred by mass. An image that is already MNIST-style passes through (nearly) unchanged.

Returns float32 arrays in [0, 1]; no torch here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mnistcli.errors import ImageError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"})
INK_THRESHOLD = 0.2  # fraction of the brightest ink above which a pixel counts when cropping
MAX_PIXELS = 50_000_000  # refuse decompression bombs politely rather than with PIL's warning


def collect_paths(items: Iterable[str], stdin: Iterable[str] = ()) -> list[str]:
    """Expand command-line items into image paths, in order.

    `-` takes one path per line from `stdin`, each treated like an item; a folder contributes its
    image files (recursively, sorted, hidden ones skipped), or itself if it has none (so that it
    is reported as a failed item); anything else is passed through, so a missing file is
    reported when it is loaded.
    """
    out: list[str] = []
    for item in items:
        if item == "-":
            out.extend(collect_paths([line.strip() for line in stdin if line.strip() and line.strip() != "-"]))
        elif os.path.isdir(item):
            found = image_files(Path(item))
            out.extend([str(p) for p in found] or [item])
        else:
            out.append(item)
    return out


def image_files(folder: Path) -> list[Path]:
    """Image files under `folder` (recursively, sorted), skipping hidden files and folders (.git, ._x.png)."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and p.is_file()
    )


def open_gray(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as a 2-D float32 grayscale array in [0, 1] (transparency and colour flattened).

    Raises `ImageError` naming the file if it cannot be read, is not an image, or is empty.
    """
    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_PIXELS:
                raise ImageError(path, f"image too large ({image.width}x{image.height})")
            image.load()
            gray = _to_grayscale(image)
    except FileNotFoundError:
        raise ImageError(path, "no such file") from None
    except IsADirectoryError:
        raise ImageError(path, "a folder with no image files in it") from None
    except UnidentifiedImageError:
        raise ImageError(path, "not a readable image") from None
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ImageError(path, f"cannot read image ({e})") from None
    if gray.ndim != 2 or min(gray.shape) < 1:
        raise ImageError(path, "empty image")
    return gray


def _to_grayscale(image: Image.Image) -> np.ndarray:
    """Flatten transparency and colour into a float32 luminance array in [0, 1]."""
    image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        # 16-bit, 32-bit and float images: convert("L") would clip them; scale to [0, 1] instead.
        a = np.asarray(image, dtype=np.float32)
        lo, hi = (0.0, 65535.0) if image.mode.startswith("I;16") else (float(a.min()), float(a.max()))
        return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
        alpha = rgba[..., 3]
        luma = rgba[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        if alpha.min() < 1.0:
            # Strokes on a transparent canvas: the opaque pixels are the ink. Put them on a
            # background of the opposite brightness so that the ink stays visible.
            opaque = alpha > 0.5
            ink_is_dark = opaque.any() and float(luma[opaque].mean()) < 0.5
            background = 1.0 if ink_is_dark else 0.0
            return luma * alpha + background * (1.0 - alpha)
        return luma
    return np.asarray(image.convert("L"), dtype=np.float32) / 255.0


def extract_ink(gray: np.ndarray) -> np.ndarray:
    """Grayscale -> ink map of the same shape: light ink on black, float32 in [0, 1], peak 1.

    The background level (median of the border) is subtracted; a light page is inverted first.
    All zeros when nothing stands out from the background.
    """
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = float(np.median(border))
    if background > 0.5:  # dark ink on a light page: MNIST is light on dark
        gray, background = 1.0 - gray, 1.0 - background
    ink = np.clip(gray - background, 0.0, None).astype(np.float32)
    peak = float(ink.max())
    if peak < 0.05:
        return np.zeros_like(ink)
    return ink / peak


def fit_digit(ink: np.ndarray) -> np.ndarray | None:
    """An ink crop (light on black) -> 28x28 MNIST-style: cropped to the ink, fitted into 20x20, centred by mass.

    None if the crop holds no ink.
    """
    peak = float(ink.max()) if ink.size else 0.0
    if peak <= 0.0:
        return None
    ink = ink / peak
    rows = np.flatnonzero((ink > INK_THRESHOLD).any(axis=1))
    cols = np.flatnonzero((ink > INK_THRESHOLD).any(axis=0))
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]

    h, w = crop.shape
    scale = 20.0 / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    fitted = np.asarray(
        Image.fromarray(np.ascontiguousarray(crop, dtype=np.float32)).resize(size, Image.Resampling.LANCZOS),
        dtype=np.float32,
    )
    fitted = np.clip(fitted, 0.0, 1.0)

    # Centre by the centre of mass, as MNIST did, clipping the shift so nothing leaves the field.
    total = float(fitted.sum())
    ys, xs = np.indices(fitted.shape)
    cy, cx = (float((ys * fitted).sum() / total), float((xs * fitted).sum() / total)) if total else (h / 2, w / 2)
    top = int(np.clip(round(14 - cy), 0, 28 - fitted.shape[0]))
    left = int(np.clip(round(14 - cx), 0, 28 - fitted.shape[1]))
    out = np.zeros((28, 28), dtype=np.float32)
    out[top : top + fitted.shape[0], left : left + fitted.shape[1]] = fitted
    return out


def to_mnist(gray: np.ndarray) -> np.ndarray | None:
    """Turn a grayscale float array into a 28x28 MNIST-style array; None if it holds no ink."""
    return fit_digit(extract_ink(gray))


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one image file and return it as a 28x28 float32 MNIST-style array in [0, 1].

    Raises `ImageError` naming the file if it cannot be read, is not an image, or holds no digit.
    """
    digit = to_mnist(open_gray(path))
    if digit is None:
        raise ImageError(path, "blank image: no ink found")
    return digit


def load_images(paths: Iterable[str]) -> Iterator[tuple[str, np.ndarray | ImageError]]:
    """Yield (path, array) or (path, ImageError) for each path, in order, never stopping early."""
    for path in paths:
        try:
            yield path, load_image(path)
        except ImageError as e:
            yield path, e
