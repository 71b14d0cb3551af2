"""Pictures as PNG files, drawn with matplotlib (an optional extra: `pip install 'mnistcli[plot]'`).

Each function takes plain arrays, draws one figure off-screen (the Agg backend: no display
needed) and writes it: a file the user named as the output as `atomic.write_output` does (a FIFO
or a device is written to), a file name the program made up in a folder (`derived`) only ever
atomically, refusing anything there that is not a regular file. matplotlib is imported only here, only when a picture is asked
for; without it the user gets one line saying how to install it.
"""

from __future__ import annotations

import io
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mnistcli.atomic import atomic_write, mode_of, replaceable, write_output
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

    # A name with a character no font draws (an escape, a control character) is drawn as a box; matplotlib's warning
    # would carry the raw character to the terminal.
    warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from font", category=UserWarning)

    return plt


def check_writable(path: str | Path) -> None:
    """Raise `UsageError` now if a picture could not be written to `path` later (no matplotlib, a file where
    a folder should be, a name the system cannot look up). Missing folders are fine: writing the picture creates
    them, as `mkdir -p` would."""
    _pyplot()
    target = Path(path).expanduser()
    mode = mode_of(target, path)
    if mode is not None and stat.S_ISDIR(mode):
        raise UsageError(f"{path}: is a folder; give a file name such as map.png")
    if target.suffix.lower() != ".png":
        raise UsageError(f"{path}: pictures are PNG files; give a name ending in .png")
    folder = target.parent
    while (mode := mode_of(folder)) is None and folder != folder.parent:
        folder = folder.parent
    if mode is not None and not stat.S_ISDIR(mode):
        raise UsageError(f"{path}: {folder} is a file, not a folder")


def check_derived(path: str | Path) -> None:
    """Raise `FileProblem` if a picture the program names `path` (in a folder the user gave) would meet anything
    there that is not a regular file (a FIFO, a device, a folder): such a thing is never replaced nor written to."""
    replaceable(Path(path))


def _save(fig: Any, path: str | Path, derived: bool) -> Path:
    """Write `fig` as a PNG to `path`: atomically if the program `derived` the name, else as the user's output."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi, bbox_inches="tight")
    fig.clf()
    write = atomic_write if derived else write_output
    return write(path, lambda f: f.write(buffer.getvalue()))


@dataclass
class MapPanel:
    """One 2-D view of embeddings for `embedding_map`."""

    points: np.ndarray  # (N, 2)
    labels: np.ndarray  # (N,) the digit of each point
    heading: str  # above the panel
    xlabel: str
    ylabel: str


def embedding_map(panels: list[MapPanel], seen: list[int], path: str | Path, title: str) -> Path:
    """Maps of embeddings side by side, coloured by digit; digits in `seen` filled, the others hollow, each digit's
    name at its median point. Returns the path."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(7.5 * len(panels), 7), dpi=110, squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        _map_panel(ax, panel, seen)
    handles, names = axes[0][0].get_legend_handles_labels()
    legend = fig.legend(
        handles,
        names,
        markerscale=3,
        fontsize=9,
        loc="upper left",
        bbox_to_anchor=(1.0, 0.93),
        title="digit\n(filled: labels\nseen in training)",
    )
    legend.get_title().set_fontsize(9)
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    out = _save(fig, path, False)
    plt.close(fig)
    return out


def _map_panel(ax: Any, panel: MapPanel, seen: list[int]) -> None:
    points, labels = panel.points, panel.labels
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
    ax.set_title(panel.heading, fontsize=10)
    ax.set_xlabel(panel.xlabel)
    ax.set_ylabel(panel.ylabel)
    ax.grid(alpha=0.2)


@dataclass
class RunCurves:
    """What the learning curves of one run are drawn from."""

    name: str
    steps: list[dict[str, Any]]  # the log's step events
    epochs: list[dict[str, Any]]  # its epoch events (or meta.json's history)
    test: float | None = None  # the saved model's test result
    measure: str = "accuracy"  # what `test` measures
    stopped_at: float | None = None  # the (fractional) epoch the saved weights come from, where the test star goes


