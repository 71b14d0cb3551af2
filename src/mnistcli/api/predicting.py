"""Commands on the user's own images: `predict`, `embed` and `oneshot`.

`predict` asks the checkpoint's family (families/: its `predict`) for the answers. Unreadable
images become `Failure`s and the rest still go through; results keep input order. A bags (multiple-instance)
checkpoint answers bags of images instead: api/bags.py groups the paths.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image

from mnistcli import store
from mnistcli.api.bags import predict_bags
from mnistcli.api.common import (
    a_model,
    answer_images,
    finite_only,
    load_checkpoint,
    match,
    read_images,
    read_support,
    unreadable,
)
from mnistcli.atomic import atomic_write_bytes, mode_of
from mnistcli.data.images import collect_paths
from mnistcli.errors import ImageError, UsageError
from mnistcli.families import families_where, family_names, get_family
from mnistcli.families.base import Family, PredictOptions
from mnistcli.protocols import fewshot
from mnistcli.protocols.inference import image_features
from mnistcli.reports import EmbedReport, Match, OneShotReport, PredictReport

NO_IMAGES = "no images given (pass files, folders, or - to read paths from stdin)"
NO_SHOW_BAGS = "--show-input is for predictions of single images; it does not apply to bags (--bag)"
R = TypeVar("R")
FLAGS = {"add": "--add", "bag": "--bag"}  # PredictOptions' fields as the command line spells them


def predict(
    paths: Sequence[str],
    ref: str | None = None,
    device: str = "auto",
    add: int | None = None,
    show_input: str | None = None,
    bag: bool = False,
    tta: bool = False,
) -> PredictReport:
    """Classify each image (an adder: its digit, and its sum with `add`); unreadable images become `Failure`s.

    `paths`: image files and folders (their images, recursively). With `bag`, or whenever the checkpoint is
    a bags (multiple-instance) model, each folder is one bag and the loose files another, and the results
    are `BagPrediction`s (api/bags.py); `bag` alone picks your latest bags run when `ref` is None.

    `tta`: classifiers average their logits over the image and four copies shifted by one pixel.

    `show_input`: a folder to write, for each readable image, the 28x28 picture the model saw
    (see `write_inputs`); the report's `shown` lists them. Raises `UsageError` for options the
    checkpoint's family does not take or lacks, `CheckpointError` for one whose family does not predict.
    """
    if not paths:
        raise UsageError(NO_IMAGES)
    options = PredictOptions(add=add, bag=bag or None, tta=tta)
    if show_input is not None:
        if bag:
            raise UsageError(NO_SHOW_BAGS)
        check_show_input(show_input, collect_paths(paths))
    run, model, family = _predictor(ref, options, device)
    if tta and "tta" not in family.eval_options:
        raise UsageError(f"--tta is for classifier checkpoints; {run.name!r} is {a_model(run.family)}")
    if "bag" in family.predict_options:  # a bags checkpoint answers bags, with --bag or without
        if show_input is not None:
            raise UsageError(NO_SHOW_BAGS)
        return PredictReport(run, [*finite_only(predict_bags(paths, run, model, family))])
    paths = collect_paths(paths)
    loaded, _ = read_images(paths)
    shown = [str(p) for p in write_inputs(loaded, make_folder(show_input, "--show-input"))] if show_input else []
    results = answer_images(loaded, lambda ok, images: family.predict(run, model, ok, images, options))
    return PredictReport(run, finite_only(results), shown)


def _predictor(ref: str | None, options: PredictOptions, device: str) -> tuple[store.Run, torch.nn.Module, Family]:
    """The checkpoint that answers `mnist predict` with `options`, its model and its family.

    A named checkpoint may be of any family that predicts and takes the options given; with none
    named, the latest run of the families whose predictor needs exactly these options (classify;
    with --add, adder). Raises `UsageError` or `CheckpointError` naming what does not fit.
    """
    given = options.given()
    if ref is not None and given:
        named = store.resolve(ref)
        refused = sorted(given - get_family(named.family).predict_options)
        if refused:
            option = refused[0]
            takers = " or ".join(sorted(families_where(lambda f: option in f.predict_options)))
            raise UsageError(f"{FLAGS[option]} is for {takers} checkpoints; {named.name!r} is {a_model(named.family)}")
    if ref is not None:
        families = families_where(lambda f: f.predicts and given <= f.predict_options)
    else:
        families = families_where(lambda f: f.predicts and f.predict_options == given)
    suggest = next(get_family(n).suggested_model for n in family_names() if n in families)
    run, model, _ = load_checkpoint(ref, families, device, suggest=suggest)
    family = get_family(run.family)
    family.check_predict(run.name, options)
    return run, model, family.from_checkpoint(run.info.config)


def check_show_input(folder: str, paths: Sequence[str]) -> None:
    """Refuse a `--show-input` folder that is a file, or that holds any of the input images.

    Pictures written among the inputs would be read as inputs by the next run over that folder.
    Raises `UsageError`; creates nothing (the folder is made once the checkpoint has loaded).
    """
    target = Path(folder)
    mode = mode_of(target, f"--show-input {folder}") if folder else None
    if not folder or (mode is not None and not stat.S_ISDIR(mode)):
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
    mode = mode_of(path, f"{option} {folder}") if folder else None
    if not folder or (mode is not None and not stat.S_ISDIR(mode)):
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


def embed(paths: Sequence[str], ref: str | None = None, device: str = "auto") -> EmbedReport:
    """Feature vectors of each readable image, in input order; unreadable ones become failures."""
    if not paths:
        raise UsageError(NO_IMAGES)
    run, model, _ = load_checkpoint(ref, None, device)
    loaded, stacked = read_images(paths)
    dim = int(getattr(model, "feature_dim", 0))
    vectors = image_features(model, stacked) if len(stacked) else np.zeros((0, dim), dtype=np.float32)
    embedded = [p for p, item in loaded if not isinstance(item, ImageError)]
    return EmbedReport(run, embedded, vectors, unreadable(loaded))


def oneshot(
    support_dir: str | Path, paths: Sequence[str], ref: str | None = None, device: str = "auto"
) -> OneShotReport:
    """Label each query image by the nearest class prototype (mean embedding) of the support folder's classes.

    Works with any checkpoint that has features; by default the latest `siamese` run. Confidences
    are a softmax of -scale x squared distance, with the scale the checkpoint calibrated in
    training (triplet models) or `fewshot.DEFAULT_SCALE`.
    """
    if not paths:
        raise UsageError(NO_IMAGES)
    support, skipped = read_support(support_dir)
    # Any embedding checkpoint when named; by default only a run of a family made for this (few-shot by default).
    made_for_it = families_where(lambda f: f.fewshot_by_default)
    suggest = next(get_family(n).suggested_model for n in family_names() if n in made_for_it)
    run, model, _ = load_checkpoint(ref, None if ref else made_for_it, device, suggest=suggest)
    labels = list(support)
    counts = [len(support[c]) for c in labels]
    sup = torch.from_numpy(image_features(model, np.concatenate([support[c] for c in labels])))
    protos = fewshot.prototypes(sup, torch.arange(len(labels)).repeat_interleave(torch.tensor(counts)), len(labels))
    calibrated = run.info.oneshot_scale is not None
    scale = run.info.oneshot_scale or fewshot.DEFAULT_SCALE
    loaded, _ = read_images(paths)

    def nearest(ok: list[str], images: np.ndarray) -> list[Match]:
        d2 = fewshot.distances(torch.from_numpy(image_features(model, images)), protos)
        conf = fewshot.confidences(d2, scale)
        return [
            match(path, labels, dist, probs) for path, dist, probs in zip(ok, d2.tolist(), conf.tolist(), strict=True)
        ]

    results = finite_only(answer_images(loaded, nearest))
    return OneShotReport(run, dict(zip(labels, counts, strict=True)), scale, calibrated, results, skipped)
