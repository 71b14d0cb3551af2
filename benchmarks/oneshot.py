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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--calibration", nargs="*", default=[], metavar="RUN")
    parser.add_argument("--layers", default=None, metavar="SIMCLR_RUN")
    args = parser.parse_args()
    split = mnist.load_split("test", mnist.resolve_dir(args.data_dir))
    test = TensorData.from_numpy(split.images, split.labels, torch.device("cpu"))
    if args.calibration:
        calibration(args.calibration, test)
    if args.layers:
        layers(args.layers, test)


if __name__ == "__main__":
    main()
