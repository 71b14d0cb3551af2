"""`mnist plot`: pictures of runs (learning curves; a classifier's confusion matrix and its mistakes)."""

from __future__ import annotations

import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mnistcli import store
from mnistcli.api.common import a_model, data_folder, load_checkpoint, load_tensors
from mnistcli.atomic import mode_of
from mnistcli.data import mnist
from mnistcli.errors import CheckpointError, DataError, UsageError
from mnistcli.families import families_where
from mnistcli.families.base import trained_digits
from mnistcli.protocols.inference import evaluate_classifier
from mnistcli.render import plots
from mnistcli.store.checkpoint import Results
from mnistcli.store.runlog import LOG, read_log

MISTAKES = 48  # digits in the grid of mistakes


@dataclass
class PlotReport:
    files: list[tuple[str, str]] = field(default_factory=list)  # (what, path), in the order written
    notes: list[str] = field(default_factory=list)  # what could not be drawn, and why


def _history(folder: Path, name: str) -> plots.RunCurves:
    """A run's curves: its log (else the epochs in meta.json), its test result and where its saved weights come from."""
    try:
        info: store.Checkpoint | None = store.read_checkpoint(folder)
    except CheckpointError:
        info = None  # an interrupted run: its log only
    results = info.results if info is not None else Results()
    target = results.target or {}
    if target.get("reached"):
        stopped_at = float(target["epochs"])  # stopped part-way through an epoch, e.g. 0.62
    elif results.stopped_early and results.best_epoch:
        stopped_at = float(results.best_epoch)  # early stopping kept the best epoch's weights
    else:
        stopped_at = None  # the last epoch
    history = info.history if info is not None else []
    steps, epochs = read_log(folder / LOG) if (folder / LOG).exists() else ([], list(history))
    return plots.RunCurves(name, steps, epochs, results.test_accuracy, results.test_measure, stopped_at)


def _labels(folders: list[Path]) -> list[str]:
    """A distinct label per folder: its name, with -2, -3, ... for runs of one name from different stores."""
    labels: list[str] = []
    for folder in folders:
        label, n = folder.name, 1
        while label in labels:
            n += 1
            label = f"{folder.name}-{n}"
        labels.append(label)
    return labels


def plot(
    refs: Sequence[str],
    output: str | Path = ".",
    data_dir: str | None = None,
    device: str = "auto",
    on_download: mnist.ProgressFn | None = None,
) -> PlotReport:
    """Write PNGs for runs `refs` into `output`: `<run>-curves.png` (or one `curves.png` comparing
    several runs) and, for classifier checkpoints, `<run>-confusion.png` and `<run>-mistakes.png`
    (on the test images of the digits the run was trained on). Raises `MnistError` if nothing
    could be drawn."""
    if not refs:
        raise UsageError("name at least one run (see `mnist checkpoints`)")
    out = Path(output).expanduser()
    mode = mode_of(out, f"--output {output}")
    if mode is not None and not stat.S_ISDIR(mode):
        raise UsageError(f"--output {output}: not a folder")
    plots.check_writable(out / "curves.png")  # matplotlib there, no file in the way: before the work
    folders = list(dict.fromkeys(store.run_folder(ref).resolve() for ref in refs))  # each run once
    labels = _labels(folders)
    # The file names are the program's, not the user's: a FIFO or a device there is refused before any work.
    for name in (
        "curves.png",
        *(f"{label}-{kind}.png" for label in labels for kind in ("curves", "confusion", "mistakes")),
    ):
        plots.check_derived(out / name)
    report = PlotReport()
    histories = []
    for folder, label in zip(folders, labels, strict=True):
        members = store.member_folders(folder)  # an ensemble's curves are its members'
        histories += [_history(m, f"{label}/{m.name}") for m in members] or [_history(folder, label)]
    drawable = [h for h in histories if h.steps or h.epochs]
    for h in histories:
        if not (h.steps or h.epochs):
            report.notes.append(f"{h.name}: nothing logged, no learning curves")
    if drawable:
        if len(folders) == 1:
            name = f"{labels[0]}-curves.png"
        else:
            name = f"{drawable[0].name}-curves.png" if len(drawable) == 1 else "curves.png"
        report.files.append(("learning curves", str(plots.learning_curves(drawable, out / name, derived=True))))
    test = None
    classifiers = families_where(lambda f: f.classifies)  # whose logits make a confusion matrix
    for folder, label in zip(folders, labels, strict=True):
        if not (folder / store.META).exists():
            report.notes.append(f"{label}: no checkpoint (an interrupted run), so no confusion matrix")
            continue
        family = store.read_checkpoint(folder).model.family
        if family not in classifiers:
            report.notes.append(f"{label}: {a_model(family)}; the confusion matrix and mistakes are for classifiers")
            continue
        run, model, dev = load_checkpoint(str(folder), classifiers, device)
        if test is None:
            test = load_tensors("test", data_folder(data_dir, on_download, ("test",)), dev)
        try:
            data = trained_digits(test, run.info.data.classes)
        except DataError as e:  # this run's digits are not among these test images: the other runs still drawn
            report.notes.append(f"{label}: {e}, so no confusion matrix or mistakes")
            continue
        result = evaluate_classifier(model, data)
        title = f"{label}: {100 * result.accuracy:.2f}% of {result.total:,} test images"
        report.files.append(
            (
                "confusion matrix",
                str(plots.confusion_heatmap(result.confusion, out / f"{label}-confusion.png", title, derived=True)),
            )
        )
        truth = data.labels.cpu().numpy()
        wrong = np.flatnonzero(result.predictions != truth)
        if not len(wrong):
            report.notes.append(f"{label}: no misclassified test digit to draw")
            continue
        shown = wrong[:MISTAKES]
        grid = plots.mistakes_grid(
            data.images.cpu().numpy()[shown],
            truth[shown],
            result.predictions[shown],
            out / f"{label}-mistakes.png",
            f"{label}: the first {len(shown)} of {len(wrong):,} misclassified test digits (true → predicted)",
            derived=True,
        )
        report.files.append(("misclassified digits", str(grid)))
    if not report.files:
        raise DataError("nothing to draw: " + "; ".join(report.notes))
    return report


