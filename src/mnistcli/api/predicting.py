"""Commands on the user's own images: `predict`, `embed` and `oneshot`.

Unreadable images become `Failure`s and the rest still go through; results keep input order.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mnistcli import store
from mnistcli.api.common import a_model, load_checkpoint, read_images
from mnistcli.atomic import atomic_write, atomic_write_bytes
from mnistcli.data.images import image_files
from mnistcli.errors import ImageError, UsageError
from mnistcli.families.adder import predict_adder
from mnistcli.protocols import fewshot
from mnistcli.protocols.inference import image_features, predict_proba
from mnistcli.reports import (
    EmbedReport,
    Failure,
    Match,
    OneShotReport,
    Prediction,
    PredictReport,
    SumPrediction,
)

NO_IMAGES = "no images given (pass files, folders, or - to read paths from stdin)"


def check_add(add: int | None) -> None:
    """Raise `UsageError` unless `add` is None or a number 0-9."""
    if add is not None and not 0 <= add <= 9:
        raise UsageError(f"--add {add}: the number to add must be 0-9")


def predict(
    paths: Sequence[str],
    ref: str | None = None,
    device: str = "auto",
    add: int | None = None,
    show_input: str | None = None,
) -> PredictReport:
    """Classify each image (an adder: its digit, and its sum with `add`); unreadable images become `Failure`s.

    `show_input`: a folder to write, for each readable image, the 28x28 picture the model saw
    (see `write_inputs`); the report's `shown` lists them.
    """
    if not paths:
        raise UsageError(NO_IMAGES)
    check_add(add)
    if show_input is not None:
        check_show_input(show_input, paths)
    if add is None:
        families, suggest = {"classify", "adder"} if ref else {"classify"}, "cnn"
    else:
        families, suggest = {"adder"}, "adder"
    if add is not None and ref is not None:
        named = store.resolve(ref)
        if named.family != "adder":
            raise UsageError(f"--add is for adder checkpoints; {named.name!r} is {a_model(named.family)}")
    run, model, _ = load_checkpoint(ref, families, device, suggest=suggest)
    if run.family == "adder" and add is None:
        raise UsageError(f"{run.name} is an adder: give the number to add with --add N (0-9)")
    loaded, stacked = read_images(paths)
    shown = [str(p) for p in write_inputs(loaded, make_folder(show_input, "--show-input"))] if show_input else []
    if add is not None:
        return PredictReport(run, _sums(model, loaded, stacked, add, run.temperature, run.sum_temperature), shown)
    rows = iter(predict_proba(model, stacked, run.temperature) if len(stacked) else [])
    results: list[Prediction | SumPrediction | Failure] = []
    for path, item in loaded:
        if isinstance(item, ImageError):
            results.append(Failure(path, str(item)))
        else:
            row = next(rows)
            results.append(
                Prediction(path, int(row.argmax()), round(float(row.max()), 6), [round(float(v), 6) for v in row])
            )
    return PredictReport(run, results, shown)


def check_show_input(folder: str, paths: Sequence[str]) -> None:
    """Refuse a `--show-input` folder that is a file, or that holds any of the input images.

    Pictures written among the inputs would be read as inputs by the next run over that folder.
    Raises `UsageError`; creates nothing (the folder is made once the checkpoint has loaded).
    """
    target = Path(folder)
    if not folder or (target.exists() and not target.is_dir()):
        raise UsageError(f"--show-input {folder}: not a folder")
    target = target.resolve()
    inside = next((p for p in paths if Path(p).resolve().is_relative_to(target)), None)
    if inside is not None:
        raise UsageError(
            f"--show-input {folder}: it holds input images ({inside}), which its pictures would join;"
            " choose a folder of its own"
        )


def make_folder(folder: str, option: str) -> Path:
    """Create `folder` (and its parents) if need be; raise `UsageError` if it is a file or cannot be made."""
    path = Path(folder)
    if not folder or (path.exists() and not path.is_dir()):
        raise UsageError(f"{option} {folder}: not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{option} {folder}: cannot create it ({e.strerror or e})") from None
    return path


def write_inputs(loaded: Sequence[tuple[str, np.ndarray | ImageError]], folder: str | Path) -> list[Path]:
    """Write each loaded 28x28 picture as an 8-bit PNG into `folder`, atomically; returns the files in order.

    A picture is named after its image (`photos/seven.jpg` -> `seven.png`); when that name is
    taken (by another picture of this run, an input, or any file already there, which is never
    replaced), `-2`, `-3`, ... is added.
    """
    folder = Path(folder)
    taken = {Path(p).resolve() for p, _ in loaded}
    written: list[Path] = []
    for path, item in loaded:
        if isinstance(item, ImageError):
            continue
        stem, n = Path(path).stem or "image", 1
        target = folder / f"{stem}.png"
        while target.resolve() in taken or os.path.lexists(target):
            n += 1
            target = folder / f"{stem}-{n}.png"
        taken.add(target.resolve())
        png = io.BytesIO()
        Image.fromarray((np.clip(item, 0.0, 1.0) * 255).round().astype(np.uint8)).save(png, format="PNG")
        written.append(atomic_write_bytes(target, png.getvalue()))
    return written


def _sums(
    model: torch.nn.Module,
    loaded: list[tuple[str, np.ndarray | ImageError]],
    stacked: np.ndarray,
    add: int,
    temperature: float,
    sum_temperature: float,
) -> list[Prediction | SumPrediction | Failure]:
    digit_p, sum_p = (
        predict_adder(model, stacked, add, temperature, sum_temperature)
        if len(stacked)
        else (np.zeros((0, 10)), np.zeros((0, 19)))
    )
    rows = iter(zip(digit_p, sum_p, strict=True))
    results: list[Prediction | SumPrediction | Failure] = []
    for path, item in loaded:
        if isinstance(item, ImageError):
            results.append(Failure(path, str(item)))
            continue
        d, s = next(rows)
        results.append(
            SumPrediction(
                path,
                add,
                int(d.argmax()),
                round(float(d.max()), 6),
                int(s.argmax()),
                round(float(s.max()), 6),
                [round(float(v), 6) for v in d],
                [round(float(v), 6) for v in s],
            )
        )
    return results


def embed(paths: Sequence[str], ref: str | None = None, device: str = "auto") -> EmbedReport:
    """Feature vectors of each readable image, in input order; unreadable ones become failures."""
    if not paths:
        raise UsageError(NO_IMAGES)
    run, model, _ = load_checkpoint(ref, None, device)
    loaded, stacked = read_images(paths)
    dim = int(getattr(model, "feature_dim", 0))
    vectors = image_features(model, stacked) if len(stacked) else np.zeros((0, dim), dtype=np.float32)
    ok_paths = [p for p, item in loaded if not isinstance(item, ImageError)]
    failures = [Failure(p, str(item)) for p, item in loaded if isinstance(item, ImageError)]
    return EmbedReport(run, ok_paths, vectors, failures)


def save_embeddings(report: EmbedReport, output: str | Path, fmt: str | None = None) -> Path:
    """Write the vectors atomically as .npy (float32, rows in input order) or CSV (path, then the values).

    `fmt` defaults to the file's extension (.csv -> csv, anything else -> npy).
    """
    fmt = fmt or ("csv" if Path(output).suffix.lower() == ".csv" else "npy")
    if fmt == "npy":
        return atomic_write(output, lambda f: np.save(f, report.vectors.astype(np.float32)))
    if fmt == "csv":
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["path", *(f"e{i}" for i in range(report.vectors.shape[1]))])
        writer.writerows([p, *(f"{v:.6g}" for v in row)] for p, row in zip(report.paths, report.vectors, strict=True))
        # surrogateescape: a file name that is not valid UTF-8 is written back as the same bytes
        return atomic_write(output, lambda f: f.write(text.getvalue().encode("utf-8", "surrogateescape")))
    raise UsageError(f"unknown format {fmt!r} (choose npy or csv)")


def read_support(support_dir: str | Path) -> tuple[dict[str, np.ndarray], list[Failure]]:
    """One sub-folder per class label, each with example images -> ({label: images (n, 28, 28)}, skipped images).

    Raises `UsageError` naming the folder if it is missing, has fewer than two classes, or has
    a class with no readable image.
    """
    folder = Path(support_dir)
    if not str(support_dir) or not folder.is_dir():
        raise UsageError(f"--support-dir {support_dir!s}: not a folder")
    try:
        class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as e:
        raise UsageError(f"--support-dir {support_dir}: cannot read it ({e.strerror})") from None
    if not class_dirs:
        raise UsageError(
            f"--support-dir {support_dir}: no class folders (make one sub-folder per label, each with example images)"
        )
    if len(class_dirs) < 2:
        raise UsageError(
            f"--support-dir {support_dir}: only one class ({class_dirs[0].name!r}); one-shot needs at least two"
        )
    support: dict[str, np.ndarray] = {}
    skipped: list[Failure] = []
    for class_dir in class_dirs:
        try:
            files = [str(p) for p in image_files(class_dir)]
        except OSError as e:
            raise UsageError(f"{class_dir}: cannot read class folder {class_dir.name!r} ({e.strerror})") from None
        loaded, stacked = read_images(files)
        skipped += [Failure(p, str(item)) for p, item in loaded if isinstance(item, ImageError)]
        if not len(stacked):
            raise UsageError(
                f"{class_dir}: class {class_dir.name!r} has no readable image"
                + (f" ({skipped[-1].error})" if loaded else "")
            )
        support[class_dir.name] = stacked
    return support, skipped


def oneshot(
    support_dir: str | Path, paths: Sequence[str], ref: str | None = None, device: str = "auto"
) -> OneShotReport:
    """Label each query image by the nearest class prototype (mean embedding) of the support folder's classes.

    Works with any checkpoint that has features; by default the latest `siamese` run. Confidences
    are a softmax of -scale x squared distance, with the scale the checkpoint calibrated in
    training (metric models) or `fewshot.DEFAULT_SCALE`.
    """
    if not paths:
        raise UsageError(NO_IMAGES)
    support, skipped = read_support(support_dir)
    # Any embedding checkpoint when named; by default only a metric run (one made for this).
    run, model, _ = load_checkpoint(ref, None if ref else {"triplet"}, device, suggest="siamese")
    labels = list(support)
    counts = [len(support[c]) for c in labels]
    sup = torch.from_numpy(image_features(model, np.concatenate([support[c] for c in labels])))
    protos = fewshot.prototypes(sup, torch.arange(len(labels)).repeat_interleave(torch.tensor(counts)), len(labels))
    calibrated = run.info.oneshot_scale is not None
    scale = run.info.oneshot_scale or fewshot.DEFAULT_SCALE
    loaded, stacked = read_images(paths)
    results: list[Match | Failure] = []
    if len(stacked):
        d2 = fewshot.distances(torch.from_numpy(image_features(model, stacked)), protos)
        conf = fewshot.confidences(d2, scale)
        rows = iter(zip(d2.tolist(), conf.tolist(), strict=True))
    for path, item in loaded:
        if isinstance(item, ImageError):
            results.append(Failure(path, str(item)))
            continue
        dist, probs = next(rows)
        best = int(np.argmin(dist))
        results.append(
            Match(
                path,
                labels[best],
                float(np.sqrt(dist[best])),
                float(probs[best]),
                {c: round(float(np.sqrt(d)), 6) for c, d in zip(labels, dist, strict=True)},
            )
        )
    return OneShotReport(run, dict(zip(labels, counts, strict=True)), scale, calibrated, results, skipped)
