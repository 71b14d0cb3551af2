"""Find the ink in a photo, scan or drawing, and fit it into a 28x28 MNIST-style field.

`extract_ink` turns any grayscale picture into light ink on black, with the page and its lighting
taken away; `fit_digit` crops an ink map to the digit and places it as MNIST did (fitted into
20x20 keeping the aspect ratio, centred by mass in 28x28). Both work on float32 arrays in [0, 1].

How the ink is found, and why:
1. Polarity: the background is most of the picture, so its median lies on the page's side; the
   ink is the tail that reaches further from it (dark pen on paper, or chalk on a board). Ink
   under ~0.5% of the picture leaves the tails to the lighting; a guess that finds no ink is
   tried the other way round (ink of the wrong polarity never stands above the page).
2. Background: a low percentile of each block of a coarse grid (ink only ever adds, so a low
   percentile sees the page even where strokes cross the block), the grid eroded and smoothed,
   then stretched back to full size. A page lit from one side becomes flat black, not ink.
3. Noise: the median absolute deviation of what is left (the page is most of it, so the ink
   does not move it). Only what stands `NOISE_SIGMAS` above that is ink; grey levels are kept
   above the noise floor, so anti-aliased strokes stay anti-aliased (MNIST is not binary).
4. Clutter: ruled lines (rows or columns of ink spanning most of the picture, thin for their
   length) and connected pieces that are specks or page edges hugging the border are dropped,
   but only while something digit-like remains. `fit_digit`, which expects one digit, also
   leaves out small marks far from it; `extract_ink` keeps every digit of a number.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from mnistcli.data.components import components, dilate, label

GRID = 8  # background blocks per side (a block is larger than a stroke for any digit that fills <~ 1/2 the frame)
WORK_SIZE = 1024  # pixels: larger pictures are shrunk to this first (a digit needs far fewer)
MIN_BLOCK = 16  # pixels: smaller pictures get fewer blocks (one, a flat page, below 32 pixels)
BACKGROUND_PERCENTILE = 25  # low, since ink only adds: a block half covered by strokes still shows its page
NOISE_SIGMAS = 4.0  # a pixel is ink when it stands this many noise deviations above the page
MIN_CONTRAST = 0.08  # ...and at least this far (on a 0-1 scale) above it, so a flat page never yields ink
CROP_THRESHOLD = 0.2  # fraction of full ink above which a pixel counts when cropping (as before)
SPECK = 0.05  # a piece smaller than this fraction of the largest is a speck
SMALLEST = 0.015  # a digit is at least this fraction of the picture across (a 4-digit number 15% of a photo's width)
SMALLEST_PIXELS = 6  # ...and this many pixels: camera noise above the floor makes specks of 1-3
NEAR = 0.5  # fit_digit: a piece under 1/5 of the digit, further from it than this x its size, is a stray mark


def _resize(a: np.ndarray, width: int, height: int, resample: Image.Resampling) -> np.ndarray:
    image = Image.fromarray(np.ascontiguousarray(a, dtype=np.float32))
    return np.asarray(image.resize((width, height), resample), dtype=np.float32)


def _background(x: np.ndarray) -> np.ndarray:
    """The page under light ink: a low percentile per block of a coarse grid, eroded, smoothed, stretched."""
    h, w = x.shape
    gy, gx = min(GRID, max(1, h // MIN_BLOCK)), min(GRID, max(1, w // MIN_BLOCK))
    rows, cols = np.array_split(np.arange(h), gy), np.array_split(np.arange(w), gx)
    grid = np.array(
        [[np.percentile(x[r[0] : r[-1] + 1, c[0] : c[-1] + 1], BACKGROUND_PERCENTILE) for c in cols] for r in rows],
        dtype=np.float32,
    )
    padded = np.pad(grid, 1, mode="edge")
    # Erode: a block wholly inside a thick stroke takes its neighbours' page. Then smooth the steps.
    eroded = np.min([padded[i : i + gy, j : j + gx] for i in range(3) for j in range(3)], axis=0)
    padded = np.pad(eroded, 1, mode="edge")
    smooth = np.mean([padded[i : i + gy, j : j + gx] for i in range(3) for j in range(3)], axis=0)
    return _resize(smooth, w, h, Image.Resampling.BILINEAR)


def _noise(r: np.ndarray) -> tuple[float, float]:
    """(centre, spread) of the page in `r`: its median and 1.4826 x median absolute deviation."""
    centre = float(np.median(r))
    return centre, 1.4826 * float(np.median(np.abs(r - centre)))


def _ruled_lines(mask: np.ndarray) -> np.ndarray:
    """Pixels of straight rows or columns of ink that cross the picture and are far thinner than a pen stroke.

    A ruled line is about 1/100 of a page thick; a stroke is about 1/8 of a digit, 1/20 with a fine
    pen. Pictures under 64 pixels are left alone: there, a stroke can be as thin as a line.
    """
    lines = np.zeros_like(mask)
    for m, out in ((mask, lines), (mask.T, lines.T)):
        if m.shape[1] < 64:
            continue
        labels, n = label((m.mean(axis=1) > 0.85)[:, None])
        for i in range(1, n + 1):
            band = labels[:, 0] == i
            if band.sum() <= max(1, m.shape[1] // 50):
                out[band] = m[band]
    return lines


def _pieces(mask: np.ndarray) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
    """(labels, count, area of each piece, its box as rows of top, bottom, left, right) of `mask`'s components."""
    labels, boxes = components(mask)  # boxes: x0, y0, x1, y1 (exclusive), pixels
    left, top, right, bottom, areas = boxes.T
    return labels, len(boxes), areas, np.stack([top, bottom - 1, left, right - 1])


