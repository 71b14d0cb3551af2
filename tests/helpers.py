"""Test helpers: synthetic MNIST-like digits written as IDX files, and PNG export.

The synthetic digits are the characters 0-9 rendered with Pillow's built-in font, jittered in
position, size, rotation and stroke, so they look like digits (predict's preprocessing has
something real to do) and a small model learns them in one epoch.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mnistcli.data.idx import write_idx


def render_digit(digit: int, rng: np.random.Generator) -> np.ndarray:
    """A 28x28 uint8 image of `digit`, light on dark, MNIST-like."""
    size = int(rng.integers(18, 25))
    font = ImageFont.load_default(size=size)
    canvas = Image.new("L", (40, 40), 0)
    ImageDraw.Draw(canvas).text(
        (20, 20), str(digit), fill=255, font=font, anchor="mm", stroke_width=int(rng.integers(0, 2)), stroke_fill=255
    )
    canvas = canvas.rotate(float(rng.uniform(-10, 10)), resample=Image.Resampling.BILINEAR)
    dx, dy = (int(v) for v in rng.integers(-2, 3, size=2))
    return np.asarray(canvas.crop((6 - dx, 6 - dy, 34 - dx, 34 - dy)), dtype=np.uint8)


def make_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` synthetic digits (uint8 (n, 28, 28)) with balanced labels (uint8 (n,))."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 10).astype(np.uint8)
    rng.shuffle(labels)
    return np.stack([render_digit(int(d), rng) for d in labels]), labels


def write_mnist(folder: Path, n_train: int = 300, n_test: int = 100, gz: bool = True) -> Path:
    """Write a synthetic MNIST (the four canonical files) into `folder`; returns it."""
    ext = ".gz" if gz else ""
    for split, n, seed in (("train", n_train, 1), ("t10k", n_test, 2)):
        images, labels = make_digits(n, seed)
        write_idx(folder / f"{split}-images-idx3-ubyte{ext}", images)
        write_idx(folder / f"{split}-labels-idx1-ubyte{ext}", labels)
    return folder


def save_png(array: np.ndarray, path: Path) -> Path:
    """Save a uint8 or [0, 1] float array as a grayscale PNG."""
    if array.dtype != np.uint8:
        array = (np.clip(array, 0, 1) * 255).round().astype(np.uint8)
    Image.fromarray(array).save(path)
    return path


def train_in_memory(
    model: Any, name: str, data: Any, overrides: dict[str, Any], val: Any = None, callbacks: Any = ()
) -> tuple[Any, Any]:
    """Train `model` (registered as `name`) on in-memory `data` through the engine exactly as `mnist train` sets a
    run up, without files; returns (the family, the loop's final position)."""
    import torch

    from mnistcli.config import split
    from mnistcli.engine import optim
    from mnistcli.engine.loop import Loop
    from mnistcli.families import Data, get_family
    from mnistcli.registry import get_entry

    family_type = get_family(get_entry(name).family)
    config, params = split(family_type.Params, get_entry(name).recipe, overrides, family_type.name)
    generator = torch.Generator().manual_seed(config.seed)
    family = family_type(params, config, generator)
    family.prepare(Data(data, val, data, data, data))
    optimizer = optim.for_config(model, config)
    sampler = family.sampler(config.batch_size)
    schedule = optim.schedule_for(optimizer, config, -(-len(sampler) // config.accumulate) * config.epochs)
    generators = {"run": generator, **family.generators()}
    loop = Loop(
        model, family, optimizer, sampler, generators, config.epochs, schedule, callbacks,
        accumulate=config.accumulate, precision=config.precision,
    )  # fmt: skip
    return family, loop.run()


class Blocked(BaseException):
    """Raised by `deadline`: a BaseException, so that no `except OSError` or `except Exception` swallows it."""


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Fail with `Blocked` instead of hanging the suite (SIGALRM interrupts a blocking open())."""

    def expire(signum: int, frame: object) -> None:
        raise Blocked(f"still blocked after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def kill_group(process: subprocess.Popen[str]) -> None:
    """Kill what is left of `process`'s group (started in a session of its own), even after its leader has gone."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
