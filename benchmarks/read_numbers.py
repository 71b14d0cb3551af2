"""How well `mnist read` reads whole numbers: composed from real MNIST test digits, read by the real CLI.

    python benchmarks/read_numbers.py --data-dir /work/shared/data/mnist [-n 500] [--seed 0] [--checkpoint REF]

Draws N numbers of 2-6 test digits (seeded) and writes each as a PNG, in three renderings:
  separated  digits cropped to their ink, 2-12 px apart, jittered up and down, light on black
  paper      the same kind of number as a photo of paper: dark ink on light grey paper, scaled 2-3x,
             slightly blurred, camera noise, JPEG
  touching   digits 0 to 3 px into each other (gap 0 or a small overlap): what segmentation cannot
             always handle
then runs `mnist read DIR --json` on each folder and prints a markdown table: numbers read exactly,
numbers cut into the right count of digits, and per-digit accuracy (a digit counts as right when
the number was cut into the right count and the digit in its place is right). Runs use
MNISTCLI_HOME as the CLI does: a fresh empty one means the bundled cnn.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from mnistcli.data import mnist

RENDERINGS = {"separated": (2, 13), "paper": (2, 13), "touching": (-3, 1)}  # gap range (low, high exclusive)


def ink_crop(digit: np.ndarray) -> np.ndarray:
    rows, cols = np.flatnonzero(digit.any(1)), np.flatnonzero(digit.any(0))
    return digit[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def compose(digits: np.ndarray, gaps: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Light-on-black uint8 canvas with the digits left to right, `gaps` px apart (negative: overlapping)."""
    crops = [ink_crop(d) for d in digits]
    width = sum(c.shape[1] for c in crops) + int(gaps.sum()) + 16
    canvas = np.zeros((max(c.shape[0] for c in crops) + 16, width), dtype=np.uint8)
    x = 8
    for c, gap in zip(crops, [*gaps, 0], strict=True):
        y = 8 + int(rng.integers(-3, 4))
        window = canvas[y : y + c.shape[0], x : x + c.shape[1]]
        np.maximum(window, c, out=window)
        x += c.shape[1] + int(gap)
    return canvas


def paper_photo(canvas: np.ndarray, rng: np.random.Generator) -> bytes:
    """The canvas as a JPEG photo of dark ink on light grey paper."""
    scale = float(rng.uniform(2, 3))
    size = (round(canvas.shape[1] * scale), round(canvas.shape[0] * scale))
    ink = np.asarray(Image.fromarray(canvas).resize(size, Image.Resampling.BILINEAR), dtype=np.float32) / 255
    paper, darkness = rng.uniform(0.75, 0.92), rng.uniform(0.55, 0.75)
    photo = paper - darkness * ink + rng.normal(0, 0.02, ink.shape)
    image = Image.fromarray((np.clip(photo, 0, 1) * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.7))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


def write_set(folder: Path, rendering: str, images: np.ndarray, labels: np.ndarray, n: int, seed: int) -> dict:
    """Write `n` numbers into `folder`; returns {path: the true number}."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    truth = {}
    for i in range(n):
        idx = rng.choice(len(images), int(rng.integers(2, 7)), replace=False)
        canvas = compose(images[idx], rng.integers(*RENDERINGS[rendering], size=len(idx) - 1), rng)
        text = "".join(str(int(v)) for v in labels[idx])
        if rendering == "paper":
            path = folder / f"{i:04d}.jpg"
            path.write_bytes(paper_photo(canvas, rng))
        else:
            path = folder / f"{i:04d}.png"
            Image.fromarray(canvas).save(path)
        truth[str(path)] = text
    return truth


def score(truth: dict, checkpoint: str | None) -> dict:
    """Run the CLI on the folder and compare."""
    folder = str(Path(next(iter(truth))).parent)
    cmd = [sys.executable, "-m", "mnistcli", "read", folder, "--json"] + (["-c", checkpoint] if checkpoint else [])
    done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if done.returncode not in (0, 1):
        raise SystemExit(done.stderr)
    read = {r["path"]: r for r in map(json.loads, done.stdout.splitlines())}
    exact = count = digits_right = digits = 0
    for path, text in truth.items():
        got = read[path]["text"] if path in read else ""
        exact += got == text
        digits += len(text)
        if len(got) == len(text):
            count += 1
            digits_right += sum(a == b for a, b in zip(got, text, strict=True))
    n = len(truth)
    checkpoint_name = next(iter(read.values()))["checkpoint"] if read else "-"
    return {"n": n, "exact": exact / n, "count": count / n, "digit": digits_right / digits, "ckpt": checkpoint_name}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="MNIST folder (default: $MNIST_DATA_DIR, else downloaded)")
    parser.add_argument("-n", type=int, default=500, help="numbers per rendering")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", "-c", default=None, help="as for mnist read (default: its default)")
    parser.add_argument("--keep", default=None, help="write the images here (default: a temporary folder)")
    args = parser.parse_args()
    test = mnist.load_split("test", mnist.resolve_dir(args.data_dir))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        print("| rendering | numbers | read exactly | right digit count | per-digit accuracy | checkpoint |")
        print("| --- | ---: | ---: | ---: | ---: | --- |")
        for k, rendering in enumerate(RENDERINGS):
            truth = write_set(root / rendering, rendering, test.images, test.labels, args.n, args.seed + k)
            s = score(truth, args.checkpoint)
            print(
                f"| {rendering} | {s['n']} | {100 * s['exact']:.1f}% | {100 * s['count']:.1f}% "
                f"| {100 * s['digit']:.2f}% | {s['ckpt']} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
