"""Pictures as PNG files, drawn with matplotlib (an optional extra: `pip install 'mnistcli[plot]'`).

Each function takes plain arrays, draws one figure off-screen (the Agg backend: no display
needed) and writes it atomically. matplotlib is imported only here, only when a picture is asked
for; without it the user gets one line saying how to install it.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from mnistcli.atomic import atomic_write
from mnistcli.errors import UsageError

# Ten colours that stay distinct for most colour-blind readers (matplotlib's tab10).
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise UsageError("pictures need matplotlib: pip install 'mnistcli[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def check_writable(path: str | Path) -> None:
    """Raise `UsageError` now if a picture could not be written to `path` later (no matplotlib, no such folder)."""
    _pyplot()
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"{path}: is a folder; give a file name such as map.png")
    if not target.parent.is_dir():
        raise UsageError(f"{path}: folder {target.parent} does not exist")


def _save(fig: Any, path: str | Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi, bbox_inches="tight")
    fig.clf()
    return atomic_write(path, lambda f: f.write(buffer.getvalue()))


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project rows of `x` onto their first two principal components; returns (points (N, 2), explained variance ratio (2,))."""
    centred = x - x.mean(axis=0, keepdims=True)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    var = s**2
    return centred @ vt[:2].T, var[:2] / var.sum()


def embedding_map(embeddings: np.ndarray, labels: np.ndarray, seen: list[int], path: str | Path, title: str) -> Path:
    """A 2-D PCA map of `embeddings` coloured by digit; digits in `seen` filled, the others hollow. Returns the path."""
    plt = _pyplot()
    points, ratio = pca_2d(embeddings.astype(np.float64))
    fig, ax = plt.subplots(figsize=(8, 7), dpi=120)
    for digit in range(10):
        mask = labels == digit
        if not mask.any():
            continue
        colour = PALETTE[digit]
        kind = "seen" if digit in seen else "unseen"
        ax.scatter(
            points[mask, 0],
            points[mask, 1],
            s=6 if digit in seen else 8,
            c=colour if digit in seen else "none",
            edgecolors="none" if digit in seen else colour,
            linewidths=0.6,
            alpha=0.55,
            label=f"{digit} ({kind})",
        )
        cx, cy = np.median(points[mask], axis=0)
        ax.annotate(
            str(digit),
            (cx, cy),
            fontsize=15,
            fontweight="bold",
            color=colour,
            ha="center",
            va="center",
            bbox={"boxstyle": "circle,pad=0.2", "fc": "white", "ec": colour, "alpha": 0.85},
        )
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(f"principal component 1 ({100 * ratio[0]:.0f}% of variance)")
    ax.set_ylabel(f"principal component 2 ({100 * ratio[1]:.0f}% of variance)")
    legend = ax.legend(
        markerscale=3,
        fontsize=8,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        title="digit\n(filled: labels\nseen in training)",
    )
    legend.get_title().set_fontsize(8)
    ax.grid(alpha=0.2)
    out = _save(fig, path)
    plt.close(fig)
    return out
