"""A strict, pure-numpy reader and writer for IDX files (the format MNIST ships in).

Layout (big-endian throughout): two zero bytes, a type code, the number of dimensions N, then N
uint32 sizes, then the data in C order. Files may be gzip-compressed; that is detected from the
content (the 1f 8b magic), not the file name. Raw files are memory-mapped, so opening the 47 MB
training images costs nothing until the pages are touched.

Every defect (wrong magic, unknown type code, sizes that disagree with the byte count, truncated
or trailing bytes, broken gzip) raises `IdxError` naming the file and the problem; torchvision's
reader asserts instead. Hostile files cost no more than the header says: anything but a regular
file (a FIFO, a device) is refused before a byte is read, a header numpy cannot hold or that claims
more than the file can contain is refused from the header alone, and a gzip file is inflated only
up to the size its header gives (a gzip bomb stops there). This module never imports torch.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import re
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from mnistcli.atomic import atomic_write_bytes
from mnistcli.data.files import open_regular
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
# Deflate codes at best 258 bytes in 2 bits, so no gzip file inflates to more than 1032 times its size:
# a header claiming more than that is refused before anything is inflated.
MAX_GZIP_RATIO = 1032


def _max_ndim() -> int:
    """numpy's NPY_MAXDIMS (32 before numpy 2, 64 since), found by asking numpy rather than parsing its version."""
    for ndim in (64, 32):
        try:
            np.empty((1,) * ndim, dtype=np.uint8)
        except ValueError:
            continue
        return ndim
    return 32


MAX_NDIM = _max_ndim()
READ = 16 << 20  # compressed bytes read at a time at most: all of MNIST's largest file (9.9 MB) at once
READ_LEAST = 1 << 16  # and at least (a header's few bytes read as 64 KiB)
TRAILING_PEEK = 1 << 16  # past the data, inflate at most this much to count trailing bytes


def _describe(dtype: np.dtype, shape: tuple[int, ...]) -> str:
    return f"{'x'.join(map(str, shape)) or 'scalar'} {dtype.name}"


# check(dtype, shape): called with the header's before any data is read or inflated; raises to refuse the file.
HeaderCheck = Callable[[np.dtype, tuple[int, ...]], None]


def _read_header(
    path: str | os.PathLike[str], stream: BinaryIO | gzip.GzipFile, check: HeaderCheck | None = None
) -> tuple[np.dtype, tuple[int, ...], int]:
    """Read and check the header from the start of `stream`; return dtype, shape and the data's size in bytes.

    Refuses from the header alone what numpy cannot hold: more dimensions than it allows, or an
    empty array whose other sizes overflow it (a non-empty one that large is refused as truncated);
    then what the caller's `check` refuses.
    """
    head = stream.read(4)
    if len(head) < 4:
        raise IdxError(path, f"too short to be an IDX file ({len(head)} bytes)")
    if head[:2] == GZIP_MAGIC:
        raise IdxError(path, "compressed twice (gzip inside gzip): decompress it once")
    if head[0] != 0 or head[1] != 0:
        raise IdxError(path, f"not an IDX file (magic starts {head[:2].hex()}, expected 0000)")
    code, ndim = head[2], head[3]
    if code not in DTYPES:
        raise IdxError(path, f"unknown IDX type code 0x{code:02x}")
    if ndim > MAX_NDIM:
        raise IdxError(path, f"{ndim} dimensions (numpy arrays have at most {MAX_NDIM})")
    sizes = stream.read(4 * ndim)
    if len(sizes) < 4 * ndim:
        raise IdxError(path, f"truncated header: {ndim} dimensions need {4 + 4 * ndim} bytes, got {4 + len(sizes)}")
    shape = tuple(int(d) for d in np.frombuffer(sizes, dtype=">u4"))
    dtype = DTYPES[code]
    nbytes = math.prod(shape) * dtype.itemsize  # Python ints: no overflow for huge dims
    if nbytes == 0 and math.prod(d for d in shape if d) * dtype.itemsize > sys.maxsize:
        raise IdxError(path, f"{_describe(dtype, shape)} is too large for a numpy array, even empty")
    if check is not None:
        check(dtype, shape)
    return dtype, shape, nbytes


def _check_size(
    path: str | os.PathLike[str], dtype: np.dtype, shape: tuple[int, ...], total: int, expected: int, more: str = ""
) -> None:
    """Raise `IdxError` unless the file's `total` bytes are the `expected` ones (`more`: 'at least ' if total is a floor)."""
    if total < expected:
        raise IdxError(path, f"truncated: {_describe(dtype, shape)} needs {expected} bytes, file has {total}")
    if total > expected:
        raise IdxError(path, f"{more}{total - expected} trailing bytes after {_describe(dtype, shape)} data")


