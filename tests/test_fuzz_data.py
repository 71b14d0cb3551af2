"""Hostile input for the data readers: only the project's own errors may escape, in bounded memory.

The IDX reader gets every type code, ranks 0-70, huge and zero sizes, truncations, bit flips,
trailing bytes and 0, 1 or 2 layers of gzip (one layer sometimes split into several members); it
may only raise `IdxError`, and never allocate more than 50 MB while reading (tracemalloc, which
sees numpy's buffers). The image loader gets random bytes and truncated or bit-flipped real
images in several formats; it may only raise `ImageError`, and within the same memory bound.
"""

from __future__ import annotations

import gzip
import io
import itertools
import math
import tempfile
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from mnistcli.data.idx import DTYPES, read_idx
from mnistcli.data.images import load_image, load_images
from mnistcli.errors import IdxError, ImageError

MEMORY_LIMIT = 50 * 2**20
FUZZ = settings(max_examples=150, deadline=5000, suppress_health_check=[HealthCheck.too_slow])


@contextmanager
def temp_file(payload: bytes, name: str) -> Iterator[Path]:
    """`payload` written to a fresh file called `name` (hypothesis examples cannot share pytest's tmp_path)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(payload)
        yield path


def peak_memory(call: object) -> tuple[object, int]:
    """Run `call()` under tracemalloc; return (its result or the exception it raised, peak bytes)."""
    assert callable(call)
    tracemalloc.start()
    try:
        result: object = call()
    except Exception as e:  # returned, so that the caller checks its type
        result = e
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return result, peak


def flip_bits(data: bytes, positions: list[int]) -> bytes:
    out = bytearray(data)
    for p in positions:
        if out:
            out[(p // 8) % len(out)] ^= 1 << (p % 8)
    return bytes(out)


def gzip_layers(data: bytes, layers: int, members: int) -> bytes:
    """`data` gzipped `layers` times; the first layer is split into `members` gzip members."""
    for layer in range(layers):
        if layer == 0 and members > 1:
            cuts = np.linspace(0, len(data), members + 1).astype(int)
            data = b"".join(gzip.compress(data[a:b], mtime=0) for a, b in itertools.pairwise(cuts))
        else:
            data = gzip.compress(data, compresslevel=1, mtime=0)
    return data


dims = st.one_of(st.integers(0, 4), st.sampled_from([0, 1, 2**16, 2**31, 2**32 - 1]), st.integers(0, 2**32 - 1))


def numpy_holds(shape: list[int], dtype: np.dtype) -> bool:
    """Whether numpy can make an array of this shape (the reference for what a reader can return)."""
    try:
        np.empty(shape, dtype=dtype)
    except ValueError:
        return False
    return True


@st.composite
def idx_files(draw: st.DrawFn) -> tuple[bytes, bool]:
    """(the bytes of a file, whether it is a well-formed IDX file) from a header of any type and rank."""
    code = draw(st.one_of(st.sampled_from(sorted(DTYPES)), st.integers(0, 255)))
    ndim = draw(st.integers(0, 70))
    shape = draw(st.lists(dims, min_size=ndim, max_size=ndim)) if ndim <= 8 else [1] * ndim
    if ndim > 8 and draw(st.booleans()):
        shape[draw(st.integers(0, ndim - 1))] = draw(dims)
    header = bytes([0, 0, code, ndim]) + np.asarray(shape, dtype=">u4").tobytes()
    itemsize = DTYPES[code].itemsize if code in DTYPES else 1
    size = math.prod(shape) * itemsize
    exact = code in DTYPES and size <= 4096  # the data the header asks for, even where numpy cannot hold it
    data = draw(st.binary(min_size=size, max_size=size)) if exact else draw(st.binary(max_size=64))
    payload = header + data
    well_formed = exact and numpy_holds(shape, DTYPES[code])
    layers = draw(st.sampled_from([0, 1, 1, 2]))
    defect = draw(st.sampled_from(["none"] * 3 + ["damage"] * 4 + ["bomb"]))
    if defect == "damage":  # truncation, bit flips, trailing bytes
        cut = draw(st.integers(0, len(payload)))
        flips = draw(st.lists(st.integers(0, 8 * len(payload)), max_size=3))
        payload = flip_bits(payload[:cut], flips) + draw(st.binary(max_size=16))
        well_formed = well_formed and payload == header + data
    elif defect == "bomb" and layers:  # 64 MB of zeros after the data: inflating them all breaks the memory limit
        payload += bytes(64 * 2**20)
        well_formed = False
    packed = gzip_layers(payload, layers, draw(st.integers(1, 3)) if layers else 1)
    if layers and draw(st.booleans()):  # damage the gzip stream itself
        packed = flip_bits(
            packed[: draw(st.integers(0, len(packed)))], draw(st.lists(st.integers(0, 8 * len(packed)), max_size=2))
        )
        well_formed = False
    return packed, well_formed and layers < 2


@FUZZ
@given(idx_files(), st.booleans())
def test_idx_reader_raises_only_idx_error_in_bounded_memory(case: tuple[bytes, bool], mmap: bool) -> None:
    packed, well_formed = case
    with temp_file(packed, "fuzz-idx3-ubyte") as path:
        result, peak = peak_memory(lambda: read_idx(path, mmap=mmap))
        if isinstance(result, np.ndarray):
            result.sum()  # the pages are really there
            result = None  # let go of the memory map before the folder goes
    assert peak < MEMORY_LIMIT, f"read_idx allocated {peak} bytes"
    if isinstance(result, Exception):
        assert isinstance(result, IdxError), f"{type(result).__name__}: {result}"
        assert str(path) in str(result) and "\n" not in str(result)
        assert not well_formed, f"a well-formed file was refused: {result}"


@FUZZ
@given(st.sampled_from(sorted(DTYPES)), st.lists(st.integers(0, 5), max_size=4), st.integers(0, 3), st.data())
def test_well_formed_files_read_back_exactly(code: int, shape: list[int], members: int, data: st.DataObject) -> None:
    """Raw (`members` 0) or gzip in 1-3 members: the bytes laid out by hand come back exactly."""
    dtype, size = DTYPES[code], math.prod(shape) * DTYPES[code].itemsize
    raw = data.draw(st.binary(min_size=size, max_size=size))
    header = bytes([0, 0, code, len(shape)]) + np.asarray(shape, dtype=">u4").tobytes()
    with temp_file(gzip_layers(header + raw, min(members, 1), members), "ok-idx") as path:
        back = read_idx(path)
        assert back.shape == tuple(shape) and back.dtype == dtype and back.tobytes() == raw
        back = None


def digit_image() -> Image.Image:
    image = Image.new("L", (48, 48), 0)
    ImageDraw.Draw(image).rectangle((20, 8, 28, 40), fill=255)
    return image


def encoded(fmt: str) -> bytes:
    buf = io.BytesIO()
    image = digit_image().convert("RGB") if fmt in ("JPEG", "WEBP") else digit_image()
    image.save(buf, format=fmt)
    return buf.getvalue()


FORMATS = {fmt: encoded(fmt) for fmt in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM")}


@st.composite
def image_files(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=2048))
    good = FORMATS[draw(st.sampled_from(sorted(FORMATS)))]
    cut = good[: draw(st.integers(0, len(good)))] if draw(st.booleans()) else good
    flips = draw(st.lists(st.integers(0, 8 * max(len(cut), 1) - 1), max_size=8))
    return flip_bits(cut, flips)


@FUZZ
@given(image_files())
def test_image_loading_raises_only_image_error(payload: bytes) -> None:
    with temp_file(payload, "fuzz.png") as path:
        out, peak = peak_memory(lambda: load_image(path))
        assert peak < MEMORY_LIMIT, f"load_image allocated {peak} bytes"
        if isinstance(out, Exception):
            assert isinstance(out, ImageError), f"{type(out).__name__}: {out}"
            assert str(path) in str(out) and "\n" not in str(out)
        else:
            assert isinstance(out, np.ndarray) and out.shape == (28, 28) and out.dtype == np.float32
            assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
        assert [type(item) in (np.ndarray, ImageError) for _, item in load_images([str(path)])] == [True]


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_the_fuzzed_formats_load_when_intact(fmt: str, tmp_path: Path) -> None:
    path = tmp_path / f"digit.{fmt.lower()}"
    path.write_bytes(FORMATS[fmt])
    assert load_image(path).max() > 0.5
