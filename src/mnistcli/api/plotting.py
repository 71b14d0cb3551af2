"""`mnist plot`: pictures of runs (learning curves; a classifier's confusion matrix and its mistakes)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mnistcli import plots, store
from mnistcli.api.common import data_folder, load_checkpoint, load_tensors
from mnistcli.data import mnist
from mnistcli.errors import CheckpointError, UsageError
from mnistcli.inference import evaluate_classifier
from mnistcli.runlog import LOG, read_log

MISTAKES = 48  # digits in the grid of mistakes


@dataclass
class PlotReport:
    files: list[tuple[str, str]] = field(default_factory=list)  # (what, path), in the order written
    notes: list[str] = field(default_factory=list)  # what could not be drawn, and why


def _history(folder: Path) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]], float | None]:
    """(name, step events, epoch events, test accuracy): the run's log, else the epochs recorded in meta.json."""
    try:
        meta = store.read_meta(folder)
    except CheckpointError:
        meta = {}  # an interrupted run: its log only
    test = meta.get("metrics", {}).get("test_accuracy")
    if (folder / LOG).exists():
        steps, epochs = read_log(folder / LOG)
        return folder.name, steps, epochs, test
    return folder.name, [], list(meta.get("history", [])), test


def plot(
    refs: Sequence[str],
    output: str | Path = ".",
    data_dir: str | None = None,
    device: str = "auto",
    on_download: mnist.ProgressFn | None = None,
) -> PlotReport:
    """Write PNGs for runs `refs` into `output`: `<run>-curves.png` (or one `curves.png` comparing
    several runs) and, for classifier checkpoints, `<run>-confusion.png` and `<run>-mistakes.png`."""
    if not refs:
        raise UsageError("name at least one run (see `mnist checkpoints`)")
    out = Path(output)
    if not out.is_dir():
        raise UsageError(f"--output {output}: not a folder")
    plots.check_writable(out / "curves.png")
    folders = [store.run_folder(ref) for ref in refs]
    report = PlotReport()
    histories = [_history(f) for f in folders]
    drawable = [h for h in histories if h[1] or h[2]]
    for name, steps, epochs, _ in histories:
        if not (steps or epochs):
            report.notes.append(f"{name}: nothing logged, no learning curves")
    if len(drawable) == 1:
        report.files.append(
            ("learning curves", str(plots.learning_curves(drawable, out / f"{drawable[0][0]}-curves.png")))
        )
    elif drawable:
        report.files.append(("learning curves", str(plots.learning_curves(drawable, out / "curves.png"))))
    test = None
    for folder in folders:
        if not (folder / store.META).exists():
            report.notes.append(f"{folder.name}: no checkpoint (an interrupted run), so no confusion matrix")
            continue
        run, model, dev = load_checkpoint(str(folder), {"classify", "contrastive", "metric", "adder"}, device)
        if run.task != "classify":
            report.notes.append(f"{run.name}: a {run.task} model; confusion matrix and mistakes are for classifiers")
            continue
        if test is None:
            test = load_tensors("test", data_folder(data_dir, on_download), dev)
        result = evaluate_classifier(model, test)
        title = f"{run.name}: {100 * result.accuracy:.2f}% of {result.total:,} test images"
        report.files.append(
            (
                "confusion matrix",
                str(plots.confusion_heatmap(result.confusion, out / f"{run.name}-confusion.png", title)),
            )
        )
        wrong = np.flatnonzero(result.predictions != test.labels.cpu().numpy())
        shown = wrong[:MISTAKES]
        grid = plots.mistakes_grid(
            test.images.cpu().numpy()[shown],
            test.labels.cpu().numpy()[shown],
            result.predictions[shown],
            out / f"{run.name}-mistakes.png",
            f"{run.name}: the first {len(shown)} of {len(wrong):,} misclassified test digits (true → predicted)",
        )
        report.files.append(("misclassified digits", str(grid)))
    return report


PREDICTION_ROWS = 12  # images drawn by `mnist predict --plot`


def plot_predictions(report: Any, output: str | Path) -> tuple[str, int]:
    """Draw each predicted image (the first PREDICTION_ROWS) beside its probability bars; returns (path, images drawn)."""
    from mnistcli.api.reports import Prediction
    from mnistcli.data.images import load_image

    rows = [r for r in report.results if isinstance(r, Prediction)][:PREDICTION_ROWS]
    if not rows:
        raise UsageError("--plot: no image was predicted, nothing to draw")
    path = plots.prediction_bars(
        [load_image(r.path) for r in rows], [r.probabilities for r in rows], [Path(r.path).name for r in rows], output
    )
    return str(path), len(rows)
