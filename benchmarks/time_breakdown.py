"""Where the time of `mnist train MODEL --target-accuracy T` goes, whole process, phase by phase.

    python benchmarks/time_breakdown.py --data-dir ../shared/data/mnist [--model cnn-fast] [--target 0.99]
        [--seeds 0,1,2,3,4] [--threads 2] [--extra "--device cuda"]

Each seed runs in a process of its own, as a user's command does, with the command's own code wrapped
by wall-clock timers (no profiler, whose overhead would move the Python-heavy parts): importing mnistcli
and torch, setting the run up (the data read and put in tensors, the model built), the training steps, the
accuracy checks of `--target-accuracy`, the resume snapshots, the final test, calibration, saving the
weights and meta.json, writing the run's model.onnx (api/onnxcache.py), and the rest (Python's start, the
report). Beside them, in the same run, `python -c "import torch"`, the reference every figure is divided
by. Prints one table: the median of each phase over the seeds, and each seed's time to the target.
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

CHILD = r"""
import atexit, json, sys, time
t0 = time.perf_counter()
timings = {}

def timed(owner, name, key):
    inner = getattr(owner, name)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            timings[key] = timings.get(key, 0.0) + time.perf_counter() - start
    setattr(owner, name, wrapper)

import torch
from mnistcli.cli import main
from mnistcli.api import calibrating, onnxcache, training
from mnistcli.engine import callbacks, loop
from mnistcli.store import weights
timings["import mnistcli and torch"] = time.perf_counter() - t0
timed(training, "_setup", "set-up (data, model)")
timed(loop.Loop, "run", "training (with checks and snapshots)")
timed(callbacks.TargetWatch, "on_step_end", "target checks")
timed(callbacks.Snapshot, "on_epoch_end", "snapshots")
timed(callbacks.Snapshot, "on_fit_start", "snapshots")
timed(training, "_test", "final test")
timed(calibrating, "fit", "calibration")
timed(weights, "save", "save (weights, meta.json)")
timed(onnxcache, "write", "model.onnx")
sys.argv = ["mnist", *json.loads(sys.argv[1])]


@atexit.register  # the command ends through os._exit (mnistcli/exiting.py), after the exit handlers
def report():
    timings["process (from Python's start)"] = time.perf_counter() - t0
    print("TIMINGS " + json.dumps(timings), file=sys.stderr, flush=True)


main()
"""


def run(command: list[str], env: dict[str, str]) -> tuple[float, str, str]:
    t0 = time.perf_counter()
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} ... failed:\n{out.stderr[-2000:]}")
    return time.perf_counter() - t0, out.stdout, out.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("MNIST_DATA_DIR"))
    parser.add_argument("--model", default="cnn-fast")
    parser.add_argument("--target", type=float, default=0.99)
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--extra", default="", help="more options of mnist train, e.g. '--device cuda'")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env.update(MNISTCLI_HOME=home, OMP_NUM_THREADS=str(args.threads))
        if args.data_dir:
            env["MNIST_DATA_DIR"] = args.data_dir
        run([sys.executable, "-c", "import torch"], env)  # bytecode written, files read once
        rows: list[dict[str, float]] = []
        torch_import: list[float] = []
        for seed in args.seeds.split(","):
            torch_import.append(run([sys.executable, "-c", "import torch"], env)[0])
            options = ["train", args.model, "--target-accuracy", str(args.target), "--seed", seed, "--json"]
            options += args.extra.split()
            wall, stdout, stderr = run([sys.executable, "-c", CHILD, json.dumps(options)], env)
            timings = json.loads(stderr.rsplit("TIMINGS ", 1)[1])
            report = json.loads(stdout.splitlines()[-1])
            timings["whole process"] = wall
            timings["reached"] = float(bool((report.get("target") or {}).get("reached")))
            timings["test accuracy"] = report["test_accuracy"]
            timings["epochs"] = (report.get("target") or {}).get("epochs") or float("nan")
            rows.append(timings)
    reference = statistics.median(torch_import)
    inner = ("target checks", "snapshots")
    training = "training (with checks and snapshots)"
    before = ["import mnistcli and torch", "set-up (data, model)"]
    after = ["final test", "calibration", "save (weights, meta.json)", "model.onnx", "process (from Python's start)"]

    def median(key: str) -> float:
        return statistics.median(r.get(key, 0.0) for r in rows)

    steps = median("training (with checks and snapshots)") - sum(median(k) for k in inner)
    extra = f" {args.extra}" if args.extra else ""
    print(
        f"`mnist train {args.model} --target-accuracy {args.target}{extra}`, seeds {args.seeds}, {args.threads} threads:"
    )
    print(f"{sum(r['reached'] for r in rows):.0f}/{len(rows)} reached the target; median of each phase")
    print()
    print("| phase | seconds | / import torch |")
    print("| --- | ---: | ---: |")
    for key in [*before, training]:
        print(f"| {key} | {median(key):.2f} | {median(key) / reference:.2f} |")
    for key in inner:
        print(f"| of which {key} | {median(key):.2f} | {median(key) / reference:.2f} |")
    print(f"| of which the steps themselves | {steps:.2f} | {steps / reference:.2f} |")
    for key in after:
        print(f"| {key} | {median(key):.2f} | {median(key) / reference:.2f} |")
    print(f"| **whole process** | **{median('whole process'):.2f}** | **{median('whole process') / reference:.2f}** |")
    print(f"| `python -c 'import torch'` (reference) | {reference:.2f} | 1.00 |")
    print()
    for seed, r in zip(args.seeds.split(","), rows, strict=True):
        print(
            f"seed {seed}: {r['whole process']:.2f} s whole process, test accuracy {100 * r['test accuracy']:.2f}%"
            f" after {r['epochs']:.3f} epochs"
        )


if __name__ == "__main__":
    main()