def _keep(mask: np.ndarray) -> np.ndarray:
    """The pieces of `mask` that are writing: drop specks, page edges along the border and slanted ruled lines."""
    labels, n, areas, (top, bottom, left, right) = _pieces(mask)
    if n == 0:
        return mask
    h, w = mask.shape
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    along = np.bincount(border, minlength=n + 1)[1:] / (2 * (h + w))  # share of the border each piece covers
    height, width = bottom - top + 1, right - left + 1
    # A page edge (a table, the next page) is solid and runs along the border; a digit only touches
    # it. A slanted ruled line spans the picture and is thin.
    solid = areas > 0.5 * height * width
    line = ((width >= 0.9 * w) & (height <= 0.08 * h)) | ((height >= 0.9 * h) & (width <= 0.08 * w))
    writing = ~((solid & (along > 0.15)) | line)
    if not writing.any():  # only edges and lines: keep them rather than guess
        writing[:] = True
    largest = int(np.argmax(np.where(writing, areas, -1)))
    if max(height[largest], width[largest]) < max(SMALLEST_PIXELS, SMALLEST * max(h, w)):  # noise, not a digit
        return np.zeros_like(mask)
    keep = writing & (areas >= SPECK * areas[largest])
    return keep[labels - 1] & mask


def _one_digit(ink: np.ndarray) -> np.ndarray:
    """`ink` without the small pieces far from its largest piece (the digit): stray marks beside it."""
    labels, n, areas, (top, bottom, left, right) = _pieces(ink > 0)
    if n < 2:
        return ink
    main = int(np.argmax(areas))
    size = max(bottom[main] - top[main], right[main] - left[main]) + 1
    gap = np.maximum.reduce([top[main] - bottom, top - bottom[main], left[main] - right, left - right[main], 0 * top])
    far = (areas < 0.2 * areas[main]) & (gap > NEAR * size)
    return np.where(far[labels - 1] & (labels > 0), 0.0, ink).astype(np.float32)


