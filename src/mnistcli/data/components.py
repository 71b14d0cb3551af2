"""Connected components and dilation of boolean images, shared by data/ink.py and data/segment.py. numpy only.

Labelling works on horizontal runs of ink: runs in neighbouring rows that touch (diagonally
included) are joined by a vectorised union-find, so the cost grows with the number of runs, not
pixels, and no Python loop visits a run (a 1024x1024 mask of 30% noise takes ~0.1 s).
"""

from __future__ import annotations

import numpy as np

__all__ = ["components", "dilate", "label"]


def label(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of a boolean image -> (int32 labels, 0 for background and 1..n, n)."""
    labels, boxes = components(mask)
    return labels, len(boxes)


def components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-connected components of a boolean image -> (int32 labels, 0 for background and 1..n;
    per component (row label - 1): x0, y0, x1, y1 (exclusive) and pixel count, int64 (n, 5)).

    Labels are numbered in row-major order of each component's first pixel.
    """
    mask = np.asarray(mask, dtype=bool)
    h, w = mask.shape
    edges = np.diff(np.pad(mask, ((0, 0), (1, 1))).astype(np.int8), axis=1)
    rows, starts = np.nonzero(edges == 1)
    ends = np.nonzero(edges == -1)[1]  # exclusive; same order as starts (row-major)
    n = len(starts)
    if n == 0:
        return np.zeros((h, w), dtype=np.int32), np.zeros((0, 5), dtype=np.int64)
    # Global keys in row-major order: run b in the next row touches run a when sb <= ea and eb >= sa.
    stride = w + 2
    next_row = (rows + 1) * stride
    lo = np.searchsorted(rows * stride + ends, next_row + starts, side="left")
    hi = np.searchsorted(rows * stride + starts, next_row + ends, side="right")
    counts = np.maximum(hi - lo, 0)
    a = np.repeat(np.arange(n), counts)
    b = np.repeat(lo, counts) + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
    _, component = np.unique(_union(n, a, b), return_inverse=True)
    component = component.ravel()
    k = int(component.max()) + 1
    # Paint: +label where a run starts, -label where it ends, summed along each row.
    marks = np.zeros((h, w + 1), dtype=np.int32)
    marks[rows, starts] = component + 1
    marks[rows, ends] -= component + 1
    labels = np.cumsum(marks, axis=1, dtype=np.int32)[:, :w]
    boxes = np.zeros((k, 5), dtype=np.int64)
    boxes[:, 0], boxes[:, 1] = w, h
    np.minimum.at(boxes[:, 0], component, starts)
    np.minimum.at(boxes[:, 1], component, rows)
    np.maximum.at(boxes[:, 2], component, ends)
    np.maximum.at(boxes[:, 3], component, rows + 1)
    boxes[:, 4] = np.bincount(component, weights=ends - starts, minlength=k)
    return labels, boxes


def _union(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Roots of the forest joining a[i] with b[i]: each node's smallest connected index."""
    parent = np.arange(n)
    while True:
        pa, pb = parent[a], parent[b]
        if np.array_equal(pa, pb):
            return parent
        np.minimum.at(parent, np.maximum(pa, pb), np.minimum(pa, pb))  # hook the larger root under the smaller
        while True:  # compress: every node points at its root
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand


def dilate(mask: np.ndarray, radius: int = 1) -> np.ndarray:
    """`mask` grown by `radius` pixels in every direction (a square), as two passes of shifted maxima."""
    out = np.asarray(mask, dtype=bool).copy()
    for axis in (0, 1):
        grown = out.copy()
        for shift in range(1, radius + 1):
            ahead = np.swapaxes(grown, 0, axis)
            source = np.swapaxes(out, 0, axis)
            ahead[shift:] |= source[:-shift]
            ahead[:-shift] |= source[shift:]
        out = grown
    return out
