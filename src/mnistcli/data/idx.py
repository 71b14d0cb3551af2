"""A strict, pure-numpy reader and writer for IDX files (the format MNIST ships in).

Layout (big-endian throughout): two zero bytes, a type code, the number of dimensions N, then N
uint32 sizes, then the data in C order. Files may be gzip-compressed; that is detected from the
content (the 1f 8b magic), not the file name. Raw files are memory-mapped, so opening the 47 MB
training images costs nothing until the pages are touched.

Every defect (wrong magic, unknown type code, sizes that disagree with the byte count, truncated
or trailing bytes, broken gzip) raises `IdxError` naming the file and the problem; torchvision's
reader asserts instead. This module never imports torch.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from mnistcli.atomic import atomic_write_bytes
from mnistcli.errors import IdxError

# Type code -> big-endian numpy dtype (the IDX spec's six types).
DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
CODES: dict[str, int] = {dt.newbyteorder("=").str[1:]: code for code, dt in DTYPES.items()}
GZIP_MAGIC = b"\x1f\x8b"


def _parse_header(path: Path, head: bytes, total: int) -> tuple[np.dtype, tuple[int, ...], int]:
    """Validate the header in `head` against a payload of `total` bytes; return dtype, shape, offset."""
    if len(head) < 4:
        raise IdxError(path, f"too short to be an IDX file ({total} bytes)")
    if head[0] != 0 or head[1] != 0:
        raise IdxError(path, f"not an IDX file (magic starts {head[:2].hex()}, expected 0000)")
    code, ndim = head[2], head[3]
    if code not in DTYPES:
        raise IdxError(path, f"unknown IDX type code 0x{code:02x}")
    offset = 4 + 4 * ndim
    if len(head) < offset:
        raise IdxError(path, f"truncated header: {ndim} dimensions need {offset} bytes, got {total}")
    shape = tuple(int(d) for d in np.frombuffer(head, dtype=">u4", count=ndim, offset=4))
    dtype = DTYPES[code]
    expected = offset + math.prod(shape) * dtype.itemsize  # Python ints: no overflow for huge dims
    dims = "x".join(map(str, shape)) or "scalar"
    if total < expected:
        raise IdxError(path, f"truncated: {dims} {dtype.name} needs {expected} bytes, file has {total}")
    if total > expected:
        raise IdxError(path, f"{total - expected} trailing bytes after {dims} {dtype.name} data")
    return dtype, shape, offset


def read_idx(path: str | os.PathLike[str], mmap: bool = True) -> np.ndarray:
    """Read an IDX file, raw or gzip-compressed.

    Returns an array of the file's dtype (big-endian for multi-byte types) and shape. Raw files
    are memory-mapped read-only unless `mmap` is False. Raises `IdxError` on any defect and
    `FileNotFoundError`'s cousin `IdxError` if the file cannot be opened.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(2)
            if magic == GZIP_MAGIC:
                f.seek(0)
                try:
                    data = gzip.GzipFile(fileobj=f).read()
                except (OSError, EOFError, zlib.error) as e:
                    raise IdxError(path, f"broken gzip data ({e})") from None
            else:
                data = None
                total = os.fstat(f.fileno()).st_size
                f.seek(0)
                head = f.read(4 + 4 * 255)
    except OSError as e:
        raise IdxError(path, f"cannot open ({e.strerror or e})") from None

    if data is not None:
        dtype, shape, offset = _parse_header(path, data[: 4 + 4 * 255], len(data))
        return np.frombuffer(data, dtype=dtype, offset=offset).reshape(shape)
    dtype, shape, offset = _parse_header(path, head, total)
    if mmap and math.prod(shape) > 0:
        return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
    return np.fromfile(path, dtype=dtype, offset=offset).reshape(shape)


def encode_idx(array: np.ndarray) -> bytes:
    """Return the IDX bytes (uncompressed) of `array`. Raises `ValueError` for unsupported dtypes."""
    array = np.asarray(array)
    key = array.dtype.newbyteorder("=").str[1:]
    if key not in CODES:
        raise ValueError(f"IDX cannot store dtype {array.dtype} (use uint8, int8, int16, int32, float32 or float64)")
    if array.ndim > 255:
        raise ValueError("IDX stores at most 255 dimensions")
    code = CODES[key]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(array, dtype=DTYPES[code]).tobytes()


def write_idx(path: str | os.PathLike[str], array: np.ndarray, compress: bool | None = None) -> Path:
    """Write `array` as an IDX file, atomically (temporary file, then rename).

    `compress` defaults to whether the name ends in `.gz`. Returns the path written.
    """
    path = Path(path)
    payload = encode_idx(array)
    if compress is None:
        compress = path.suffix == ".gz"
    if compress:
        payload = gzip.compress(payload, compresslevel=6, mtime=0)
    atomic_write_bytes(path, payload)
    return path
