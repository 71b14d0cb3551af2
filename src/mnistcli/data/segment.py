"""An ink map holding a whole number -> one crop per digit, left to right. numpy only, never torch.

`mnist read` runs this between `images.extract_ink` (light ink on black) and `images.fit_digit`:

1. Ink pixels (above `INK_LEVEL` of the brightest) are labelled into 8-connected components
   (data/components.py: row runs joined by a vectorised union-find).
2. Specks (under `SPECK_AREA` of the largest component's pixels) are dropped.
3. Components whose x-extents overlap by at least `MERGE_OVERLAP` of the narrower one become one
   digit: the two strokes of a 4 or a 5 that do not touch, the pieces of a broken stroke.
4. A small piece (under `FRAGMENT_AREA` of a typical digit's ink) joins the nearest digit when
   it overlaps it or lies within `FRAGMENT_GAP` of the digit height: a broken-off stroke end.
5. Marks far shorter than the digits (under `SHORT_MARK` of the typical digit height) are dropped:
   decimal points, commas, dashes, dirt.
6. A group far wider than tall (over `SPLIT_ASPECT`) is taken to be touching digits and cut at the
   column of least ink near where each digit should end, but only where that column holds little
   ink (under `SAFE_CUT` of the group's median column): a thin joining stroke, not a digit's body.

Digits that touch in other ways stay one crop (and read as one digit); see docs/reading.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mnistcli.data.components import components, dilate, label

__all__ = ["DigitCrop", "components", "label", "segment"]

INK_LEVEL = 0.25  # fraction of the brightest ink above which a pixel is ink for labelling
SPECK_AREA = 0.01  # components with fewer pixels than this fraction of the largest are dropped
MERGE_OVERLAP = 0.5  # x-overlap, as a fraction of the narrower width, that makes two pieces one digit
FRAGMENT_AREA = 0.35  # a group with less ink than this fraction of a typical digit's may be a broken-off piece
FRAGMENT_GAP = 0.2  # ... and joins the nearest digit if the x-gap is at most this fraction of the digit height
SHORT_MARK = 0.4  # groups shorter than this fraction of the typical digit height are not digits
SPLIT_ASPECT = 1.5  # width / height above which a group is taken to be touching digits
DIGIT_ASPECT = 0.8  # typical width / height of one digit (MNIST's median), to count digits in a group
SAFE_CUT = 0.5  # a cut column may hold at most this fraction of the group's median column ink


@dataclass(frozen=True)
class DigitCrop:
    """One digit found in the image: its box in the image's pixels and its ink alone."""

    x: int
    y: int
    width: int
    height: int
    ink: np.ndarray  # (height, width) float32: the ink map inside the box, other digits' ink removed

    @property
    def box(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.width, self.height)


def segment(ink: np.ndarray) -> list[DigitCrop]:
    """Split an ink map (light on black, [0, 1]) into digit crops, left to right; [] if it holds no ink."""
    peak = float(ink.max()) if ink.size else 0.0
    if peak <= 0.0:
        return []
    labels, boxes = components(ink > INK_LEVEL * peak)  # boxes: x0, y0, x1, y1 (exclusive), pixels
    if not len(boxes):
        return []
    keep = np.flatnonzero(boxes[:, 4] >= SPECK_AREA * boxes[:, 4].max())
    groups = _merge_overlapping(keep, boxes)
    groups = _attach_fragments(groups, boxes)
    spans = np.array([_span(g, boxes) for g in groups])
    heights = spans[:, 3] - spans[:, 1]
    groups = [g for g, h in zip(groups, heights, strict=True) if h >= SHORT_MARK * _typical(spans)[0]]

    crops: list[DigitCrop] = []
    for g in groups:
        ids = np.array(g) + 1
        x0, y0, x1, y1, _ = _span(g, boxes)
        mine = np.isin(labels[y0:y1, x0:x1], ids)
        others = (labels[y0:y1, x0:x1] > 0) & ~mine
        region = np.where(dilate(others), 0.0, ink[y0:y1, x0:x1]).astype(np.float32)
        for c0, c1 in _cuts(region * mine, y1 - y0):
            crop = _tight(region[:, c0:c1], mine[:, c0:c1], x0 + c0, y0)
            if crop is not None:
                crops.append(crop)
    return sorted(crops, key=lambda c: c.x + c.width / 2)


