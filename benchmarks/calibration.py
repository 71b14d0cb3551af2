"""Calibration measurements behind docs/models.md that `mnist eval` does not print.

    python benchmarks/calibration.py --data-dir ../shared/data/mnist RUN...

For each classifier checkpoint, on the test images `mnist eval` judges it on: accuracy, its
temperature, the expected calibration error (15 bins) with and without it, the mean and median
confidence on the correctly classified digits, and the share of those read as 99% or more; the
same for the T that would be best on the test set itself (for reference only: it looks at test
labels). Prints a markdown table. Runs resolve through MNISTCLI_HOME as the CLI does.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from mnistcli import store
from mnistcli.api.common import load_tensors, trained_digits
from mnistcli.data import mnist
from mnistcli.protocols import calibration
from mnistcli.protocols.inference import evaluate_classifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="checkpoints (run names, paths, model names)")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    folder = mnist.resolve_dir(args.data_dir)
    test = load_tensors("test", folder, torch.device("cpu"))
    print("| checkpoint | accuracy | T | ECE with T | ECE at T = 1 | right: median confidence | mean | >= 99% |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for ref in args.runs:
        run = store.resolve(ref)
        data = trained_digits(run, test)
        result = evaluate_classifier(store.load(run), data)
        labels = data.labels.numpy()
        right = result.predictions == labels
        best = calibration.fit_temperature(result.logits, labels)
        for name, t in ((run.name, run.temperature), (f"{run.name}, T best on test", best)):
            probs = calibration.probabilities(result.logits, t)
            conf = probs.max(axis=1)[right]
            print(
                f"| {name} | {100 * right.mean():.2f}% | {t:.3f} | {100 * calibration.ece(probs, labels):.2f}% "
                f"| {100 * calibration.ece(calibration.probabilities(result.logits), labels):.2f}% "
                f"| {100 * np.median(conf):.2f}% | {100 * conf.mean():.2f}% | {100 * (conf >= 0.99).mean():.1f}% |"
            )


if __name__ == "__main__":
    main()
