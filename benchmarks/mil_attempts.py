"""How `--attempts` was chosen: several starts on each draw of 50 training bags, on validation bags only.

    python benchmarks/mil_attempts.py --draws 16-29 --starts 100,101,102 [--jobs 2] [--extra "--encoder RUN"]

For each draw D and start S it runs `benchmarks/mil_recipe.py --bag-seed D --seed S` with the recipe
(50 bags, 15 epochs, augmentation, remix 3, Adam 2.5e-4, cosine): the same training bags, another
start and order. Training bags come from training images 0-49,999, the 500 validation bags from
50,000-59,999; the test set is never touched. Per draw it prints each start's validation AUC and
last-epoch training loss, then what three ways of using the starts give: the attempt with the lowest
training loss in its last epoch (what `--attempts` keeps), the same judged after 8 of 15 epochs, the
mean probability of all starts (an ensemble), and (with `--fit T`) the mean probability of the starts
whose last-epoch loss is below T, or the kept one if none is (what `--keep mean` keeps). The last line
averages each over the draws.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from mnistcli.data.bags import make_bags
from mnistcli.data.mnist import load_split
from mnistcli.protocols.ranking import roc_auc

RECIPE = ["--bags", "50", "--epochs", "15", "--aug", "1", "--remix", "3", "--lr", "2.5e-4", "--cosine"]


def numbers(text: str) -> list[int]:
    """`16-29` or `1,3,5` -> the integers."""
    if "-" in text:
        first, last = map(int, text.split("-"))
        return list(range(first, last + 1))
    return [int(x) for x in text.split(",")]


def rank(loss: float) -> float:
    """A loss to compare by, as BestAttempt does: one that is not a number (a diverged start) counts as the highest."""
    return loss if math.isfinite(loss) else math.inf


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="../shared/data/mnist")
    p.add_argument("--draws", default="16-29", help="bag seeds: the draws of training bags")
    p.add_argument("--starts", default="100,101,102", help="seeds of the starts on each draw")
    p.add_argument("--jobs", type=int, default=2, help="trainings at a time (one thread each)")
    p.add_argument("--extra", default="", help="more mil_recipe.py options, e.g. '--encoder RUN_FOLDER'")
    p.add_argument("--fit", type=float, help="also the mean of the starts whose last loss is below this")
    a = p.parse_args()
    draws, starts = numbers(a.draws), numbers(a.starts)
    folder = Path(tempfile.mkdtemp(prefix="mil-attempts-"))
    script = Path(__file__).with_name("mil_recipe.py")

    def train(draw: int, start: int) -> dict:
        scores = folder / f"{draw}-{start}.npy"
        cmd = [sys.executable, str(script), "--data-dir", a.data_dir, *RECIPE, *a.extra.split()]
        cmd += ["--bag-seed", str(draw), "--seed", str(start), "--save-scores", str(scores)]
        out = subprocess.run(
            cmd, capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}
        )
        result = json.loads(out.stdout.splitlines()[-1])
        return {"auc": result["val_auc"][-1][1], "loss": result["train_loss"], "scores": np.load(scores)}

    with ThreadPoolExecutor(a.jobs) as pool:
        runs = {(d, s): pool.submit(train, d, s) for d in draws for s in starts}
    train_labels = torch.from_numpy(load_split("train", Path(a.data_dir)).labels.copy()).long()
    held = torch.arange(50000, 60000)
    labels = make_bags(train_labels[held], 500, 9, 10.0, 2.0, torch.Generator().manual_seed(1))[1].numpy()

    def mean_auc(chosen: list[dict]) -> float:
        return roc_auc(np.mean([1 / (1 + np.exp(-r["scores"])) for r in chosen], axis=0), labels) or 0.0

    rows = []
    fitted_head = f" | mean of those below {a.fit:g}" if a.fit is not None else ""
    print(
        "| draw | "
        + " | ".join(f"start {s}: AUC (loss)" for s in starts)
        + f" | kept | kept at epoch 8 | ensemble{fitted_head} |"
    )
    print("|---" * (len(starts) + 4 + (a.fit is not None)) + "|")
    for d in draws:
        each = [runs[(d, s)].result() for s in starts]
        kept = min(each, key=lambda r: rank(r["loss"][-1]))  # the first on a tie, as BestAttempt
        early = min(each, key=lambda r: rank(r["loss"][7]))
        ensemble = mean_auc(each)
        row = [np.mean([r["auc"] for r in each]), kept["auc"], early["auc"], ensemble]
        cells = " | ".join(f"{r['auc']:.3f} ({r['loss'][-1]:.3f})" for r in each)
        line = f"| {d} | {cells} | {kept['auc']:.3f} | {early['auc']:.3f} | {ensemble:.3f}"
        if a.fit is not None:
            fitted = [r for r in each if r["loss"][-1] < a.fit] or [kept]
            row.append(mean_auc(fitted))
            line += f" | {row[-1]:.3f} ({len(fitted)})"
        rows.append(row)
        print(line + " |")
    means = np.mean(rows, axis=0)
    print(
        f"\nmean over {len(draws)} draws: one start {means[0]:.4f}, kept by last-epoch loss {means[1]:.4f}, "
        f"kept by epoch-8 loss {means[2]:.4f}, ensemble of {len(starts)} {means[3]:.4f}"
        + (f", mean of the starts below {a.fit:g} {means[4]:.4f}" if a.fit is not None else "")
    )


if __name__ == "__main__":
    main()
