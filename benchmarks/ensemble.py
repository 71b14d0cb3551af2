"""The ensemble table of docs/models.md: `mnist train ensemble`, timed, then how accuracy grows with its members.

    python benchmarks/ensemble.py --data-dir ../shared/data/mnist [--extra "--members 10"] [--jobs 2]
        [--reuse RUN_FOLDER] [--out ensemble.json]

1. Times `python -c "import torch"` (the reference every time here is a ratio to) and the whole
   `mnist train ensemble EXTRA --jobs J` process, in a temporary MNISTCLI_HOME unless --keep.
2. `mnist eval` of the ensemble, with and without `--tta`: the ensemble and every member, and each way of
   combining them, on the 10,000 test images.
3. The soft vote (and the majority vote) of the first k members for k = 1, 2, 3, 5, 10, ..., from the
   members' calibrated test probabilities: how accuracy grows with members. This is a report of the
   ensemble already trained, not a choice: nothing here picks a member, a k or a setting by test accuracy.

`--reuse FOLDER` skips the training and measures an ensemble already trained (its folder).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from mnistcli import store
from mnistcli.api.common import load_tensors
from mnistcli.models.ensemble import combine_probabilities
from mnistcli.protocols.inference import evaluate_classifier


def mnist(*args: str, env: dict[str, str]) -> tuple[dict, float]:
    """Run `python -m mnistcli ARGS --json`; returns its last JSON line and the wall time of the process."""
    cmd = [sys.executable, "-m", "mnistcli", *args, "--json"]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.splitlines()[-1]), seconds


def import_torch_seconds() -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    return time.perf_counter() - t0


def growth(folder: Path, data_dir: str) -> list[dict]:
    """Soft and majority vote of the first k members on the test images, for k = 1, 2, 3, 5, 10, 15, ..."""
    runs = [store.runs.open_run(f) for f in store.member_folders(folder)]
    test = load_tensors("test", Path(data_dir), torch.device("cpu"))
    probabilities = []
    for run in runs:
        logits = evaluate_classifier(store.load(run), test).logits
        assert logits is not None
        probabilities.append(torch.softmax(torch.from_numpy(logits) / run.temperature, dim=1))
    p = torch.stack(probabilities)
    labels = test.labels
    sizes = sorted({k for k in (1, 2, 3, 5, 10, 15, 20, 30, 50, 100) if k <= len(p)} | {len(p)})  # and all of them
    rows = []
    for k in sizes:
        ones = torch.ones(k)
        soft = combine_probabilities(p[:k], "soft", ones).argmax(1)
        vote = combine_probabilities(p[:k], "vote", ones).argmax(1)
        rows.append(
            {
                "members": k,
                "soft": int((soft == labels).sum()) / len(labels),
                "vote": int((vote == labels).sum()) / len(labels),
                "mean_member": float(sum(int((q.argmax(1) == labels).sum()) for q in p[:k]) / (k * len(labels))),
            }
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--extra", default="", help="more `mnist train ensemble` options, e.g. '--members 10'")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--reuse", help="measure this ensemble folder instead of training one")
    p.add_argument("--keep", action="store_true", help="train into the usual MNISTCLI_HOME, keeping the run")
    p.add_argument("--out", help="write every number to this JSON file")
    a = p.parse_args()
    env = dict(os.environ)
    if not a.keep:
        env.setdefault("MNISTCLI_HOME", tempfile.mkdtemp(prefix="ensemble-bench-"))
    torch_seconds = import_torch_seconds()
    result: dict = {"import_torch_seconds": torch_seconds, "extra": a.extra, "jobs": a.jobs}
    if a.reuse:
        folder = Path(a.reuse).resolve()
    else:
        trained, seconds = mnist(
            "train", "ensemble", *a.extra.split(), "--jobs", str(a.jobs), "--data-dir", a.data_dir, env=env
        )
        folder = Path(trained["path"])
        result.update(train_seconds=seconds, members_training_seconds=trained["seconds"])
        print(
            f"trained {folder.name}: {seconds:.0f} s whole process ({seconds / 60:.1f} min), "
            f"{seconds / torch_seconds:.0f}x `import torch` ({torch_seconds:.2f} s)"
        )
    plain, _ = mnist("eval", str(folder), "--data-dir", a.data_dir, env=env)
    tta, _ = mnist("eval", str(folder), "--tta", "--data-dir", a.data_dir, env=env)
    result.update(eval=plain, eval_tta=tta, growth=growth(folder, a.data_dir))
    print("\n| member | model | test accuracy | with --tta |\n| --- | --- | ---: | ---: |")
    for m, t in zip(plain["members"], tta["members"], strict=True):
        print(f"| {m['name']} | {m['model']} | {100 * m['accuracy']:.2f}% | {100 * t['accuracy']:.2f}% |")
    best = max(m["accuracy"] for m in plain["members"])
    print(
        f"| **ensemble** ({plain['combinations']['used']}) | | **{100 * plain['accuracy']:.2f}%** "
        f"| {100 * tta['accuracy']:.2f}% |"
    )
    print(
        f"\nbest member {100 * best:.2f}%; majority vote {100 * plain['combinations']['vote']:.2f}%; "
        f"ensemble - best member = {100 * (plain['accuracy'] - best):+.2f} points"
    )
    print("\n| members | soft vote | majority vote | mean member |\n| ---: | ---: | ---: | ---: |")
    for row in result["growth"]:
        print(
            f"| {row['members']} | {100 * row['soft']:.2f}% | {100 * row['vote']:.2f}% | {100 * row['mean_member']:.2f}% |"
        )
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
