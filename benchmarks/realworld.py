"""Accuracy of `mnist predict` on real MNIST test digits rendered as real-world pictures.

    python benchmarks/realworld.py --data-dir ../shared/data/mnist [-n 1000] [--seed 0] [-c CHECKPOINT ...]
                                   [--kinds clean,photo,photo_small,canvas,thick,thin] [--keep DIR]

Draws N test digits (seeded, the same ones for every kind), renders each with the renderers of
tests/realistic.py (clean PNG, phone photo of paper, the same with the digit small in a 2000x1500
photo, RGBA canvas drawing, thick and thin pens),
writes them to a folder per kind and runs the real CLI (`mnist predict DIR --json`, a subprocess)
on each, for each checkpoint given (-c, repeated; default: the CLI's default). Prints a markdown
table: accuracy per kind and checkpoint, and the change from the clean PNGs.
Runs use MNISTCLI_HOME as the CLI does; the default checkpoint is the CLI's default.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests/realistic.py holds the renderers

from tests.realistic import RENDERERS  # noqa: E402

from mnistcli.data.mnist import load_split  # noqa: E402


def render(kind: str, digits: np.ndarray, seed: int, folder: Path) -> None:
    """Write each digit rendered as `kind` to `folder` as i.png (lossless: a photo carries its own JPEG).

    The 2000x1500 photos are written as JPEG at quality 95 instead (a PNG of one is ~6 MB).
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, sorted(RENDERERS).index(kind)])
    for i, digit in enumerate(digits):
        picture = RENDERERS[kind](digit, rng)
        if picture.width * picture.height > 1_000_000:
            picture.save(folder / f"{i:05d}.jpg", quality=95)
        else:
            picture.save(folder / f"{i:05d}.png")


def predict(folder: Path, checkpoint: str | None) -> dict[int, int]:
    """{index: predicted digit} from `mnist predict FOLDER --json`; unreadable images are left out."""
    command = [sys.executable, "-m", "mnistcli", "predict", str(folder), "--json"]
    command += ["--checkpoint", checkpoint] if checkpoint else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode not in (0, 1):
        raise SystemExit(f"mnist predict failed ({done.returncode}): {done.stderr.strip()}")
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return {int(Path(r["path"]).stem): r["digit"] for r in rows if "digit" in r}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=os.environ.get("MNIST_DATA_DIR"), required=False)
    parser.add_argument("-n", type=int, default=1000, help="test digits per kind")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-c", "--checkpoint", action="append", help="repeat to compare; default: the CLI's default")
    parser.add_argument("--kinds", default=",".join(RENDERERS), help="comma-separated, from " + ", ".join(RENDERERS))
    parser.add_argument("--keep", type=Path, help="write the pictures here and keep them (default: a temp folder)")
    args = parser.parse_args()
    if args.data_dir is None:
        parser.error("give --data-dir or set MNIST_DATA_DIR")
    test = load_split("test", Path(args.data_dir))
    pick = np.random.default_rng(args.seed).choice(len(test.labels), size=min(args.n, len(test.labels)), replace=False)
    digits, labels = test.images[pick], test.labels[pick]
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    checkpoints: list[str | None] = args.checkpoint or [None]
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        print(f"{len(pick)} test digits (seed {args.seed}) per kind\n")
        print("| kind | " + " | ".join(c or "default checkpoint" for c in checkpoints) + " |")
        print("| --- |" + " ---: |" * len(checkpoints))
        clean: dict[str | None, float] = {}
        for kind in kinds:
            render(kind, digits, args.seed, base / kind)
            cells = []
            for checkpoint in checkpoints:
                got = predict(base / kind, checkpoint)
                accuracy = 100 * sum(got.get(i) == int(label) for i, label in enumerate(labels)) / len(labels)
                unread = f", {len(labels) - len(got)} unread" if len(got) < len(labels) else ""
                if kind == "clean":
                    clean[checkpoint] = accuracy
                delta = f" ({accuracy - clean[checkpoint]:+.1f})" if checkpoint in clean and kind != "clean" else ""
                cells.append(f"{accuracy:.1f}%{delta}{unread}")
            print(f"| {kind} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
