"""What each ingredient of one-shot on never-labelled digits buys: the ablation table of docs/models.md.

    python benchmarks/selflabel.py --data-dir ../shared/data/mnist [--variants all,ssl-triplet,...] [--keep]
        [--use all=RUN]

Every variant is `mnist train siamese --classes 0,1,2 --per-class 100` (labels of 300 images of 0, 1, 2, never
another digit's) with the recipe's 10 epochs, seed 0, and some ingredients switched off. An epoch is one pass
over the 60,000 training images (312 steps) wherever unlabelled images are used; the triplet loss alone has
only the 300 labelled ones, so its epoch is one step of 192 of them: 10 steps in all, as the option has
always trained:

  self-supervision (NT-Xent on unlabelled images)   --ssl-weight 0 turns it off
  the triplet loss on the three labelled digits      --triplet-weight 0
  clustering + self-labelling (SCAN, from epoch 6)   --clusters 0

For each trained run it prints `mnist eval`'s 10-way and unseen 7-way 1-shot accuracy on the test episodes
(1,000 each, seed 0), and, as a read-out of a clustering objective alone (no self-labelling), the same episodes
on the class probabilities of a SCAN head fitted on the run's embedding of the 60,000 training images (labels
unread; seed 0). "Groups" is how well those SCAN groups of the training images match the digits (each group's
most common digit: this reads the labels, for measuring only), and so is "nearest neighbour shows its digit"
(each training image's nearest other training image on the run's embedding). Time is the whole `mnist train`
process.
Runs go to a temporary MNISTCLI_HOME unless --keep (then to MNISTCLI_HOME as the CLI uses it, and a run
`abl-NAME` found there is measured, not trained again); `--use NAME=RUN` measures the run RUN of MNISTCLI_HOME
for that variant (trained by the same command beforehand, such as `mnist train siamese --classes 0,1,2
--per-class 100 --seed 0` for `all`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

from mnistcli import store
from mnistcli.data import mnist
from mnistcli.data.tensors import TensorData
from mnistcli.errors import MnistError
from mnistcli.protocols import clustering, fewshot
from mnistcli.protocols.inference import dataset_features

BASE = ["siamese", "--classes", "0,1,2", "--per-class", "100", "--seed", "0"]
VARIANTS = {  # name: (self-supervision, triplet, clustering + self-labelling, options)
    "triplet": (False, True, False, ["--ssl-weight", "0", "--clusters", "0"]),
    "ssl": (True, False, False, ["--triplet-weight", "0", "--clusters", "0"]),
    "ssl-triplet": (True, True, False, ["--clusters", "0"]),
    "triplet-selflabel": (False, True, True, ["--ssl-weight", "0"]),
    "ssl-selflabel": (True, False, True, ["--triplet-weight", "0"]),
    "all": (True, True, True, []),
}


def split(name: str, folder: str) -> TensorData:
    s = mnist.load_split(name, mnist.resolve_dir(folder))
    return TensorData.from_numpy(s.images, s.labels, torch.device("cpu"))


def mnist_cli(*args: str, env: dict[str, str]) -> dict:
    done = subprocess.run([sys.executable, "-m", "mnistcli", *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"mnist {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)


def scan_readout(ref: str, train: TensorData, test: TensorData) -> tuple[float, float, float, float]:
    """(10-way, unseen 7-way 1-shot accuracy on SCAN class probabilities, purity of the training groups, share of
    training images whose nearest other training image shows the same digit)."""
    model = store.load(store.resolve(ref)).eval()
    e_train, e_test = dataset_features(model, train), dataset_features(model, test)
    nearest = clustering.neighbours(e_train, 1)[:, 0]
    neighbour = float((train.labels[nearest] == train.labels).float().mean())
    grouping = clustering.cluster(e_train, 10, torch.Generator().manual_seed(0))  # as a self-labelling epoch does
    p_test = grouping.probabilities_of(e_test)
    purity = clustering.cluster_accuracy(grouping.groups, train.labels)
    ten = fewshot.run_episodes(p_test, test.labels, list(range(10)), 10, 1).accuracy
    seven = fewshot.run_episodes(p_test, test.labels, list(range(3, 10)), 7, 1).accuracy
    return ten, seven, purity, neighbour


def _trained(run: str) -> bool:
    try:
        return (store.run_folder(run) / store.META).is_file()
    except MnistError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--keep", action="store_true", help="train into MNISTCLI_HOME, and reuse runs found there")
    parser.add_argument("--use", action="append", default=[], metavar="VARIANT=RUN", help="measure RUN for VARIANT")
    args = parser.parse_args()
    bad = [pair for pair in args.use if "=" not in pair or pair.split("=", 1)[0] not in VARIANTS]
    if bad:
        raise SystemExit(f"--use takes VARIANT=RUN with VARIANT one of {', '.join(VARIANTS)}: not {', '.join(bad)}")
    if args.use and not args.keep:
        raise SystemExit("--use measures runs of MNISTCLI_HOME: give --keep too (the other variants train there)")
    given = dict(pair.split("=", 1) for pair in args.use)
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    home = os.environ.get("MNISTCLI_HOME") if args.keep else tempfile.mkdtemp(prefix="selflabel-")
    env = {**os.environ, **({"MNISTCLI_HOME": home} if home else {})}
    if home:
        os.environ["MNISTCLI_HOME"] = home
    data = ["--data-dir", args.data_dir] if args.data_dir else []
    train, test = split("train", args.data_dir), split("test", args.data_dir)
    print(
        "| variant | NT-Xent | triplet (0, 1, 2) | SCAN + self-labels | 10-way 1-shot | unseen 7-way 1-shot "
        "| SCAN read-out: 10-way | unseen 7-way | groups match digits | nearest neighbour shows its digit "
        "| whole `mnist train` |"
    )
    print("| --- | :-: | :-: | :-: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in names:
        ssl, triplet, selflabel, options = VARIANTS[name]
        run = given.get(name, f"abl-{name}")
        seconds = float("nan")
        if name not in given and not (args.keep and _trained(run)):
            start = time.perf_counter()
            mnist_cli("train", *BASE, *options, "--name", run, "--json", *data, env=env)
            seconds = time.perf_counter() - start
        report = mnist_cli("eval", run, "--shots", "1", "--json", *data, env=env)
        by_name = {e["name"]: e["accuracy"] for e in report["episodes"]}
        ten, seven, purity, neighbour = scan_readout(run, train, test)
        mark = {True: "yes", False: "-"}
        print(
            f"| {name} | {mark[ssl]} | {mark[triplet]} | {mark[selflabel]} | {100 * by_name['10-way 1-shot']:.2f}% "
            f"| {100 * by_name['7-way 1-shot (unseen)']:.2f}% | {100 * ten:.2f}% | {100 * seven:.2f}% "
            f"| {100 * purity:.2f}% | {100 * neighbour:.2f}% | {'-' if seconds != seconds else f'{seconds:.0f} s'} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