class _Inflated:
    """The inflated bytes of a gzip stream, `read` in a few large calls to zlib, each bounded.

    Each `read(n)` inflates at most `n` bytes (a gzip bomb stops there), over the members in turn (gzip's rule: a
    file may hold several, and zeros between them). The compressed file is read as much as is wanted inflated at a
    time (between `READ_LEAST` and `READ`: MNIST's largest file in one go, a bomb a little at a time); zlib is given
    it in pieces of at most `PIECE` bytes, from `FIRST_PIECE` at each member's start, doubling while the member
    goes on (zlib copies what a piece leaves over at a member's end, so a file of many tiny members costs in
    proportion to its size), and gives back at most `OUT_PIECE` bytes a call, copied straight into the caller's
    array. zlib releases the GIL while it inflates, so another thread runs meanwhile: the import of torch, while
    data/prefetch.py reads MNIST. Raises `EOFError` if the stream ends inside a member, `zlib.error` if it is not
    gzip or fails its CRC or length check (zlib, unlike Python's gzip module, also refuses a header with reserved
    flags set or a wrong header CRC, as RFC 1952 asks).
    """

    FIRST_PIECE, PIECE, OUT_PIECE = 1 << 10, 1 << 20, 4 << 20

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.member = zlib.decompressobj(wbits=31)  # gzip's wrapper: header, CRC32 and length checked
        self.buffer, self.at = b"", 0  # compressed bytes read, and how far zlib has taken them
        self.piece = self.FIRST_PIECE

    def read(self, n: int) -> bytes:
        """At most `n` inflated bytes (fewer only at the end of the stream)."""
        parts: list[bytes] = []
        self._inflate(n, parts.append)
        return b"".join(parts)

    def readinto(self, view: np.ndarray) -> int:
        """Inflate into `view` (uint8) until it is full or the stream ends; the bytes written."""
        done = 0

        def put(part: bytes) -> None:
            nonlocal done
            np.copyto(view[done : done + len(part)], np.frombuffer(part, dtype=np.uint8))  # without the GIL
            done += len(part)

        self._inflate(len(view), put)
        return done

    def _inflate(self, n: int, put: Callable[[bytes], None]) -> None:
        """Inflate at most `n` bytes, giving each part to `put`."""
        while n > 0:
            if self.member.eof:  # a member ended: another may follow, after zeros
                if not self._next_member(n):
                    return  # the end of the file, after a whole member
            if self.at == len(self.buffer):
                self.buffer, self.at = self._more(n), 0
                if not self.buffer:
                    raise EOFError("compressed file ended before the end-of-stream marker was reached")
            given = memoryview(self.buffer)[self.at : self.at + self.piece]
            part = self.member.decompress(given, min(n, self.OUT_PIECE))
            left = self.member.unused_data if self.member.eof else self.member.unconsumed_tail
            self.at += len(given) - len(left)
            self.piece = min(2 * self.piece, self.PIECE)
            n -= len(part)
            put(part)
            del part  # before zlib makes the next one

    def _next_member(self, wanted: int) -> bool:
        """Skip the zeros after a member; whether another member follows (then zlib is ready for it)."""
        while (found := _NONZERO.search(self.buffer, self.at)) is None:
            self.buffer, self.at = self._more(wanted), 0
            if not self.buffer:
                return False
        self.at = found.start()
        self.member, self.piece = zlib.decompressobj(wbits=31), self.FIRST_PIECE
        return True

    def _more(self, wanted: int) -> bytes:
        return self.f.read(min(READ, max(wanted, READ_LEAST)))


_NONZERO = re.compile(rb"[^\x00]")


