"""One-shot measurements behind docs/models.md that `mnist eval` does not print.

    python benchmarks/oneshot.py --data-dir ../shared/data/mnist --calibration RUN... [--layers SIMCLR_RUN]

--calibration: for each checkpoint, on the same 10-way 1-shot test episodes `mnist eval` draws
(1,000 episodes, 15 queries per class, seed 0; also the 7-way episodes of digits 3-9), the
accuracy and the mean confidence `mnist oneshot` would give: with the checkpoint's stored scale
(or the default when it has none), with the default, and with the scale that would be best on
these very episodes (for reference only: it looks at test labels).

--layers: for a SimCLR checkpoint, 10-way 1-shot accuracy from its encoder features, from the
hidden layer of its projection head, from the head's output, and from raw pixels: the
measurement that placed `siamese`'s embedding.

--train-table: the seed project's protocol. Every image of the 60,000-image training set is classified by its
nearest prototype, with one support image per digit drawn at random from the training images of that digit
(draw d uses seed d; the ten supports are among the images classified). Prints, per digit, the images, the
correct ones (mean over the draws) and the accuracy (mean, and lowest to highest over the draws), beside raw
pixels through the same supports.

Prints markdown tables. Runs use MNISTCLI_HOME as the CLI does.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from mnistcli import store
from mnistcli.data import mnist
from mnistcli.data.tensors import TensorData
from mnistcli.protocols import fewshot
from mnistcli.protocols.inference import EVAL_BATCH


def features(fn: nn.Module | object, data: TensorData) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([fn(x) for x, _ in data.batches(EVAL_BATCH)])  # type: ignore[operator]


def calibration(refs: list[str], test: TensorData) -> None:
    print(
        "| checkpoint | episodes | accuracy | scale | mean confidence | default scale | its mean confidence | best scale on these episodes |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for ref in refs:
        run = store.resolve(ref)
        model = store.load(run).eval()
        emb = features(model.features, test)  # type: ignore[arg-type]
        stored = run.info.oneshot_scale is not None
        scale = run.info.oneshot_scale or fewshot.DEFAULT_SCALE
        for classes in (list(range(10)), list(range(3, 10))):
            d, truth, _ = fewshot.episode_distances(
                emb, test.labels, classes, len(classes), 1, fewshot.EPISODES, fewshot.QUERIES
            )
            accuracy = float((d.argmin(dim=2) == truth).float().mean())

            def mean_confidence(s: float, d: torch.Tensor = d) -> float:
                return float(fewshot.confidences(d, s).amax(dim=2).mean())

            print(
                f"| {run.name} | {len(classes)}-way 1-shot | {100 * accuracy:.2f}% | {scale:.1f}"
                f"{'' if stored else ' (default)'} | {100 * mean_confidence(scale):.2f}% | {fewshot.DEFAULT_SCALE:g} "
                f"| {100 * mean_confidence(fewshot.DEFAULT_SCALE):.2f}% | {fewshot.best_scale(d, truth):.1f} |"
            )


def layers(ref: str, test: TensorData) -> None:
    run = store.resolve(ref, {"contrastive"})
    model = store.load(run).eval()
    candidates = {
        "encoder features (576)": model.features,
        "projection head, hidden layer after BN and ReLU": lambda x: model.projector[:3](model.features(x)),
        "projection head output": model,
        "raw pixels": lambda x: x.flatten(1),
    }
    print(f"\n| {run.name}: embedding taken from | 10-way 1-shot |")
    print("| --- | ---: |")
    for name, fn in candidates.items():
        score = fewshot.run_episodes(features(fn, test), test.labels, list(range(10)), 10, 1)
        print(f"| {name} | {100 * score.accuracy:.2f}% ± {100 * score.ci95:.2f} |")


def train_table(ref: str, train: TensorData, draws: int) -> None:
    run = store.resolve(ref)
    model = store.load(run).eval()
    embeddings = {run.name: features(model.features, train), "raw pixels": train.images.flatten(1).float()}
    per_digit = [torch.nonzero(train.labels == d).flatten() for d in range(10)]
    totals = torch.bincount(train.labels, minlength=10)
    hits: dict[str, torch.Tensor] = {}  # (draws, 10) correct per digit
    supports: list[list[int]] = []  # each draw's support image of each digit (indices into the training set)
    for name, emb in embeddings.items():
        rows = []
        for draw in range(draws):
            gen = torch.Generator().manual_seed(draw)
            support = torch.stack([pool[torch.randint(len(pool), (1,), generator=gen)][0] for pool in per_digit])
            if name == run.name:
                supports.append(support.tolist())
            protos = fewshot.prototypes(emb[support], torch.arange(10), 10)
            predicted = fewshot.distances(emb, protos).argmin(dim=1)
            rows.append(torch.bincount(train.labels[predicted == train.labels], minlength=10))
        hits[name] = torch.stack(rows).float()
    ours, pixels = hits[run.name], hits["raw pixels"]
    print(f"\n| digit | images | {run.name}: correct (mean of {draws}) | accuracy (lowest-highest) | raw pixels |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for d in range(10):
        acc = ours[:, d] / totals[d]
        print(
            f"| {d} | {int(totals[d])} | {float(ours[:, d].mean()):.0f} | {100 * float(acc.mean()):.2f}% "
            f"({100 * float(acc.min()):.2f}-{100 * float(acc.max()):.2f}) "
            f"| {100 * float(pixels[:, d].mean() / totals[d]):.2f}% |"
        )
    overall, base = ours.sum(dim=1) / len(train), pixels.sum(dim=1) / len(train)
    print(
        f"| all | {len(train)} | {float(ours.sum(dim=1).mean()):.0f} | **{100 * float(overall.mean()):.2f}%** "
        f"± {100 * float(overall.std()):.2f} ({100 * float(overall.min()):.2f}-{100 * float(overall.max()):.2f}; "
        f"median {100 * float(overall.median()):.2f}) | {100 * float(base.mean()):.2f}% |"
    )
    print("\neach draw: " + ", ".join(f"{d} {100 * float(a):.2f}%" for d, a in enumerate(overall)))
    worst = int(overall.argmin())
    print(
        f"\nlowest draw: seed {worst}, {100 * float(overall[worst]):.2f}%; per digit there: "
        + ", ".join(f"{d} {100 * float(ours[worst, d] / totals[d]):.1f}%" for d in range(10))
        + f"; its support images (training-set indices, digits 0-9): {supports[worst]}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--calibration", nargs="*", default=[], metavar="RUN")
    parser.add_argument("--layers", default=None, metavar="SIMCLR_RUN")
    parser.add_argument("--train-table", default=None, metavar="RUN")
    parser.add_argument("--draws", type=int, default=5, help="--train-table: support draws (seeds 0..N-1)")
    args = parser.parse_args()
    split = mnist.load_split("test", mnist.resolve_dir(args.data_dir))
    test = TensorData.from_numpy(split.images, split.labels, torch.device("cpu"))
    if args.train_table:
        whole = mnist.load_split("train", mnist.resolve_dir(args.data_dir))
        train_table(
            args.train_table, TensorData.from_numpy(whole.images, whole.labels, torch.device("cpu")), args.draws
        )
    if args.calibration:
        calibration(args.calibration, test)
    if args.layers:
        layers(args.layers, test)


if __name__ == "__main__":
    main()
