"""The MNIST-bags table of docs/models.md: `mnist train MODEL --bags N --runs R` at each size, beside the papers.

    python benchmarks/mil.py --data-dir ../shared/data/mnist [--models mil,mil-gated] [--sizes 50,100,150,200]
        [--runs 5] [--extra "--encoder simclr-default"] [--out mil.json]

Each cell is the mean and standard deviation of the test bag AUC over R runs (seeds 0..R-1), each on
1,000 test bags drawn with its own seed: what `mnist train ... --runs R` prints. The runs go to a
temporary MNISTCLI_HOME unless --keep. The epochs per size are the recipe's (families/bags.py:
`epochs_for`: 15 x sqrt(50 / N), at least 5); nothing here was chosen on the test bags.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from mnistcli.families.bags import epochs_for
from mnistcli.models.mil import RECIPE

# Published mean AUC at 50/100/150/200 training bags (balanced MNIST-bags): Shi et al., AAAI 2020, Table 2.
PUBLISHED = {
    "attention (Ilse et al., re-measured)": {50: 0.914, 100: 0.963, 150: 0.977, 200: 0.984},
    "gated attention (Ilse et al., re-measured)": {50: 0.908, 100: 0.959, 150: 0.973, 200: 0.979},
    "loss-based attention (Shi et al.)": {50: 0.931, 100: 0.969, 150: 0.978, 200: 0.984},
}


def epochs_run(extra: list[str], size: int) -> int:
    """The epochs `mnist train MODEL --bags SIZE EXTRA` trains: --epochs in EXTRA, else the recipe's for SIZE bags."""
    for i, option in enumerate(extra):
        if option == "--epochs" and i + 1 < len(extra):
            return int(extra[i + 1])
        if option.startswith("--epochs="):
            return int(option.split("=", 1)[1])
    return epochs_for(size, int(RECIPE["epochs"]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--models", default="mil")
    p.add_argument("--sizes", default="50,100,150,200,300,400,500")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--extra", default="", help="more `mnist train` options, e.g. '--encoder simclr-default'")
    p.add_argument("--keep", action="store_true", help="train into the usual MNISTCLI_HOME, keeping the runs")
    p.add_argument("--out", help="write every run's numbers to this JSON file")
    a = p.parse_args()
    env = dict(os.environ)
    if not a.keep:
        env.setdefault("MNISTCLI_HOME", tempfile.mkdtemp(prefix="mil-bench-"))
    rows, raw = [], []
    for model in a.models.split(","):
        for size in map(int, a.sizes.split(",")):
            cmd = [
                sys.executable,
                "-m",
                "mnistcli",
                "train",
                model,
                "--bags",
                str(size),
            ]
            cmd += [*a.extra.split(), "--runs", str(a.runs), "--data-dir", a.data_dir, "--json"]
            t0 = time.perf_counter()
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            if out.returncode != 0:
                sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
            result = json.loads(out.stdout.splitlines()[-1])
            if a.runs == 1:  # one run prints the run's own object
                result = {
                    "mean": {"test": result["test_accuracy"], **{k: result[k] for k in ("attention_hit",)}},
                    "std": {"test": 0.0, "attention_hit": 0.0},
                }
            seconds = time.perf_counter() - t0
            raw.append(
                {"model": model, "bags": size, "extra": a.extra, "command": cmd[3:], **result, "seconds": seconds}
            )
            rows.append((model, size, result["mean"], result["std"], seconds))
            each = ", ".join(f"{r['test_accuracy']:.3f}" for r in result.get("each", []))
            print(
                f"{model} {size}: AUC {result['mean']['test']:.4f} ± {result['std']['test']:.4f} ({seconds:.0f} s)"
                + (f"; each run: {each}" if each else ""),
                file=sys.stderr,
                flush=True,
            )
    print(
        f"| model | bags | epochs | AUC, mean ± std of {a.runs} | top attention is a target | "
        + " | ".join(PUBLISHED)
        + " |"
    )
    print("|---" * (5 + len(PUBLISHED)) + "|")
    for model, size, mean, std, _ in rows:
        published = " | ".join(f"{v[size]:.3f}" if size in v else "" for v in PUBLISHED.values())
        print(
            f"| {model}{' ' + a.extra if a.extra else ''} | {size} | {epochs_run(a.extra.split(), size)} | {mean['test']:.4f} ± "
            f"{std['test']:.4f} | {100 * mean['attention_hit']:.1f}% ± {100 * std['attention_hit']:.1f} | {published} |"
        )
    if a.out:
        with open(a.out, "w") as f:
            json.dump(raw, f, indent=1)


if __name__ == "__main__":
    main()