def _read_gzip(path: str | os.PathLike[str], f: BinaryIO, check: HeaderCheck | None, compressed: int) -> np.ndarray:
    """Inflate a gzip IDX file no further than its header says, plus a peek for trailing bytes.

    So a gzip bomb (a small header followed by gigabytes of zeros) costs a few MB to refuse, and a
    header claiming more than the file can inflate to is refused before inflating anything.
    Multi-member files are read whole (gzip's own rule); gzip inside gzip is refused. A header that
    is consistent but larger than the caller wants is for `check` to refuse: a 2 MB file of zeros
    may honestly claim 2 GB.
    """
    f.seek(0)
    gz = _Inflated(f)
    try:
        dtype, shape, nbytes = _read_header(path, gz, check)  # type: ignore[arg-type]  # read() is all it uses
        expected = 4 + 4 * len(shape) + nbytes
        if expected > compressed * MAX_GZIP_RATIO:
            raise IdxError(
                path,
                f"truncated: {_describe(dtype, shape)} needs {expected} bytes, "
                f"more than {compressed} bytes of gzip can hold",
            )
        try:
            data = np.empty(nbytes, dtype=np.uint8)
            done = gz.readinto(data)
        except MemoryError:
            raise IdxError(path, f"{_describe(dtype, shape)} needs {nbytes} bytes: more than fits in memory") from None
        trailing = len(gz.read(TRAILING_PEEK)) if done == nbytes else 0  # reaching the end checks the CRC
    except (OSError, EOFError, zlib.error) as e:
        raise IdxError(path, f"broken gzip data ({e})") from None
    more = "at least " if trailing == TRAILING_PEEK else ""
    _check_size(path, dtype, shape, expected - nbytes + done + trailing, expected, more)
    return data.view(dtype).reshape(shape)


def read_idx(path: str | os.PathLike[str], mmap: bool = True, check: HeaderCheck | None = None) -> np.ndarray:
    """Read an IDX file, raw or gzip-compressed.

    Returns an array of the file's dtype (big-endian for multi-byte types) and shape. Raw files
    are memory-mapped read-only unless `mmap` is False. `check(dtype, shape)`, if given, is called
    right after the header, before any data is read or inflated, and may raise to refuse the file
    (what it raises propagates): so a caller that knows what it expects (MNIST's 28x28 images, as
    many as there are labels) pays nothing for a file that claims more. Raises `IdxError` on any
    defect, if the file cannot be opened, or if it is not a regular file (a FIFO, a device, a folder).
    """
    path = Path(path)
    with open_regular(path, IdxError) as f:
        try:
            if f.read(2) == GZIP_MAGIC:
                return _read_gzip(path, f, check, os.fstat(f.fileno()).st_size)
            f.seek(0)
            dtype, shape, nbytes = _read_header(path, f, check)
            offset = f.tell()
            _check_size(path, dtype, shape, os.fstat(f.fileno()).st_size, offset + nbytes)
            if nbytes == 0:
                return np.empty(shape, dtype=dtype)
            if mmap:
                return np.memmap(f, dtype=dtype, mode="r", offset=offset, shape=shape)
            data = np.fromfile(f, dtype=dtype, count=math.prod(shape))
        except (OSError, ValueError) as e:  # the file changed or failed under us after its size was checked
            raise IdxError(path, f"cannot read ({e})") from None
    if data.size != math.prod(shape):
        raise IdxError(path, f"truncated: {_describe(dtype, shape)} data ends after {data.nbytes} bytes")
    return data.reshape(shape)


def decode_idx(data: bytes, name: str | os.PathLike[str], check: HeaderCheck | None = None) -> np.ndarray:
    """Decode the bytes of an IDX file held in memory (a download), raw or gzip, exactly as `read_idx` reads a file.

    `name` (a URL, say) names the bytes in errors; `check` is as for `read_idx`, so gzip is
    inflated only up to what the header says and `check` allows. Returns a read-only array.
    Raises `IdxError` on any defect.
    """
    if data[:2] == GZIP_MAGIC:
        return _read_gzip(name, io.BytesIO(data), check, len(data))
    dtype, shape, nbytes = _read_header(name, io.BytesIO(data), check)
    offset = 4 + 4 * len(shape)
    _check_size(name, dtype, shape, len(data), offset + nbytes)
    return np.frombuffer(data, dtype=np.uint8, count=nbytes, offset=offset).view(dtype).reshape(shape)


def idx_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """The IDX header of an array of `dtype` and `shape` (it depends on nothing else: one header per array)."""
    key = np.dtype(dtype).newbyteorder("=").str[1:]
    if key not in CODES:
        raise ValueError(f"IDX cannot store dtype {dtype} (use uint8, int8, int16, int32, float32 or float64)")
    if len(shape) > 255:
        raise ValueError("IDX stores at most 255 dimensions")
    return bytes([0, 0, CODES[key], len(shape)]) + np.asarray(shape, dtype=">u4").tobytes()


def encode_idx(array: np.ndarray) -> bytes:
    """Return the IDX bytes (uncompressed) of `array`. Raises `ValueError` for unsupported dtypes."""
    array = np.asarray(array)
    header = idx_header(array.dtype, array.shape)
    return header + np.ascontiguousarray(array, dtype=DTYPES[header[2]]).tobytes()


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
