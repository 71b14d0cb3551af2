"""This checkout beside another commit of mnistcli, in one run on one machine: is anything slower?

    python benchmarks/commits.py --against de3787e --data-dir ../shared/data/mnist [--repeats 5] [--out r.json]
        [--only cnn-fast] [--seeds 0,1,2,3,4]

The other commit is checked out into a temporary git worktree and run from its own source
(`PYTHONPATH`), with the same Python, torch and data. Each command is a whole process as a user
runs it, timed from here; the two sides alternate, repeat by repeat, so a noisy neighbour slows
both alike. Prints a markdown table of medians with the ratio (other / this: above 1 means this
checkout is faster), and writes the raw times to --out. `--only` keeps the commands whose name holds it;
`--seeds` gives the training commands a seed, the next one each repeat (both sides the same), so ten repeats
over five seeds run each seed twice a side.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def commands(data: str, image: str) -> dict[str, list[str]]:
    """What is timed: start-up, prediction with the bundled model, evaluation, and training to 99%."""
    mnist = [sys.executable, "-m", "mnistcli"]
    return {
        "`mnist --help`": [*mnist, "--help"],
        "`mnist predict one.png`": [*mnist, "predict", image],
        "`mnist eval -c cnn-pretrained`": [*mnist, "eval", "-c", "cnn-pretrained", "--data-dir", data],
        "`mnist train linear --epochs 1`": [*mnist, "train", "linear", "--epochs", "1", "--data-dir", data],
        "`mnist train cnn-fast --target-accuracy 0.99`": [
            *mnist,
            "train",
            "cnn-fast",
            "--target-accuracy",
            "0.99",
            "--data-dir",
            data,
        ],
    }


def timed(cmd: list[str], src: Path, home: Path, threads: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(src), "MNISTCLI_HOME": str(home), "OMP_NUM_THREADS": str(threads)}
    env.pop("MNIST_DATA_DIR", None)
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed under {src}:\n{done.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", required=True, help="the other commit (any git revision)")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--only", default="", help="time only the commands whose name holds this")
    parser.add_argument("--seeds", default="", help="seeds the training commands take in turn, e.g. 0,1,2,3,4")
    args = parser.parse_args()
    seeds = args.seeds.split(",") if args.seeds else []
    work = Path(tempfile.mkdtemp(prefix="mnist-commits-"))
    other = work / "other"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(other), args.against], check=True)
    try:
        from PIL import Image

        sys.path.insert(0, str(ROOT))
        from tests.helpers import make_digits

        image = str(work / "one.png")
        Image.fromarray(make_digits(1, seed=0)[0][0]).save(image)
        sides = {"this": ROOT / "src", args.against: other / "src"}
        times: dict[str, dict[str, list[float]]] = {}
        for label, cmd in commands(str(Path(args.data_dir).resolve()), image).items():
            if args.only not in label:
                continue
            times[label] = {side: [] for side in sides}
            for r in range(args.repeats):
                seeded = [*cmd, "--seed", seeds[r % len(seeds)]] if seeds and "train" in cmd else cmd
                for side, src in sides.items():
                    home = work / f"home-{side}"
                    shutil.rmtree(home, ignore_errors=True)
                    times[label][side].append(timed(seeded, src, home, args.threads))
        over = f", seeds {args.seeds} in turn" if seeds else ""
        print(f"\n{args.repeats} repeats{over}, medians, OMP_NUM_THREADS={args.threads}\n")
        print(f"| command | this checkout | {args.against} | ratio ({args.against} / this) |")
        print("| --- | --- | --- | --- |")
        for label, by_side in times.items():
            mine, theirs = statistics.median(by_side["this"]), statistics.median(by_side[args.against])
            print(f"| {label} | {mine:.2f} s | {theirs:.2f} s | {theirs / mine:.2f}x |")
        if args.out:
            args.out.write_text(json.dumps(times, indent=2))
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(other)], check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
