"""User images -> MNIST-style 28x28 arrays, made the way MNIST itself was made.

MNIST digits are light ink on a black background, anti-aliased into a 20x20 box that keeps the
aspect ratio, then placed in a 28x28 field so that the centre of mass sits at the centre. Photos,
scans and canvas drawings are brought to that form: `open_gray` reads the file (orientation,
transparency, bit depth), `extract_ink` (data/ink.py) takes away page, lighting, noise and clutter,
`fit_digit` crops, fits and centres. An image that is already MNIST-style (28x28, light on dark)
passes through exactly.

Large pictures are reduced as they are read, in their own mode (a JPEG decoded at 1/2, 1/4 or 1/8
scale, then box-averaged by a whole factor), before any float array is made: a 7000 x 7000 PNG
costs its decoded pixels (49 MB gray, 196 MB RGBA) and little more, where the float pipeline at
full size took over 1 GB. A digit needs far fewer pixels (ink is found at 1024 on the longer side).

Returns float32 arrays in [0, 1]; no torch here.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mnistcli.data.files import open_regular
from mnistcli.data.ink import extract_ink, fit_digit
from mnistcli.errors import ImageError

__all__ = [
    "collect_paths",
    "extract_ink",
    "fit_digit",
    "image_files",
    "is_mnist_style",
    "load_image",
    "load_images",
    "open_gray",
    "to_mnist",
]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"})
MAX_PIXELS = 50_000_000  # refuse decompression bombs politely rather than with PIL's warning
# Longer side above which open_gray reduces a picture as it reads it (a 12 MP phone photo, 4000 x 3000, is kept
# whole); load_image, which wants one digit, reduces to DIGIT_SIDE, twice the size ink is found at.
MAX_SIDE = 4096
DIGIT_SIDE = 2048
MAX_ASPECT = 100  # a picture longer than this times its width (49,000,000 x 1) is no picture of a digit
# Modes Image.reduce averages correctly (it premultiplies LA and RGBA itself); others are converted first.
REDUCIBLE = frozenset({"L", "LA", "RGB", "RGBA", "CMYK", "YCbCr", "I", "F"})
BLANK = "blank image: no digit found (no ink, or only marks too faint or small to be one)"


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


def _to_grayscale(image: Image.Image) -> np.ndarray:
    """Flatten transparency and colour into a float32 luminance array in [0, 1]."""
    image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        # 16-bit, 32-bit and float images: convert("L") would clip them; scale their own range to [0, 1]
        # instead (a 16-bit PNG often holds 10- or 12-bit data, 0-4095: over 65535 it would be all black).
        a = np.asarray(image, dtype=np.float32)
        lo, hi = float(a.min()), float(a.max())
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


def _reduce(image: Image.Image, max_side: int) -> Image.Image:
    """Load `image` with its longer side at most about `max_side`, averaged down in its own mode.

    A JPEG is decoded at a reduced scale (draft), so its full size is never held; other formats
    are decoded whole (their honest cost) and reduced by a whole factor before anything else.
    Palette, bilevel and 16-bit images, which Image.reduce cannot average, are converted first.
    """
    factor = math.ceil(max(image.size) / max_side)
    if factor > 1 and image.format == "JPEG":
        image.draft(image.mode, (math.ceil(image.width / factor), math.ceil(image.height / factor)))
    image.load()
    factor = math.ceil(max(image.size) / max_side)
    if factor <= 1:
        return image
    if image.mode not in REDUCIBLE:
        if image.mode in ("1", "P") and "transparency" not in image.info:
            image = image.convert("L")
        elif image.mode.startswith("I;16"):
            image = image.convert("I")
        else:
            image = image.convert("RGBA")
    return image.reduce(factor)


def is_mnist_style(gray: np.ndarray) -> bool:
    """True for a 28x28 picture of light ink on a dark field: it is already what a model sees."""
    if gray.shape != (28, 28):
        return False
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    return float(np.median(border)) < 0.5 and float(gray.max()) > float(np.median(border))


def open_gray(path: str | os.PathLike[str], max_side: int = MAX_SIDE) -> np.ndarray:
    """Read an image file as float32 grayscale in [0, 1] (EXIF orientation applied, transparency flattened).

    A picture longer than `max_side` on either side is reduced by a whole factor as it is read (a
    4000 x 3000 photo with the default is kept whole). Raises `ImageError` naming the file: no such
    file, a folder, not a regular file (a FIFO or a device, refused without blocking), not an
    image, too large, far longer than wide (no picture of a digit), unreadable.
    """
    with open_regular(path, ImageError, folder="a folder with no image files in it") as f:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Pillow's warnings about odd files are noise on the CLI's stderr
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(f) as image:
                    w, h = image.size
                    if w * h > MAX_PIXELS:
                        raise ImageError(path, f"image too large ({w}x{h})")
                    if max(w, h) > MAX_ASPECT * max(min(w, h), 1):
                        raise ImageError(
                            path, f"not a picture of a digit ({w}x{h}: over {MAX_ASPECT} times longer than wide)"
                        )
                    gray = _to_grayscale(_reduce(image, max_side))
        except ImageError:
            raise
        except UnidentifiedImageError:
            raise ImageError(path, "not a readable image") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageError(path, f"image too large (over {MAX_PIXELS} pixels)") from None
        except Exception as e:  # Pillow's decoders fail on hostile bytes in many ways (struct.error, ...)
            raise ImageError(path, f"cannot read image ({e or type(e).__name__})") from None
    if gray.ndim != 2 or min(gray.shape) < 1:
        raise ImageError(path, "empty image")
    return gray.astype(np.float32, copy=False)


def to_mnist(gray: np.ndarray) -> np.ndarray | None:
    """A grayscale float array -> the 28x28 MNIST-style array a model sees; None if it holds no ink.

    An MNIST-style picture (28x28, light on dark) passes through exactly, so that the test set
    written as PNG files is read as `mnist eval` reads it; anything else goes through
    `extract_ink` and `fit_digit`.
    """
    if is_mnist_style(gray):
        return gray.astype(np.float32, copy=True)
    return fit_digit(extract_ink(gray))


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one image file and return it as a 28x28 float32 MNIST-style array in [0, 1].

    Raises `ImageError` naming the file if it cannot be read, is not an image, or holds no digit.
    """
    digit = to_mnist(open_gray(path, DIGIT_SIDE))
    if digit is None:
        raise ImageError(path, BLANK)
    return digit


def load_images(paths: Iterable[str]) -> Iterator[tuple[str, np.ndarray | ImageError]]:
    """Yield (path, array) or (path, ImageError) for each path, in order, never stopping early."""
    for path in paths:
        try:
            yield path, load_image(path)
        except ImageError as e:
            yield path, e
