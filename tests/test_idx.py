"""The IDX reader and writer: exact bytes, every type code, and every defect as a typed error."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mnistcli.data.idx import encode_idx, read_idx, write_idx
from mnistcli.errors import IdxError

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
    with pytest.raises(IdxError, match="cannot open"):
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