def _span(group: list[int], boxes: np.ndarray) -> tuple[int, int, int, int, int]:
    """The box around a group of components, and its pixel count."""
    b = boxes[group]
    return (int(b[:, 0].min()), int(b[:, 1].min()), int(b[:, 2].max()), int(b[:, 3].max()), int(b[:, 4].sum()))


def _merge_overlapping(keep: np.ndarray, boxes: np.ndarray) -> list[list[int]]:
    """Components in x order, joined while each overlaps the group so far by MERGE_OVERLAP of the narrower."""
    groups: list[list[int]] = []
    end = start = 0
    order = keep[np.lexsort((boxes[keep, 2], boxes[keep, 0]))]
    for i, x0, x1 in zip(order.tolist(), boxes[order, 0].tolist(), boxes[order, 2].tolist(), strict=True):
        if groups and min(end, x1) - x0 >= MERGE_OVERLAP * min(end - start, x1 - x0):
            groups[-1].append(i)
            end = max(end, x1)
        else:
            groups.append([i])
            start, end = x0, x1
    return groups


def _typical(spans: np.ndarray) -> tuple[float, float]:
    """The typical digit's height and pixel count: medians over the groups with real mass (not specks)."""
    substantial = spans[spans[:, 4] >= 0.2 * spans[:, 4].max()]
    return float(np.median(substantial[:, 3] - substantial[:, 1])), float(np.median(substantial[:, 4]))


def _attach_fragments(groups: list[list[int]], boxes: np.ndarray) -> list[list[int]]:
    """Join each small piece (under FRAGMENT_AREA of a typical digit's ink) to the nearest digit in x,
    when it overlaps it or the gap is under FRAGMENT_GAP of the digit height: a stroke broken in two."""
    spans = np.array([_span(g, boxes) for g in groups])
    height, area = _typical(spans)
    small = spans[:, 4] < FRAGMENT_AREA * area
    target = list(range(len(groups)))
    for i in np.flatnonzero(small).tolist():
        gaps = np.maximum(spans[:, 0] - spans[i, 2], spans[i, 0] - spans[:, 2]).astype(float)
        gaps[small] = np.inf
        j = int(np.argmin(gaps))
        if gaps[j] <= FRAGMENT_GAP * height:
            target[i] = j
    joined: dict[int, list[int]] = {}
    for t, g in zip(target, groups, strict=True):
        joined.setdefault(t, []).extend(g)
    return list(joined.values())


def _cuts(ink: np.ndarray, height: int) -> list[tuple[int, int]]:
    """Column ranges of the digits in one group: one range, or several where touching digits can be cut safely.

    A safe cut is a column with under SAFE_CUT of the median column's ink, near where a digit
    should end: a thin joining stroke. Round digits that touch side by side (a column full of
    two vertical arcs) and wide single digits (middle columns cross two or three strokes) stay whole.
    """
    width = ink.shape[1]
    if width <= SPLIT_ASPECT * height:
        return [(0, width)]
    parts = max(2, round(width / (DIGIT_ASPECT * height)))
    column = ink.sum(axis=0)
    limit = SAFE_CUT * float(np.median(column[column > 0]))
    ranges, start = [], 0
    for k in range(1, parts):
        centre, reach = k * width / parts, 0.3 * width / parts
        lo, hi = max(start + 1, int(centre - reach)), min(width - 1, int(centre + reach) + 1)
        if lo >= hi:
            continue
        best = lo + int(np.argmin(column[lo:hi]))
        if column[best] <= limit:
            # The joining stroke (every thin column around the cut) belongs to neither digit.
            left, right = best, best + 1
            while left > start + 1 and column[left - 1] <= limit:
                left -= 1
            while right < width - 1 and column[right] <= limit:
                right += 1
            ranges.append((start, left))
            start = right
    return [*ranges, (start, width)]


def _tight(region: np.ndarray, mine: np.ndarray, x: int, y: int) -> DigitCrop | None:
    """A crop trimmed to its own ink pixels; None if it has none."""
    rows, cols = np.flatnonzero(mine.any(axis=1)), np.flatnonzero(mine.any(axis=0))
    if not len(rows):
        return None
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    return DigitCrop(x + c0, y + r0, c1 - c0, r1 - r0, np.ascontiguousarray(region[r0:r1, c0:c1]))