def extract_ink(gray: np.ndarray) -> np.ndarray:
    """Light ink on black, same shape, float32 in [0, 1]: page, uneven light, noise and clutter removed.

    Polarity is decided from the picture; the strokes keep their anti-aliased grey levels, scaled
    so that the body of a stroke is 1. All zeros when nothing stands clearly above the page.
    Pictures larger than `WORK_SIZE` are worked on shrunk (area-averaged) and the map stretched back.
    """
    x = np.asarray(gray, dtype=np.float32)
    h, w = x.shape
    if max(h, w) > WORK_SIZE:
        scale = WORK_SIZE / max(h, w)
        small = _resize(x, max(1, round(w * scale)), max(1, round(h * scale)), Image.Resampling.BOX)
        return np.clip(_resize(_extract(small), w, h, Image.Resampling.BILINEAR), 0.0, 1.0)
    return _extract(x)


def _extract(x: np.ndarray) -> np.ndarray:
    median = float(np.median(x))
    low, high = np.percentile(x, [0.5, 99.5])
    dark_ink = median - low > high - median  # dark ink on a light page: MNIST is light on dark
    # The tails decide polarity when the ink is over ~0.5% of the picture; below that they see only
    # the lighting and noise, and may guess wrong (a thin "1" on a page lit from one side). Ink of the
    # wrong polarity never stands above the page, so a blank guess is tried the other way round.
    ink = _extract_light(1.0 - x if dark_ink else x)
    return ink if ink.any() else _extract_light(x if dark_ink else 1.0 - x)


def _extract_light(x: np.ndarray) -> np.ndarray:
    """`extract_ink` of a picture already light-on-dark, at working size."""
    r = x - _background(x)
    centre, spread = _noise(r)
    floor = centre + max(NOISE_SIGMAS * spread, MIN_CONTRAST)
    mask = r > floor
    if not mask.any():
        return np.zeros_like(x)
    mask &= ~_ruled_lines(mask)
    mask = _keep(mask)
    if not mask.any():
        return np.zeros_like(x)
    full = float(np.percentile(r[mask], 90))
    # Grey levels from the noise floor (3 sigma: the faint edge of a stroke) to the stroke's body.
    soft_floor = centre + min(3.0 * spread, 0.5 * (floor - centre))
    ink = np.clip((r - soft_floor) / max(full - soft_floor, 1e-6), 0.0, 1.0)
    halo = max(1, round(max(x.shape) / 150))  # keep the soft edge of the kept strokes
    return np.where(dilate(mask, halo), ink, 0.0).astype(np.float32)


def fit_digit(ink: np.ndarray) -> np.ndarray | None:
    """An ink map (light on black) -> 28x28 MNIST-style float32: cropped to the ink, fitted into 20x20, centred by mass.

    The map should hold one digit; small stray marks well away from its largest piece are left
    out of the crop. Returns None if the map holds no ink.
    """
    ink = np.asarray(ink, dtype=np.float32)
    if not ink.size or float(ink.max()) <= 0.0:
        return None
    ink = _one_digit(ink)
    peak = float(ink.max())  # after the stray marks are gone: the brightest of them may have been the peak
    strong = ink > CROP_THRESHOLD * peak
    rows, cols = np.flatnonzero(strong.any(axis=1)), np.flatnonzero(strong.any(axis=0))
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] / peak
    h, w = crop.shape
    scale = 20.0 / max(h, w)
    fitted = np.clip(
        _resize(crop, max(1, round(w * scale)), max(1, round(h * scale)), Image.Resampling.LANCZOS), 0.0, 1.0
    )
    # Centre by the centre of mass, as MNIST did, clipping the shift so nothing leaves the field.
    total = float(fitted.sum())
    ys, xs = np.indices(fitted.shape)
    cy, cx = (float((ys * fitted).sum() / total), float((xs * fitted).sum() / total)) if total else (h / 2, w / 2)
    top = int(np.clip(round(14 - cy), 0, 28 - fitted.shape[0]))
    left = int(np.clip(round(14 - cx), 0, 28 - fitted.shape[1]))
    out = np.zeros((28, 28), dtype=np.float32)
    out[top : top + fitted.shape[0], left : left + fitted.shape[1]] = fitted
    return out