PREDICTION_ROWS = 12  # images drawn by `mnist predict --plot`


def plot_predictions(report: Any, output: str | Path) -> tuple[str, int, int]:
    """Draw each predicted image (the first PREDICTION_ROWS) beside its probability bars.

    Returns (path, images drawn, images predicted).
    """
    from mnistcli.data.images import load_image
    from mnistcli.reports import Prediction

    predicted = [r for r in report.results if isinstance(r, Prediction)]
    rows = predicted[:PREDICTION_ROWS]
    if not rows:
        raise UsageError("--plot: no image was predicted, nothing to draw")
    path = plots.prediction_bars(
        [load_image(r.path) for r in rows], [r.probabilities for r in rows], [Path(r.path).name for r in rows], output
    )
    return str(path), len(rows), len(predicted)


BAG_ROWS, BAG_COLUMNS = 12, 16  # bags, and images of each, drawn by `mnist predict --bag --plot`


def plot_bags(bags: Sequence[Any], output: str | Path) -> tuple[str, int, int]:
    """Draw each bag (the first BAG_ROWS; BAG_COLUMNS images of each, those with the most attention kept) as a row
    of the pictures the model saw, each with its attention weight. Returns (path, bags drawn, bags predicted)."""
    from mnistcli.data.images import load_image

    rows: list[plots.BagRow] = []
    for bag in bags[:BAG_ROWS]:
        keep = sorted(sorted(range(len(bag.paths)), key=lambda i: -bag.attention[i])[:BAG_COLUMNS])
        label = bag.bag if bag.bag is not None else "loose files"
        chance = f"{100 * bag.probability:.1f}%"
        verdict = (
            f"positive, holds a {bag.target} (probability {chance})"
            if bag.positive
            else f"negative, holds no {bag.target} (probability of a {bag.target}: {chance})"
        )
        title = f"{label}: {verdict}"
        if len(keep) < len(bag.paths):
            title += f"; the {len(keep)} of {len(bag.paths)} images with the most attention"
        images = [load_image(bag.paths[i]) for i in keep]
        rows.append(plots.BagRow(title, images, [bag.attention[i] for i in keep], keep.index(bag.top)))
    if not rows:
        raise UsageError("--plot: no bag was predicted, nothing to draw")
    return str(plots.bag_attention(rows, output)), len(rows), len(bags)
