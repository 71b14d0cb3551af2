"""`mnist eval`: judge a checkpoint on the 10,000 MNIST test images, by the protocol its family calls for.

Each family measures its own kind of model (families/: a classifier by its head, a self-supervised
encoder by a linear probe, an adder by its digit and its sum), with the same code that gave its
test result in training. The few-shot protocol is offered to every family that has features
(`fewshot=True`), and is the triplet family's own: N-way K-shot episodes on the test set, beside
raw pixels on the same episodes, and nearest-neighbour accuracy against the training set.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mnistcli import store
from mnistcli.api.common import data_folder, load_checkpoint, load_tensors
from mnistcli.data import mnist
from mnistcli.data.tensors import TensorData
from mnistcli.errors import DataError, UsageError
from mnistcli.families import EvalData, EvalOptions, get_family
from mnistcli.protocols import fewshot, maps
from mnistcli.protocols.inference import dataset_features
from mnistcli.render import plots
from mnistcli.reports import AdderReport, EvalReport, FewShotReport, FewShotScore
from mnistcli.work import Counter, WorkFn, phase

NN_BLOCK = 1000  # test images per block of the nearest-neighbour search (1000 x 60000 distances)
FLAGS = {"labels_per_class": "--labels-per-class", "seed": "--seed"}


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
    tta: bool = False,
    on_download: mnist.ProgressFn | None = None,
    on_work: WorkFn | None = None,
) -> EvalReport | FewShotReport | AdderReport:
    """Evaluate a checkpoint on the test images by its family's protocol, or the few-shot one (`fewshot_protocol`).

    `labels_per_class` and `seed` go to the family's protocol where it takes them (a linear probe on
    K labels per digit; what it draws). `shots` (default 1 and 5), `episodes` (default 1,000),
    `map_path` (a PNG of t-SNE and PCA maps) and `seed` (default 0) belong to the few-shot protocol. `tta` averages a
    classifier's logits over shifted copies of each image (protocols/inference.py `with_tta`). Options that
    do not apply to the checkpoint's protocol are refused, not ignored. Progress of the longer
    protocols goes to `on_work`.
    """
    run, model, dev = load_checkpoint(ref, None, device)  # every family's models have features
    family = get_family(run.family).from_checkpoint(run.info.config)
    few = fewshot_protocol or family.fewshot_by_default
    episode_options = shots is not None or episodes is not None or map_path is not None
    if not family.offers_fewshot and (fewshot_protocol or episode_options or labels_per_class is not None):
        raise UsageError(
            f"--labels-per-class, --fewshot, --shots, --episodes and --map do not apply to {a_checkpoint(run.family)}"
        )
    if not few and episode_options:
        raise UsageError(
            "--shots, --episodes and --map belong to the few-shot protocol (embedding checkpoints, or --fewshot)"
        )
    if labels_per_class is not None and ("labels_per_class" not in family.eval_options or few):
        raise UsageError("--labels-per-class is for the linear evaluation of self-supervised checkpoints (e.g. simclr)")
    if seed is not None and not few and "seed" not in family.eval_options:
        raise UsageError(f"--seed does not apply to {a_checkpoint(run.family)}'s evaluation (it draws nothing)")
    if tta and ("tta" not in family.eval_options or few):
        raise UsageError(
            f"--tta is for classifier checkpoints' own protocol; not {a_checkpoint(run.family)}'s"
            + (" few-shot episodes" if few and "tta" in family.eval_options else "")
        )
    if labels_per_class is not None and labels_per_class < 1:
        raise UsageError("--labels-per-class must be at least 1")

    def split(name: str) -> TensorData:
        return load_tensors(name, data_folder(data_dir, on_download, (name,)), dev)

    if few:
        return _fewshot(run, model, str(dev), split, shots, episodes, map_path, seed or 0, on_work)
    data = EvalData(test=lambda: split("test"), train=lambda: split("train"), device=str(dev))
    return family.evaluate(run, model, data, EvalOptions(labels_per_class, seed, tta), on_work)  # type: ignore[no-any-return]


def a_checkpoint(family: str) -> str:
    """'a classify checkpoint', 'an adder checkpoint'."""
    return f"{'an' if family[:1] in 'aeiou' else 'a'} {family} checkpoint"


def seen_classes(run: store.Run) -> list[int]:
    """The digits whose labels the checkpoint was trained with (none for a self-supervised model)."""
    return list(run.info.data.classes) if get_family(run.family).learns_labels else []


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
    dev: str,
    split: Any,
    shots: Sequence[int] | None,
    episodes: int | None,
    map_path: str | Path | None,
    seed: int,
    on_work: WorkFn | None = None,
) -> FewShotReport:
    """The few-shot protocol (see the module docstring); `split(name)` loads the train or test images."""
    shots = fewshot.SHOTS if shots is None else shots
    episodes = fewshot.EPISODES if episodes is None else episodes
    if not shots or any(k < 1 or k > 100 for k in shots):
        raise UsageError("--shots takes numbers of examples per class from 1 to 100, e.g. 1,5")
    if not 1 <= episodes <= 100_000:
        raise UsageError("--episodes must be between 1 and 100,000")
    if map_path is not None:
        plots.check_writable(map_path)  # matplotlib there, the path writable: before the work, not after it
    test, train = split("test"), split("train")
    try:
        fewshot.check_episodes(test.labels, max(shots))
    except DataError as e:
        raise UsageError(str(e)) from None
    t0 = time.perf_counter()
    seen = seen_classes(run)
    unseen = [c for c in range(10) if c not in seen]
    with phase(on_work, "embedding the test images"):
        emb = dataset_features(model, test).cpu()
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
    train_emb = dataset_features(model, train, on_images=embedding.add)
    embedding.finish()
    searched = Counter(on_work, "nearest neighbour: searching", len(test))
    nn_accuracy = nearest_neighbour_accuracy(emb.to(train_emb.device), test.labels, train, train_emb, searched.add)
    searched.finish()
    written = None
    if map_path is not None:
        title = f"{run.name} ({run.model}): test embeddings" + (
            f"; labels seen in training: {','.join(map(str, seen))}" if seen and unseen else ""
        )
        written = str(plots.embedding_map(_map_panels(emb, labels, on_work), seen, map_path, title))
    return FewShotReport(run, scores, per_class, seen, unseen, nn_accuracy, time.perf_counter() - t0, dev, written)


def _map_panels(emb: torch.Tensor, labels: torch.Tensor, on_work: WorkFn | None) -> list[plots.MapPanel]:
    """The two views `--map` draws: t-SNE of a seeded sample (the groups) and PCA of every test image (a faithful
    linear view, where groups may lie over each other)."""
    sample = maps.sample(len(emb))
    with phase(on_work, f"map: t-SNE of {len(sample):,} test images"):
        grouped = maps.tsne(emb[sample])
    flat, ratio = maps.pca(emb)
    return [
        plots.MapPanel(
            grouped.numpy(),
            labels[sample].numpy(),
            f"t-SNE, {len(sample):,} test images (seeded sample): neighbours kept near, distances not to scale",
            "t-SNE 1",
            "t-SNE 2",
        ),
        plots.MapPanel(
            flat.numpy(),
            labels.numpy(),
            f"PCA, all {len(emb):,} test images",
            f"principal component 1 ({100 * float(ratio[0]):.0f}% of variance)",
            f"principal component 2 ({100 * float(ratio[1]):.0f}% of variance)",
        ),
    ]
