"""`mnist predict` on the fast path (onnxruntime, no torch import) beside the torch path and `import torch`.

    python benchmarks/fast_predict.py [--data-dir DIR] [--repeats 5] [--sizes 1,100,10000]

Writes MNIST test digits as PNG files (white paper, dark ink, as a user's would be; seeded synthetic
digits where no MNIST is found), then times whole processes, each case in turn so that a slow minute on
a shared machine slows all of them: `python -c "import torch"` (the reference), `mnist --help`, and
`mnist predict FILES --backend onnx` and `--backend torch` on 1, 100 and 10,000 images with the bundled
cnn (its model.onnx ships with it). Prints the median wall time of each and the ratios, and the largest
difference between the two paths' probabilities (the fast path must match torch to 1e-5).

The processes run as after `pip install`, which compiles every module to bytecode: PYTHONDONTWRITEBYTECODE is
dropped from their environment, and each case runs once untimed first (its bytecode written, its files in the
page cache). Without that an editable checkout compiles mnistcli's own modules in every process (30-60 ms here).
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
from pathlib import Path

import numpy as np
from PIL import Image

from mnistcli.data import mnist


def digits(n: int, data_dir: str | None) -> np.ndarray:
    """`n` test digits, uint8 (n, 28, 28), light ink on dark (MNIST's own, or seeded noise blobs)."""
    try:
        split = mnist.load_split("test", mnist.resolve_dir(data_dir, download=False, splits=("test",)))
        images = split.images
    except Exception:  # no MNIST here: any 28x28 pictures time the same
        images = (np.random.default_rng(0).random((10_000, 28, 28)) > 0.8).astype(np.uint8) * 255
    return np.resize(images, (n, 28, 28))


def timed(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    """(wall seconds, standard output) of one process; it must succeed."""
    t0 = time.perf_counter()
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(command[:6])} ... failed:\n{out.stderr[-2000:]}")
    return seconds, out.stdout


def probabilities(stdout: str) -> np.ndarray:
    return np.array([json.loads(line)["probabilities"] for line in stdout.splitlines()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("MNIST_DATA_DIR"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", default="1,100,10000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    mnist_cmd = [sys.executable, "-m", "mnistcli"]
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["MNISTCLI_HOME"] = str(Path(tmp) / "home")  # no runs: the bundled cnn answers
        images = digits(max(sizes), args.data_dir)
        folders = {}
        for n in sizes:
            folder = Path(tmp) / f"images-{n}"
            folder.mkdir()
            for i in range(n):
                Image.fromarray(255 - images[i]).save(folder / f"{i:05d}.png")
            folders[n] = folder
        cases: dict[str, list[str]] = {
            "python -c 'import torch'": [sys.executable, "-c", "import torch"],
            "mnist --help": [*mnist_cmd, "--help"],
        }
        for n in sizes:
            target = [str(folders[n] / "00000.png")] if n == 1 else [str(folders[n])]
            for backend in ("onnx", "torch"):
                cases[f"predict {n:,} image{'s' if n > 1 else ''}, {backend}"] = [
                    *mnist_cmd,
                    "predict",
                    *target,
                    "--backend",
                    backend,
                    "--json",
                ]
        times: dict[str, list[float]] = {name: [] for name in cases}
        outputs: dict[str, str] = {}
        for command in cases.values():  # untimed: bytecode written, files read once
            timed(command, env)
        for _ in range(args.repeats):
            for name, command in cases.items():
                seconds, outputs[name] = timed(command, env)
                times[name].append(seconds)
    median = {name: statistics.median(t) for name, t in times.items()}
    torch_import = median["python -c 'import torch'"]
    print(f"whole processes, median of {args.repeats}, {os.cpu_count()} CPU cores; reference: import torch")
    print()
    print("| case | seconds | / import torch | onnx / torch path |")
    print("| --- | ---: | ---: | ---: |")
    for name, seconds in median.items():
        ratio = ""
        if name.endswith(", onnx"):
            ratio = f"{seconds / median[name.replace(', onnx', ', torch')]:.2f}"
        print(f"| {name} | {seconds:.3f} | {seconds / torch_import:.2f} | {ratio} |")
    print()
    for n in sizes:
        plural = "s" if n > 1 else ""
        fast = probabilities(outputs[f"predict {n:,} image{plural}, onnx"])
        slow = probabilities(outputs[f"predict {n:,} image{plural}, torch"])
        print(
            f"{n:,} image{plural}: largest difference in a probability, onnx against torch: {np.abs(fast - slow).max():.2g}"
        )


if __name__ == "__main__":
    main()
