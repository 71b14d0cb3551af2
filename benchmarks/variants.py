"""Whole `mnist train` processes of several variants, alternating run by run: which recipe or code is faster?

    python benchmarks/variants.py --data-dir ../shared/data/mnist [--repeats 10] [--seeds 0,1,2,3,4]
        --variant "1/8=" --variant "1/10=--check-every 0.1" --variant "before=@e65e5d1"
        [--train "cnn-fast --target-accuracy 0.99"]

A variant is NAME=OPTIONS (more options of `mnist train`, given after --train's) or NAME=@REV (this command run
from another commit's source, checked out into a temporary git worktree; its first run also compiles its
bytecode). Each repeat runs every variant once, starting with the next one each repeat (so none always goes
first), with the same seed (the seeds in turn, repeat by repeat), each a whole process as a user runs it, beside
`python -c "import torch"`, so a noisy neighbour slows all alike. Prints, per variant, the median whole-process
time, its ratio to the first variant and to `import torch`, the median CPU time (user + system, which the
machine's other tenants move less) and the system's part of it, the median number of page faults (minor: memory
the kernel handed over), the median training time the run reports, and the epochs each run stopped after (with
--target-accuracy).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(command: list[str], env: dict[str, str]) -> tuple[dict[str, float], str]:
    """({wall, cpu, system seconds, faults} of one whole process, its stdout); exits if it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:6])} ... failed:\n{done.stderr[-2000:]}")
    system = after.ru_stime - before.ru_stime
    cost = {"wall": wall, "cpu": after.ru_utime - before.ru_utime + system, "system": system}
    return {**cost, "faults": after.ru_minflt - before.ru_minflt}, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--variant", action="append", required=True, help="NAME=OPTIONS or NAME=@REV")
    parser.add_argument("--train", default="cnn-fast --target-accuracy 0.99", help="what `mnist train` runs")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    seeds = args.seeds.split(",")
    if not all(s.isdigit() for s in seeds):
        parser.error(f"--seeds: whole numbers separated by commas, not {args.seeds!r}")
    names = [spec.partition("=")[0] for spec in args.variant]
    if any("=" not in spec or not name for spec, name in zip(args.variant, names, strict=True)):
        parser.error("--variant: NAME=OPTIONS or NAME=@REV")
    if len(set(names)) < len(names):
        parser.error("--variant: each NAME once")
    work = Path(tempfile.mkdtemp(prefix="mnist-variants-"))
    variants: dict[str, tuple[Path, list[str]]] = {}
    trees: list[Path] = []
    try:
        for spec in args.variant:
            name, _, rest = spec.partition("=")
            if rest.startswith("@"):
                tree = work / f"tree-{len(trees)}"
                subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rest[1:]], check=True)
                trees.append(tree)
                variants[name] = (tree / "src", [])
            else:
                variants[name] = (ROOT / "src", shlex.split(rest))
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "MNIST_DATA_DIR")}
        env.update(OMP_NUM_THREADS=str(args.threads), MNIST_DATA_DIR=str(Path(args.data_dir).resolve()))
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
        torch_import: list[float] = []
        for repeat in range(args.repeats):
            seed = seeds[repeat % len(seeds)]
            torch_import.append(timed([sys.executable, "-c", "import torch"], env)[0]["wall"])
            order = list(variants)
            order = order[repeat % len(order) :] + order[: repeat % len(order)]
            for name in order:
                src, options = variants[name]
                home = work / "home"
                shutil.rmtree(home, ignore_errors=True)
                command = [sys.executable, "-m", "mnistcli", "train", *shlex.split(args.train), *options]
                print(f"repeat {repeat + 1}, seed {seed}, {name} ...", file=sys.stderr, flush=True)
                cost, out = timed(
                    [*command, "--seed", seed, "--json"], {**env, "PYTHONPATH": str(src), "MNISTCLI_HOME": str(home)}
                )
                report = json.loads(out.splitlines()[-1])
                target = report.get("target") or {}
                runs[name].append({**cost, "train": report["seconds"], "epochs": target.get("epochs") or 0})
                print(f"repeat {repeat + 1}, seed {seed}, {name}: {cost['wall']:.2f} s", file=sys.stderr, flush=True)
    finally:
        for tree in trees:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
        shutil.rmtree(work, ignore_errors=True)
    reference = statistics.median(torch_import)
    first = statistics.median(r["wall"] for r in runs[next(iter(runs))])
    print(f"\n`mnist train {args.train}`, {args.repeats} repeats, seeds {args.seeds} in turn, {args.threads} threads\n")
    print(
        "| variant | whole process | / first | / import torch | CPU | of which system | page faults | training"
        " | epochs, run by run |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for name, rows in runs.items():
        wall, cpu, system, faults, train = (
            statistics.median(r[k] for r in rows) for k in ("wall", "cpu", "system", "faults", "train")
        )
        epochs = ", ".join(f"{r['epochs']:.3f}" for r in rows)
        print(
            f"| {name} | {wall:.2f} s | {wall / first:.2f} | {wall / reference:.2f} | {cpu:.2f} s | {system:.2f} s"
            f" | {faults:,.0f} | {train:.2f} s | {epochs} |"
        )
    print(f"| `python -c 'import torch'` | {reference:.2f} s | | 1.00 | | | | | |")


if __name__ == "__main__":
    main()
