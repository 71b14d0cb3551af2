"""Members one after another (one process, every thread) against members at once (`--jobs N`, threads shared out).

    python benchmarks/ensemble_jobs.py --data-dir ../shared/data/mnist [--members 2] [--epochs 2] [--jobs 2]
        [--repeats 3] [--arch MODEL]

Trains the same small ensemble (`mnist train ensemble --members M --epochs E [--arch MODEL]`, same seeds) with
`--jobs 1` and `--jobs N`, alternately, R times each, in one temporary MNISTCLI_HOME, and prints the
median whole-process time of each and their ratio. Both give the same members (the seeds are the
same; only the CPU threads per member differ), so the table also checks that their accuracy agrees.
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


def run(jobs: int, a: argparse.Namespace, env: dict[str, str], name: str) -> tuple[float, float]:
    cmd = [
        sys.executable,
        "-m",
        "mnistcli",
        "train",
        "ensemble",
        "--members",
        str(a.members),
        "--epochs",
        str(a.epochs),
        "--jobs",
        str(jobs),
        *(["--arch", a.arch] if a.arch else []),
        "--data-dir",
        a.data_dir,
        "--name",
        name,
        "--json",
    ]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return seconds, float(json.loads(out.stdout.splitlines()[-1])["test_accuracy"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--members", type=int, default=2)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--arch", help="the members' model (default: the default ensemble's)")
    a = p.parse_args()
    env = {**os.environ, "MNISTCLI_HOME": tempfile.mkdtemp(prefix="ensemble-jobs-")}
    times: dict[int, list[float]] = {1: [], a.jobs: []}
    accuracy: dict[int, set[float]] = {1: set(), a.jobs: set()}
    for r in range(a.repeats):
        for jobs in (1, a.jobs):
            seconds, acc = run(jobs, a, env, f"jobs{jobs}-{r}")
            times[jobs].append(seconds)
            accuracy[jobs].add(acc)
            print(
                f"repeat {r + 1}, --jobs {jobs}: {seconds:.1f} s, ensemble test accuracy {100 * acc:.2f}%", flush=True
            )
    one, many = statistics.median(times[1]), statistics.median(times[a.jobs])
    print("\n| how | median whole process | test accuracy |\n| --- | ---: | ---: |")
    print(
        f"| `--jobs 1` ({a.members} members one after another, all threads) | {one:.1f} s | "
        f"{', '.join(f'{100 * x:.2f}%' for x in sorted(accuracy[1]))} |"
    )
    print(
        f"| `--jobs {a.jobs}` (threads shared out) | {many:.1f} s | "
        f"{', '.join(f'{100 * x:.2f}%' for x in sorted(accuracy[a.jobs]))} |"
    )
    print(f"\n--jobs {a.jobs} takes {many / one:.2f}x the time of --jobs 1 (median of {a.repeats})")


if __name__ == "__main__":
    main()