def _plain_log_labels(axis: Any) -> None:
    """Label a log axis with plain numbers (0.3, 2, 6.65) instead of 3x10^-1 and 6.65x10^0, where matplotlib would."""
    from matplotlib.ticker import LogFormatterSciNotation

    class Plain(LogFormatterSciNotation):
        def __call__(self, x: float, pos: int | None = None) -> str:
            return f"{x:.3g}" if super().__call__(x, pos) else ""

    axis.set_major_formatter(Plain())
    axis.set_minor_formatter(Plain(labelOnlyBase=False))


def learning_curves(runs: list[RunCurves], path: str | Path, derived: bool = False) -> Path:
    """Training loss at every logged step (log scale) and accuracy per epoch for one or more runs.

    The accuracy panel is left out when no run has finished an epoch (an interrupted run's log). `derived`: the
    program made the file name up (in a folder the user gave), so only a regular file there is replaced (`_save`).
    """
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    with_epochs = any(r.epochs for r in runs)
    if with_epochs:
        fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=110)
    else:
        fig, left = plt.subplots(1, 1, figsize=(6.5, 4.5), dpi=110)
        right = None
    for i, run in enumerate(runs):
        colour = PALETTE[i % len(PALETTE)]
        if run.steps:  # x in epochs (steps / steps per epoch), so runs with other batch sizes line up
            left.plot(
                [s["step"] * s.get("epochs", 1) / max(1, s.get("total_steps", s["step"])) for s in run.steps],
                [s.get("recent_loss", s.get("loss")) for s in run.steps],
                color=colour,
                lw=1.2,
                marker="." if len(run.steps) < 5 else None,  # a run stopped after a report or two is still seen
                label=run.name,
            )
        elif run.epochs:  # an older run with no step log: one point per epoch
            left.plot(
                [e["epoch"] for e in run.epochs],
                [e["train_loss"] for e in run.epochs],
                "o-",
                color=colour,
                label=run.name,
            )
        if right is None or not run.epochs:
            continue
        xs = [float(e["epoch"]) for e in run.epochs]
        if run.stopped_at is not None and run.stopped_at < xs[-1]:
            xs[-1] = run.stopped_at  # the last epoch stopped part-way (target reached): its point goes there
        right.plot(
            xs,
            [100 * e["train_accuracy"] for e in run.epochs],
            "--",
            marker=".",
            color=colour,
            lw=1,
            label=f"{run.name} train",
        )
        val = [
            (x, 100 * e["val_accuracy"])
            for x, e in zip(xs, run.epochs, strict=True)
            if e.get("val_accuracy") is not None
        ]
        if val:
            right.plot(*zip(*val, strict=True), "o-", color=colour, lw=1.5, label=f"{run.name} validation")
        if run.test is not None:  # the saved model's test result, where its weights come from
            right.plot(
                [run.stopped_at if run.stopped_at is not None else xs[-1]],
                [100 * run.test],
                "*",
                color=colour,
                ms=12,
                label=f"{run.name} test {run.measure} {100 * run.test:.2f}%",
            )
    left.set_yscale("log")
    _plain_log_labels(left.yaxis)
    left.set_xlabel("epoch")
    left.set_ylabel("training loss (mean between reports)")
    left.set_title("training loss" if with_epochs else "training loss (no epoch finished: no accuracy yet)")
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    if right is not None:
        right.set_xlabel("epoch")
        right.xaxis.set_major_locator(MaxNLocator(integer=True))
        right.set_ylabel("accuracy (%)")
        right.set_title("accuracy per epoch")
    for ax in (left, right):
        if ax is None:
            continue
        ax.grid(alpha=0.25)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    out = _save(fig, path, derived)
    plt.close(fig)
    return out


def confusion_heatmap(confusion: np.ndarray, path: str | Path, title: str, derived: bool = False) -> Path:
    """The confusion matrix (rows true, columns predicted) as a heat map of counts, log-coloured."""
    plt = _pyplot()
    from matplotlib.colors import LogNorm

    fig, ax = plt.subplots(figsize=(6.5, 5.5), dpi=110)
    shown = np.where(confusion > 0, confusion, np.nan)
    image = ax.imshow(shown, cmap="Blues", norm=LogNorm(vmin=1, vmax=max(2, int(confusion.max()))))
    for i in range(confusion.shape[0]):
        for j in range(confusion.shape[1]):
            if confusion[i, j]:
                dark = confusion[i, j] > confusion.max() ** 0.5
                ax.text(
                    j, i, str(confusion[i, j]), ha="center", va="center", fontsize=7, color="white" if dark else "black"
                )
    ax.set_xticks(range(confusion.shape[1]))
    ax.set_yticks(range(confusion.shape[0]))
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("true digit")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, label="images (log scale)")
    out = _save(fig, path, derived)
    plt.close(fig)
    return out


