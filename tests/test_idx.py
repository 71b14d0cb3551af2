"""The IDX reader and writer: exact bytes, every type code, and every defect as a typed error."""

from __future__ import annotations

import gzip
import itertools
import os
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mnistcli.cli import app
from mnistcli.data.idx import MAX_NDIM, decode_idx, encode_idx, idx_header, read_idx, write_idx
from mnistcli.errors import IdxError
from tests.helpers import deadline

DTYPES = ["uint8", "int8", "int16", "int32", "float32", "float64"]


def test_bytes_laid_out_by_hand(tmp_path: Path) -> None:
    # 2x3 int16, big-endian: magic 00 00 0B 02, dims 2 and 3, then six shorts.
    raw = bytes([0, 0, 0x0B, 2, 0, 0, 0, 2, 0, 0, 0, 3]) + b"".join(
        v.to_bytes(2, "big", signed=True) for v in (1, -2, 3, 300, -500, 7)
    )
    path = tmp_path / "hand.idx"
    path.write_bytes(raw)
    assert read_idx(path).tolist() == [[1, -2, 3], [300, -500, 7]]
    assert encode_idx(np.array([[1, -2, 3], [300, -500, 7]], dtype=np.int16)) == raw


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 4), (2, 1, 3, 2)])
@pytest.mark.parametrize("gz", [False, True])
def test_round_trip(tmp_path: Path, dtype: str, shape: tuple[int, ...], gz: bool) -> None:
    rng = np.random.default_rng(0)
    array = (rng.standard_normal(shape) * 100).astype(dtype)
    path = write_idx(tmp_path / ("a.idx.gz" if gz else "a.idx"), array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == gz
    back = read_idx(path)
    assert back.shape == shape and back.dtype.newbyteorder("=") == np.dtype(dtype)
    np.testing.assert_array_equal(back, array)


def test_raw_is_memory_mapped_and_gzip_detected_by_content(tmp_path: Path) -> None:
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    raw = write_idx(tmp_path / "x-ubyte", array)
    assert isinstance(read_idx(raw), np.memmap)
    disguised = tmp_path / "no-extension"
    disguised.write_bytes(gzip.compress(raw.read_bytes()))
    np.testing.assert_array_equal(read_idx(disguised), array)


def test_matches_torchvision_reader(tmp_path: Path) -> None:
    from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

    array = np.random.default_rng(1).integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    path = write_idx(tmp_path / "imgs-idx3-ubyte", array)
    np.testing.assert_array_equal(read_sn3_pascalvincent_tensor(str(path)).numpy(), read_idx(path))


def good_bytes() -> bytes:
    return encode_idx(np.arange(12, dtype=np.uint8).reshape(3, 4))


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\x01\x00\x08\x02" + good_bytes()[4:], "not an IDX file"),
        (b"\x00\x00\x07\x02" + good_bytes()[4:], "unknown IDX type code 0x07"),
        (good_bytes()[:-1], "truncated"),
        (good_bytes() + b"\x00\x00", "2 trailing bytes"),
        (good_bytes()[:6], "truncated header"),
        (b"\x00\x00", "too short"),
        (b"", "too short"),
    ],
)
@pytest.mark.parametrize("gz", [False, True])
def test_defects_raise_idx_error_naming_the_file(tmp_path: Path, payload: bytes, message: str, gz: bool) -> None:
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(gzip.compress(payload) if gz else payload)
    with pytest.raises(IdxError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_broken_gzip(tmp_path: Path) -> None:
    path = tmp_path / "broken.gz"
    path.write_bytes(gzip.compress(good_bytes())[:-6])
    with pytest.raises(IdxError, match="broken gzip"):
        read_idx(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(IdxError, match="nope: no such file"):
        read_idx(tmp_path / "nope")


def test_writer_refuses_unsupported_dtype(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot store"):
        write_idx(tmp_path / "a.idx", np.zeros(3, dtype=np.uint16))


def test_idx_module_never_imports_torch() -> None:
    code = "import sys, mnistcli.data.idx, mnistcli.data.mnist, mnistcli.data.images; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_dimensions_whose_product_overflows_int64(tmp_path: Path) -> None:
    path = tmp_path / "huge-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 0x08, 3]) + np.array([2**31, 2**31, 4], dtype=">u4").tobytes())
    with pytest.raises(IdxError, match="truncated"):
        read_idx(path)


# Issue 17: hostile files end as one IdxError naming the file, never a numpy error, a hang or a huge allocation.

no_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")


def test_more_dimensions_than_numpy_holds(tmp_path: Path) -> None:
    path = tmp_path / "rank65-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, 65]) + struct.pack(">I", 1) * 65 + b"\x07")
    with pytest.raises(IdxError, match="65 dimensions"):
        read_idx(path)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("mmap", [False, True])
@pytest.mark.parametrize(
    ("code", "dims"), [(0x08, (0, 2**32 - 1, 2**32 - 1)), (0x0E, (0, 2**31, 2**31)), (0x08, (2**32 - 1, 2**32 - 1, 0))]
)
def test_huge_dimensions_with_a_zero_among_them(
    tmp_path: Path, code: int, dims: tuple[int, ...], mmap: bool, gz: bool
) -> None:
    path = tmp_path / "empty-but-huge"
    header = bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)
    path.write_bytes(gzip.compress(header) if gz else header)
    with pytest.raises(IdxError, match="too large for a numpy array") as info:
        read_idx(path, mmap=mmap)
    assert str(path) in str(info.value)


def test_empty_arrays_of_any_rank_still_read(tmp_path: Path) -> None:
    for shape in [(0,), (0, 28, 28), (3, 0)]:
        for name in ("e-idx", "e-idx.gz"):
            assert read_idx(write_idx(tmp_path / name, np.zeros(shape, np.float32))).shape == shape
    path = tmp_path / "wide-empty"
    path.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", 0, 2**31, 2**31))  # numpy holds it: fine
    assert read_idx(path).shape == (0, 2**31, 2**31)


@no_fifo
def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "t10k-images-idx3-ubyte"
    os.mkfifo(fifo)
    link = tmp_path / "link-idx3-ubyte"
    link.symlink_to(fifo)
    for path in (fifo, link):
        with deadline(10), pytest.raises(IdxError, match=r"not a regular file \(a FIFO\)") as info:
            read_idx(path)
        assert str(path) in str(info.value)


def test_devices_folders_and_links(tmp_path: Path) -> None:
    if os.path.exists("/dev/zero"):
        with deadline(10), pytest.raises(IdxError, match=r"/dev/zero: not a regular file \(a character device\)"):
            read_idx("/dev/zero")
    with pytest.raises(IdxError, match="a folder, not a file"):
        read_idx(tmp_path)
    target = write_idx(tmp_path / "real.gz", np.arange(6, dtype=np.uint8))
    (tmp_path / "link").symlink_to(target)
    np.testing.assert_array_equal(read_idx(tmp_path / "link"), np.arange(6))


def write_bomb(path: Path, header_shape: tuple[int, ...], zeros: int) -> Path:
    """A gzip file: an IDX header for `header_shape` uint8, then `zeros` zero bytes (written a MiB at a time)."""
    with gzip.open(path, "wb", compresslevel=6) as f:
        f.write(bytes([0, 0, 8, len(header_shape)]) + struct.pack(f">{len(header_shape)}I", *header_shape))
        for start in range(0, zeros, 1 << 20):
            f.write(bytes(min(1 << 20, zeros - start)))
    return path


def test_gzip_bomb_is_refused_in_a_few_megabytes(tmp_path: Path) -> None:
    path = write_bomb(tmp_path / "t10k-images-idx3-ubyte.gz", (10, 28, 28), 400 * 10**6)
    assert path.stat().st_size < 10**6  # 400 MB in under 1 MB
    tracemalloc.start()
    try:
        with pytest.raises(IdxError, match="trailing bytes after 10x28x28 uint8 data"):
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, f"refusing a gzip bomb took {peak} bytes"


def test_header_claiming_more_than_the_file_can_hold_is_refused_before_inflating(tmp_path: Path) -> None:
    claims = (2**32 - 1, 2**32 - 1, 2**32 - 1)  # 2**96 bytes
    header = bytes([0, 0, 8, 3]) + struct.pack(">3I", *claims)
    raw, packed = tmp_path / "raw", tmp_path / "packed"
    raw.write_bytes(header + bytes(100))
    packed.write_bytes(gzip.compress(header + bytes(10**6)))
    with pytest.raises(IdxError, match="truncated"):
        read_idx(raw)
    tracemalloc.start()
    try:
        with pytest.raises(IdxError, match=r"more than \d+ bytes of gzip can hold"):
            read_idx(packed)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20


def test_gzip_members_and_gzip_inside_gzip(tmp_path: Path) -> None:
    data = encode_idx(np.arange(100, dtype=np.int16).reshape(10, 10))
    members = tmp_path / "members.gz"
    members.write_bytes(gzip.compress(data[:7]) + gzip.compress(data[7:50]) + gzip.compress(data[50:]))
    np.testing.assert_array_equal(read_idx(members), np.arange(100).reshape(10, 10))
    twice = tmp_path / "twice.gz"
    twice.write_bytes(gzip.compress(gzip.compress(data)))
    with pytest.raises(IdxError, match="gzip inside gzip"):
        read_idx(twice)


def hostile_test_images(folder: Path, problem: str) -> Path:
    """A test split whose labels are fine and whose images file is `problem`; returns the images' path."""
    write_idx(folder / "t10k-labels-idx1-ubyte", np.zeros(10, np.uint8))
    bad = folder / "t10k-images-idx3-ubyte"
    if problem == "fifo":
        os.mkfifo(bad)
    elif problem == "rank65":
        bad.write_bytes(bytes([0, 0, 8, 65]) + struct.pack(">I", 1) * 65 + b"\x07")
    else:
        bad.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", 0, 2**32 - 1, 2**32 - 1))
    return bad


@no_fifo
def test_a_fifo_through_mnist_eval_is_one_error_line_not_a_hang(tmp_path: Path) -> None:
    """In a subprocess with a timeout (the bundled checkpoint), so that a regression fails instead of hanging."""
    bad = hostile_test_images(tmp_path, "fifo")
    command = [sys.executable, "-m", "mnistcli", "eval", "--data-dir", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr == f"error: {bad}: not a regular file (a FIFO)\n"


@pytest.mark.parametrize(("problem", "message"), [("rank65", "65 dimensions"), ("huge", "too large for a numpy array")])
def test_hostile_test_images_through_mnist_eval(tmp_path: Path, problem: str, message: str) -> None:
    bad = hostile_test_images(tmp_path, problem)
    result = CliRunner().invoke(app, ["eval", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1 and result.stderr.startswith(f"error: {bad}: "), result.output
    assert message in result.stderr and result.stderr.count("\n") == 1


def gzip_of_zeros(path: Path, header: bytes, zeros: int) -> Path:
    """A gzip file of `header` and then `zeros` zero bytes, written a chunk at a time (never all in memory)."""
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(header)
        for start in range(0, zeros, 1 << 22):
            f.write(bytes(min(1 << 22, zeros - start)))
    return path


def test_check_refuses_a_consistent_gzip_bomb_from_its_header(tmp_path: Path) -> None:
    """200000 x 28 x 28 of zeros (157 MB) in 150 KB: honest, but more than the caller wants; refused before inflating."""
    header = bytes([0, 0, 8, 3]) + np.asarray([200_000, 28, 28], dtype=">u4").tobytes()
    path = gzip_of_zeros(tmp_path / "bomb-idx3-ubyte.gz", header, 200_000 * 784)
    seen = []

    def check(dtype: np.dtype, shape: tuple[int, ...]) -> None:
        seen.append((dtype, shape))
        if shape[0] > 60_000:
            raise IdxError(path, f"{shape[0]} items, too many")

    tracemalloc.start()
    try:
        with pytest.raises(IdxError, match=r"bomb-idx3-ubyte\.gz: 200000 items, too many"):
            read_idx(path, check=check)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20 and seen == [(np.dtype(">u1"), (200_000, 28, 28))]


@pytest.mark.parametrize("gz", [False, True])
def test_check_sees_the_header_and_lets_good_files_through(tmp_path: Path, gz: bool) -> None:
    array = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    path = write_idx(tmp_path / ("a-idx3" + (".gz" if gz else "")), array)
    seen = []
    back = read_idx(path, check=lambda dtype, shape: seen.append((dtype.name, shape)))
    np.testing.assert_array_equal(back, array)
    assert seen == [("int16", (2, 3, 4))]


@pytest.mark.parametrize("gz", [False, True])
def test_decode_idx_reads_bytes_as_read_idx_reads_files(tmp_path: Path, gz: bool) -> None:
    array = np.arange(24, dtype=np.float32).reshape(4, 6)
    path = write_idx(tmp_path / ("a-idx2" + (".gz" if gz else "")), array)
    np.testing.assert_array_equal(decode_idx(path.read_bytes(), "http://mirror/a"), read_idx(path))
    with pytest.raises(IdxError, match=r"^http://mirror/a: truncated"):
        short = encode_idx(array)[:-1]
        decode_idx(gzip.compress(short) if gz else short, "http://mirror/a")
    assert idx_header(array.dtype, array.shape) == encode_idx(array)[:12]


def test_max_ndim_is_what_numpy_allows() -> None:
    np.empty((1,) * MAX_NDIM)
    with pytest.raises(ValueError):
        np.empty((1,) * (MAX_NDIM + 1))


def test_gzip_read_in_pieces_across_members_and_padding(tmp_path: Path) -> None:
    """Incompressible data larger than a first read (64 KiB), in members with zeros between them (gzip allows them),
    inflated in as few calls as the reads allow: the same bytes as the data written."""
    data = np.random.default_rng(0).integers(0, 256, (300, 28, 28), dtype=np.uint8)
    payload = encode_idx(data)
    cut = [0, 5, 70_000, 150_000, len(payload)]
    members = b"".join(gzip.compress(payload[a:b]) + bytes(3) for a, b in itertools.pairwise(cut))
    path = tmp_path / "pieces.gz"
    path.write_bytes(members)
    np.testing.assert_array_equal(read_idx(path), data)
    np.testing.assert_array_equal(decode_idx(members, "http://mirror/pieces"), data)


@pytest.mark.parametrize("damage", ["cut inside a member", "garbage after a member", "a flipped byte"])
def test_damaged_gzip_is_refused(tmp_path: Path, damage: str) -> None:
    payload = encode_idx(np.random.default_rng(1).integers(0, 256, (200, 28, 28), dtype=np.uint8))
    packed = gzip.compress(payload)
    if damage == "cut inside a member":
        packed = packed[: len(packed) // 2]
    elif damage == "garbage after a member":
        packed += b"not gzip at all"
    else:
        packed = packed[:1000] + bytes([packed[1000] ^ 0xFF]) + packed[1001:]
    path = tmp_path / "damaged.gz"
    path.write_bytes(packed)
    with pytest.raises(IdxError, match=r"damaged\.gz: broken gzip data"):
        read_idx(path)


def test_many_tiny_members_are_read(tmp_path: Path) -> None:
    """Thousands of empty members between the header and the data (gzip allows them): each costs in proportion to
    its own size, not to what follows it, and the data comes out whole."""
    data = np.arange(2000, dtype=np.uint8).reshape(2, 1000) % 251
    payload = encode_idx(data)
    empty = gzip.compress(b"", mtime=0)
    path = tmp_path / "members.gz"
    path.write_bytes(gzip.compress(payload[:12]) + empty * 5000 + gzip.compress(payload[12:]) + empty * 5000)
    np.testing.assert_array_equal(read_idx(path), data)
