"""An MNIST folder whose "test" files are images held out of the TRAINING set: for choosing a recipe without the test set.

    python benchmarks/validation_folder.py --data-dir ../shared/data/mnist --out /tmp/mnist-val [--held 5000] [--seed 12345]

Writes the four raw IDX files into OUT: `train-*` with the other 55,000 training images and `t10k-*` with
HELD training images drawn with SEED (numpy's default_rng permutation). Any `mnist train --data-dir OUT`
then reports validation accuracy where it says test accuracy. docs/models.md ("How the member was chosen")
used the defaults.
"""

from __future__ import annotations

import argparse
import struct
from pathlib import Path

import numpy as np

from mnistcli.data import mnist


def write_idx(path: Path, array: np.ndarray) -> None:
    """uint8 IDX: magic 0x0008 + rank, big-endian dimensions, then the bytes."""
    with open(path, "wb") as f:
        f.write(bytes([0, 0, 8, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape))
        f.write(np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--held", type=int, default=5000)
    p.add_argument("--seed", type=int, default=12345)
    a = p.parse_args()
    split = mnist.load_split("train", Path(a.data_dir))
    images, labels = np.asarray(split.images), np.asarray(split.labels)
    perm = np.random.default_rng(a.seed).permutation(len(labels))
    kept, held = np.sort(perm[a.held :]), np.sort(perm[: a.held])
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    write_idx(out / "train-images-idx3-ubyte", images[kept])
    write_idx(out / "train-labels-idx1-ubyte", labels[kept])
    write_idx(out / "t10k-images-idx3-ubyte", images[held])
    write_idx(out / "t10k-labels-idx1-ubyte", labels[held])
    print(f"{len(kept):,} training and {len(held):,} held-out images in {out}")


if __name__ == "__main__":
    main()