def mistakes_grid(
    images: np.ndarray,
    true: np.ndarray,
    predicted: np.ndarray,
    path: str | Path,
    title: str,
    columns: int = 8,
    derived: bool = False,
) -> Path:
    """A grid of digits (N, 28, 28) captioned "true -> predicted"."""
    plt = _pyplot()
    n = max(1, len(images))
    rows = -(-n // columns)
    # Constrained layout sets the title just above the grid (a fixed figure margin left a gap of an inch).
    fig, axes = plt.subplots(
        rows, columns, figsize=(columns * 1.2, rows * 1.35 + 0.4), dpi=110, squeeze=False, layout="constrained"
    )
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < len(images):
            ax.imshow(images[k], cmap="gray", vmin=0, vmax=255 if images.dtype == np.uint8 else 1)
            ax.set_title(f"{true[k]} → {predicted[k]}", fontsize=9, color="#c0392b")
    fig.suptitle(title, fontsize=10)
    out = _save(fig, path, derived)
    plt.close(fig)
    return out


def prediction_bars(
    images: list[np.ndarray], probabilities: list[list[float]], names: list[str], path: str | Path
) -> Path:
    """Each image (28, 28) in [0, 1] beside a bar chart of its class probabilities."""
    plt = _pyplot()
    rows = max(1, len(images))
    fig, axes = plt.subplots(rows, 2, figsize=(7.5, 2.6 * rows), dpi=110, squeeze=False, width_ratios=[1, 2.4])
    for (left, right), image, probs, name in zip(axes, images, probabilities, names, strict=False):
        left.imshow(image, cmap="gray", vmin=0, vmax=1)
        left.set_title(name, fontsize=8)
        left.axis("off")
        best = int(np.argmax(probs))
        colours = [PALETTE[2] if d == best else "#9aa5b1" for d in range(len(probs))]
        right.bar(range(len(probs)), probs, color=colours)
        right.set_xticks(range(len(probs)))
        right.set_ylim(0, 1)
        right.set_ylabel("probability")
        right.set_title(f"{best} ({100 * probs[best]:.1f}%)", fontsize=10)
        right.grid(axis="y", alpha=0.25)
    fig.tight_layout()
    out = _save(fig, path, False)
    plt.close(fig)
    return out


@dataclass
class BagRow:
    """One bag of `mnist predict --bag --plot`: its title, its images (28, 28) in [0, 1] and their attention."""

    title: str
    images: list[np.ndarray]
    attention: list[float]
    top: int  # the index of the image with the most attention (framed)


def bag_attention(bags: list[BagRow], path: str | Path) -> Path:
    """Each bag as a row of its images, each captioned with its attention weight and faded by how little it got;
    the image with the most attention framed in red."""
    plt = _pyplot()
    columns = max(len(b.images) for b in bags)
    fig = plt.figure(figsize=(max(5.0, 0.95 * columns), 1.45 * len(bags)), dpi=110, layout="constrained")
    for sub, bag in zip(np.atleast_1d(fig.subfigures(len(bags), 1)), bags, strict=True):
        sub.suptitle(bag.title, x=0.01, ha="left", fontsize=9)
        peak = max(bag.attention) or 1.0
        for k, ax in enumerate(np.atleast_1d(sub.subplots(1, columns))):
            ax.set_xticks([])
            ax.set_yticks([])
            if k >= len(bag.images):
                ax.axis("off")
                continue
            top = k == bag.top
            ax.imshow(bag.images[k], cmap="gray", vmin=0, vmax=1, alpha=0.3 + 0.7 * bag.attention[k] / peak)
            colour = PALETTE[3] if top else "#9aa5b1"
            for spine in ax.spines.values():
                spine.set_color(colour)
                spine.set_linewidth(2.5 if top else 0.6)
            ax.set_xlabel(f"{bag.attention[k]:.2f}", fontsize=8, color=colour, fontweight="bold" if top else "normal")
    out = _save(fig, path, False)
    plt.close(fig)
    return out
