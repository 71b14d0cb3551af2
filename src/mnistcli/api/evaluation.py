"""`mnist eval`: judge a checkpoint on the 10,000 MNIST test images, by the protocol its kind calls for.

A classifier is judged by its own head. A self-supervised (contrastive) model gets linear
evaluation: a probe on its frozen features. An embedding (metric) model gets the few-shot
protocol: N-way K-shot episodes on the test set, beside raw pixels on the same episodes, and
nearest-neighbour accuracy against the training set; `fewshot=True` asks for that protocol on
any checkpoint with features.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mnistcli import store
from mnistcli.api.common import (
    EMBEDDING_TASKS,
    data_folder,
    load_checkpoint,
    load_tensors,
    trained_classes,
    trained_digits,
)
from mnistcli.api.reports import AdderReport, EvalReport, FewShotReport, FewShotScore
from mnistcli.data import mnist
from mnistcli.data.tensors import TensorData
from mnistcli.errors import DataError, UsageError
from mnistcli.families.adder import held_out_numbers
from mnistcli.protocols import calibration, fewshot
from mnistcli.protocols import linear_probe as linear_eval
from mnistcli.protocols.inference import embed_data, evaluate_adder, evaluate_classifier
from mnistcli.protocols.linear_probe import frozen, linear_evaluation
from mnistcli.render import plots
from mnistcli.work import Counter, WorkFn, phase

NN_BLOCK = 1000  # test images per block of the nearest-neighbour search (1000 x 60000 distances)


def evaluate(
    ref: str | None = None,
    data_dir: str | None = None,
    device: str = "auto",
    labels_per_class: int | None = None,
    fewshot_protocol: bool = False,
    shots: Sequence[int] | None = None,
    episodes: int | None = None,
    map_path: str | Path | None = None,
    seed: int | None = None,
    on_download: mnist.ProgressFn | None = None,
    on_work: WorkFn | None = None,
) -> EvalReport | FewShotReport | AdderReport:
    """Evaluate a checkpoint on the test images; see the module docstring for the protocols.

    `labels_per_class` (self-supervised models) trains the probe on K labelled images per digit.
    `shots` (default 1 and 5), `episodes` (default 1,000) and `map_path` (a PCA map PNG) belong
    to the few-shot protocol. `seed` draws the episodes or the `labels_per_class` images (default
    0), or the number paired with each test image for an adder (default: the seed it was trained
    with, so it agrees with training's own test result). Options that do not apply to the
    checkpoint's protocol are refused, not ignored. Progress of the longer protocols goes to `on_work`.
    """
    run, model, dev = load_checkpoint(ref, EMBEDDING_TASKS, device)
    episode_options = shots is not None or episodes is not None
    if run.task == "adder":
        if labels_per_class is not None or fewshot_protocol or map_path is not None or episode_options:
            raise UsageError(
                "--labels-per-class, --fewshot, --shots, --episodes and --map do not apply to an adder checkpoint"
            )
        if seed is None:
            seed = int(run.meta.get("config", {}).get("seed", 0))
        test = trained_digits(run, load_tensors("test", data_folder(data_dir, on_download, ("test",)), dev))
        with phase(on_work, "testing"):
            return _adder(run, model, dev, test, seed)
    few = fewshot_protocol or run.task == "metric"
    if not few and episode_options:
        raise UsageError("--shots and --episodes belong to the few-shot protocol (embedding checkpoints, or --fewshot)")
    if run.task == "classify" and not few and seed is not None:
        raise UsageError("--seed does not apply to a classifier's evaluation (it draws nothing)")
    seed = 0 if seed is None else seed
    shots = fewshot.SHOTS if shots is None else shots
    episodes = fewshot.EPISODES if episodes is None else episodes
    if labels_per_class is not None and (run.task != "contrastive" or few):
        raise UsageError("--labels-per-class is for the linear evaluation of self-supervised checkpoints (e.g. simclr)")
    if labels_per_class is not None and labels_per_class < 1:
        raise UsageError("--labels-per-class must be at least 1")
    if not few and map_path is not None:
        raise UsageError("--map is part of the few-shot protocol (embedding checkpoints, or --fewshot)")
    if few and (not shots or any(k < 1 or k > 100 for k in shots)):
        raise UsageError("--shots takes numbers of examples per class from 1 to 100, e.g. 1,5")
    if few and not 1 <= episodes <= 100_000:
        raise UsageError("--episodes must be between 1 and 100,000")
    if map_path is not None:
        plots.check_writable(map_path)  # matplotlib there, the path writable: before the work, not after it
    # A classifier is judged on the test files alone; the other protocols also read the training images.
    folder = data_folder(data_dir, on_download, ("test",) if run.task == "classify" and not few else ("train", "test"))
    test_data = load_tensors("test", folder, dev)
    if few:
        train_data = load_tensors("train", folder, dev)
        return _fewshot(run, model, dev, test_data, train_data, shots, episodes, map_path, seed, on_work)
    t0 = time.perf_counter()
    if run.task == "classify":
        subset = trained_digits(run, test_data)
        with phase(on_work, "testing"):
            result = evaluate_classifier(model, subset)
        extra: dict[str, Any] = {
            "classes": seen_classes(run) if len(subset) < len(test_data) else None,
            **_calibration_errors(result.logits, subset.labels.cpu(), run.temperature),
        }
    else:
        train_data = load_tensors("train", folder, dev)
        fewest = int(torch.bincount(train_data.labels, minlength=10).min())
        if labels_per_class is not None and labels_per_class > fewest:
            raise UsageError(
                f"--labels-per-class {labels_per_class}: at most {fewest} (the fewest training images of any digit)"
            )
        result = linear_evaluation(frozen(model), train_data, test_data, labels_per_class, seed, on_work)
        pixels = linear_evaluation(
            linear_eval.pixels, train_data, test_data, labels_per_class, seed, on_work, "raw-pixel baseline"
        )
        extra = {"protocol": "linear", "labels_per_class": labels_per_class, "pixels_accuracy": pixels.accuracy}
    seconds = time.perf_counter() - t0
    return EvalReport(
        run,
        result.accuracy,
        result.loss,
        result.per_class(),
        result.confusion.tolist(),
        result.total,
        seconds,
        str(dev),
        **extra,
    )


def _calibration_errors(logits: Any, labels: torch.Tensor, temperature: float) -> dict[str, float]:
    """The temperature, and the ECE of the probabilities reported with it (`ece`) and without (`ece_uncalibrated`)."""
    return {
        "temperature": temperature,
        "ece": calibration.ece(calibration.probabilities(logits, temperature), labels),
        "ece_uncalibrated": calibration.ece(calibration.probabilities(logits), labels),
    }


def seen_classes(run: store.Run) -> list[int]:
    """The digits whose labels the checkpoint was trained with (none for a self-supervised model)."""
    return [] if run.task == "contrastive" else trained_classes(run)


def nearest_neighbour_accuracy(
    test: torch.Tensor,
    test_labels: torch.Tensor,
    train: TensorData,
    ref: torch.Tensor,
    on_images: fewshot.Tick | None = None,
) -> float:
    """Fraction of test embeddings whose nearest training embedding (of `ref`, labelled by `train`) has their label.

    `on_images(n)` hears of each block of `n` test images done.
    """
    hits = 0
    for start in range(0, len(test), NN_BLOCK):
        nearest = torch.cdist(test[start : start + NN_BLOCK], ref).argmin(dim=1)
        hits += int((train.labels[nearest] == test_labels[start : start + NN_BLOCK]).sum())
        if on_images is not None:
            on_images(len(nearest))
    return hits / max(len(test), 1)


def _fewshot(
    run: store.Run,
    model: torch.nn.Module,
    dev: torch.device,
    test: TensorData,
    train: TensorData,
    shots: Sequence[int],
    episodes: int,
    map_path: str | Path | None,
    seed: int,
    on_work: WorkFn | None = None,
) -> FewShotReport:
    try:
        fewshot.check_episodes(test.labels, max(shots))
    except DataError as e:
        raise UsageError(str(e)) from None
    t0 = time.perf_counter()
    seen = seen_classes(run)
    unseen = [c for c in range(10) if c not in seen]
    with phase(on_work, "embedding the test images"):
        emb = embed_data(model, test).cpu()
    pixels = test.images.flatten(1).float().cpu()
    labels = test.labels.cpu()
    groups = [("all", list(range(10)))] + ([("unseen", unseen)] if 2 <= len(unseen) < 10 else [])
    queries = fewshot.default_queries(labels, max(shots))  # small test sets (e.g. synthetic) get fewer
    scores: list[FewShotScore] = []
    per_class: list[dict[str, Any]] = []
    # The model's episodes and the same episodes on raw pixels, for every setting.
    drawn = Counter(on_work, "few-shot episodes", 2 * episodes * len(groups) * len(set(shots)))
    for name, classes in groups:
        for k in sorted(set(shots)):
            mine = fewshot.run_episodes(emb, labels, classes, len(classes), k, episodes, queries, seed, drawn.add)
            base = fewshot.run_episodes(pixels, labels, classes, len(classes), k, episodes, queries, seed, drawn.add)
            scores.append(
                FewShotScore(
                    name, mine.ways, k, episodes, mine.queries, mine.accuracy, mine.ci95, base.accuracy, base.ci95
                )
            )
            if not per_class:
                per_class = mine.per_class()
    drawn.finish()
    embedding = Counter(on_work, "nearest neighbour: embedding the training images", len(train))
    train_emb = embed_data(model, train, on_images=embedding.add)
    embedding.finish()
    searched = Counter(on_work, "nearest neighbour: searching", len(test))
    nn_accuracy = nearest_neighbour_accuracy(emb.to(train_emb.device), test.labels, train, train_emb, searched.add)
    searched.finish()
    written = None
    if map_path is not None:
        title = f"{run.name} ({run.model}): test embeddings, PCA" + (
            f"; labels seen in training: {','.join(map(str, seen))}" if seen and unseen else ""
        )
        written = str(plots.embedding_map(emb.numpy(), labels.numpy(), seen, map_path, title))
    return FewShotReport(run, scores, per_class, seen, unseen, nn_accuracy, time.perf_counter() - t0, str(dev), written)


def _rows(key: str, counts: list[tuple[int, int]]) -> list[dict[str, Any]]:
    """One row per number or sum; accuracy None where there were no test images of it."""
    return [{key: i, "correct": c, "total": t, "accuracy": c / t if t else None} for i, (c, t) in enumerate(counts)]


def _adder(run: store.Run, model: torch.nn.Module, dev: torch.device, test: TensorData, seed: int) -> AdderReport:
    t0 = time.perf_counter()
    numbers = held_out_numbers(len(test), seed)
    result = evaluate_adder(model, test, numbers)
    digits = test.labels.cpu()
    sums = _calibration_errors(result.sum_logits, digits + numbers, run.sum_temperature)
    digit = _calibration_errors(result.digit_logits, digits, run.temperature)
    return AdderReport(
        run,
        result.digit_accuracy,
        result.sum_accuracy,
        result.loss,
        _rows("number", result.by_number),
        _rows("sum", result.by_sum),
        result.total,
        seed,
        time.perf_counter() - t0,
        str(dev),
        temperature=run.temperature,
        sum_temperature=run.sum_temperature,
        ece=sums["ece"],
        ece_uncalibrated=sums["ece_uncalibrated"],
        digit_ece=digit["ece"],
        digit_ece_uncalibrated=digit["ece_uncalibrated"],
    )
