"""One process with every thread against N data-parallel processes (`mnist train --nproc N`), the threads shared out.

    python benchmarks/distributed.py --data-dir ../shared/data/mnist [--model cnn] [--epochs 2] [--nproc 2]
        [--threads 2] [--repeats 3] [--device cpu] [--nproc-device cuda|cpu]

Trains the same run (`mnist train MODEL --epochs E --seed 0`) as one process with THREADS threads and as
`--nproc N` with THREADS/N threads each (OMP_NUM_THREADS), alternately, R times each, in one temporary
MNISTCLI_HOME, beside `python -c "import torch"` (the reference every time here is a ratio to). Prints the
median whole-process time, the training time the run reports, and the test accuracy of each, and the ratio.
The two train on the same batches in the same order with the same augmentation (engine/dist.py), so their
accuracy differs only as batch norm's per-process statistics and floating-point sums make it.
`--nproc-device` puts the N processes on another device than the one process: on a machine with one GPU,
`--device cuda --nproc-device cpu` sets the GPU against N processes on its CPU cores (N processes cannot share
one GPU: NCCL takes one GPU per process, and `mnist train --nproc` refuses more processes than GPUs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, dict]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return seconds, json.loads(out.stdout.splitlines()[-1]) if out.stdout.strip() else {}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--model", default="cnn")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="CPU threads in all, for either way")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--nproc-device", default=None, help="device of the N processes (default: --device)")
    a = p.parse_args()
    home = tempfile.mkdtemp(prefix="distributed-bench-")
    base = [sys.executable, "-m", "mnistcli", "train", a.model, "--epochs", str(a.epochs), "--seed", "0"]
    base += ["--data-dir", a.data_dir, "--json"]
    many = a.nproc_device or a.device
    ways = {
        f"1 process x {a.threads} threads, --device {a.device}": (["--device", a.device], a.threads),
        f"{a.nproc} processes x {max(1, a.threads // a.nproc)} thread(s), --device {many}": (
            ["--device", many, "--nproc", str(a.nproc)],
            max(1, a.threads // a.nproc),
        ),
    }
    results: dict[str, list[tuple[float, float, float]]] = {way: [] for way in ways}
    torch_times = []
    for r in range(a.repeats):
        torch_times.append(run([sys.executable, "-c", "import torch"], dict(os.environ))[0])
        for way, (extra, threads) in ways.items():
            env = {**os.environ, "MNISTCLI_HOME": home, "OMP_NUM_THREADS": str(threads)}
            seconds, report = run([*base, *extra, "--name", f"r{r}-{len(extra)}"], env)
            results[way].append((seconds, float(report["seconds"]), float(report["test_accuracy"])))
            print(
                f"repeat {r + 1}, {way}: {seconds:.1f} s whole process, {report['seconds']:.1f} s training, "
                f"test accuracy {100 * report['test_accuracy']:.2f}%",
                flush=True,
            )
    torch_s = statistics.median(torch_times)
    print(f'\n`python -c "import torch"`: median {torch_s:.2f} s')
    print("\n| how | median whole process | median training | test accuracy |\n| --- | ---: | ---: | ---: |")
    medians = {}
    for way, rows in results.items():
        whole, training = statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)
        medians[way] = whole
        accuracies = ", ".join(sorted({f"{100 * r[2]:.2f}%" for r in rows}))
        print(f"| {way} | {whole:.1f} s ({whole / torch_s:.1f}x import torch) | {training:.1f} s | {accuracies} |")
    one, several = medians.values()
    print(f"\n{a.nproc} processes take {several / one:.2f}x the time of one (median of {a.repeats}, whole process)")


if __name__ == "__main__":
    main()
