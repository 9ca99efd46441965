"""IDX files, the format MNIST ships in: read and write, gzipped or raw.

An IDX file is a 4-byte magic number ``00 00 TT NN`` (``TT`` the element
type, ``NN`` the number of dimensions), then ``NN`` big-endian uint32 sizes,
then the elements in row-major order, big-endian. MNIST's images are
``00 00 08 03`` (uint8, 3 dims: N, 28, 28) and its labels ``00 00 08 01``.

Reading trusts no declared size: the data a header declares is checked
against :data:`MAX_IDX_BYTES` and against what the file can hold before the
array is allocated, and the data is read in bounded chunks, never more than
declared plus one byte.
"""
from __future__ import annotations

import contextlib
import gzip
import math
import os
import stat
import struct
import zlib

import numpy

from .errors import DataError

# IDX type code -> big-endian element dtype.
IDX_DTYPES = {
    0x08: numpy.dtype(">u1"),
    0x09: numpy.dtype(">i1"),
    0x0B: numpy.dtype(">i2"),
    0x0C: numpy.dtype(">i4"),
    0x0D: numpy.dtype(">f4"),
    0x0E: numpy.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"

#: The most bytes of data one IDX file may declare (1 GiB). The largest IDX
#: data set in use, EMNIST ByClass, holds 0.55 GB of training images; a header
#: declaring more is refused before anything is allocated.
MAX_IDX_BYTES = 2**30
#: How many times its own size a gzipped IDX file may inflate to. MNIST's
#: files inflate 2 to 5 times (the training images, 9.9 MB, to 47 MB) and
#: Fashion-MNIST's 2 times; deflate can reach 1,032 times, which is how a
#: 2 MB "gzip bomb" becomes 2 GB. With 32, a file under 1 MB can make the
#: reader allocate at most 32 MB.
MAX_GZIP_RATIO = 32
#: What any gzipped IDX file may inflate to whatever its size (16 MiB), so
#: that small, very regular files (labels sorted by class, blank images)
#: are never refused by the ratio.
GZIP_FREE_BYTES = 16 * 2**20
#: Bytes read at a time (1 MiB): a stream is never read in one unbounded call.
CHUNK_BYTES = 2**20


class IdxError(DataError):
    """An IDX file is malformed; the message names the file and what is wrong."""


def read_idx_header(path):
    """``(dtype, shape)`` an IDX file declares, checked as :func:`read_idx` checks it, without reading the data.

    Lets a caller check what it is about to load (MNIST's counts and image
    size) before any of it is allocated.
    """
    path = os.fspath(path)
    with _opened(path) as (stream, size, gz):
        dtype, shape, _ = _read_header(stream, path, size, gz)
    return dtype.newbyteorder("="), shape


def read_idx(path):
    """Read an IDX file, gzipped or raw.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    array : ndarray of the shape stored in the header
        Native byte order; uint8 for MNIST.

    Raises
    ------
    IdxError
        The magic number is wrong, a size is zero-dimensional nonsense, the
        declared data exceeds :data:`MAX_IDX_BYTES` or what the file can hold
        (a gzip file: :data:`MAX_GZIP_RATIO`), the payload is shorter or
        longer than the header promises, or the gzip stream is broken.
    """
    path = os.fspath(path)
    with _opened(path) as (stream, size, gz):
        dtype, shape, header = _read_header(stream, path, size, gz)
        # The checks above bound this allocation; the bytes go straight into it.
        array = numpy.empty(shape, dtype=dtype)
        expected = array.nbytes
        got = _fill(stream, memoryview(array.reshape(-1).view(numpy.uint8)))
        if got < expected:
            raise IdxError(f"read_idx: {path} is truncated: shape {shape} needs {expected} bytes of data, found {got}")
        if stream.read(1):  # one byte more than declared is enough to know
            raise IdxError(f"read_idx: {path} has more bytes than the data of shape {shape}; "
                           "the header and the data disagree")
    if not dtype.isnative:  # big-endian bytes as read: swap them in place, no second copy
        array = array.byteswap(inplace=True).view(dtype.newbyteorder())
    return array


@contextlib.contextmanager
def _opened(path):
    """``(stream, file size or None, gzipped)``: the file's bytes, gunzipped when its content is gzip.

    Decides by content, not by name: a file called .gz that was already
    unpacked (or the reverse) is common after a manual download. A broken
    gzip stream, found at any read, becomes one :class:`IdxError`.
    """
    try:
        with open(path, "rb") as f:
            info = os.fstat(f.fileno())
            size = info.st_size if stat.S_ISREG(info.st_mode) else None  # a pipe has no length to check
            gz = f.peek(2)[:2] == _GZIP_MAGIC
            with gzip.GzipFile(fileobj=f, mode="rb") if gz else contextlib.nullcontext(f) as stream:
                yield stream, size, gz
    except IsADirectoryError:
        raise IdxError(f"read_idx: {path} is a folder, not an IDX file") from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise IdxError(f"read_idx: {path} is a broken gzip file ({e}); delete it and fetch it again") from None


def _read_header(stream, path, size, gz):
    """``(dtype, shape, header length)`` from the start of ``stream``, every declared size checked."""
    magic = stream.read(4)
    if len(magic) < 4:
        raise IdxError(f"read_idx: {path} is too short for an IDX header ({len(magic)} bytes)")
    zero, type_code, ndim = struct.unpack(">HBB", magic)
    if zero != 0 or type_code not in IDX_DTYPES:
        raise IdxError(
            f"read_idx: {path} has magic number 0x{magic.hex()}, not an IDX file "
            f"(expected 0x0000TTNN with type TT in {', '.join(f'0x{t:02x}' for t in IDX_DTYPES)})"
        )
    if ndim == 0:
        raise IdxError(f"read_idx: {path} declares 0 dimensions")
    header = 4 + 4 * ndim
    sizes = stream.read(4 * ndim)  # at most 1,020 bytes
    if len(sizes) < 4 * ndim:
        raise IdxError(f"read_idx: {path} is truncated inside its header ({4 + len(sizes)} bytes, header needs {header})")
    shape = struct.unpack(f">{ndim}I", sizes)
    dtype = IDX_DTYPES[type_code]
    _check_declared(path, shape, dtype, header, size, gz)
    return dtype, shape, header


def _check_declared(path, shape, dtype, header, size, gz):
    """Refuse data of ``shape`` that exceeds the cap or what a file of ``size`` bytes can hold."""
    expected = math.prod(shape) * dtype.itemsize  # exact: Python integers do not overflow
    if expected > MAX_IDX_BYTES:
        raise IdxError(f"read_idx: {path} declares shape {shape} of {dtype.name}, {expected:,} bytes of data, "
                       f"more than the {MAX_IDX_BYTES:,} an IDX file may hold (MAX_IDX_BYTES)")
    if size is None:
        return
    if not gz and header + expected != size:
        got = size - header
        if got < expected:
            raise IdxError(f"read_idx: {path} is truncated: shape {shape} needs {expected} bytes of data, found {got}")
        raise IdxError(f"read_idx: {path} has {got - expected} bytes after the data of shape {shape}; "
                       "the header and the data disagree")
    limit = max(GZIP_FREE_BYTES, MAX_GZIP_RATIO * size)
    if gz and header + expected > limit:
        raise IdxError(f"read_idx: {path} declares shape {shape}, {expected:,} bytes of data, but a gzip file of "
                       f"{size:,} bytes may inflate to at most {limit:,} (MAX_GZIP_RATIO = {MAX_GZIP_RATIO}); "
                       "refused as a likely gzip bomb")


def _fill(stream, buffer):
    """Read ``stream`` into ``buffer`` a chunk at a time until it is full or the stream ends; the bytes read."""
    got = 0
    while got < len(buffer):
        n = stream.readinto(buffer[got:got + CHUNK_BYTES])
        if not n:
            break
        got += n
    return got


def write_idx(path, array):
    """Write ``array`` as an IDX file, gzipped when ``path`` ends in ``.gz``.

    Parameters
    ----------
    path : str or os.PathLike
    array : array_like of a dtype IDX can hold (uint8, int8, int16, int32, float32, float64)
    """
    path = os.fspath(path)
    array = numpy.asarray(array)
    codes = {dt.newbyteorder("="): code for code, dt in IDX_DTYPES.items()}
    code = codes.get(array.dtype.newbyteorder("="))
    if code is None:
        raise ValueError(f"write_idx: IDX cannot hold dtype {array.dtype} (array: {array.shape}, file: {path})")
    if array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"write_idx: IDX holds 1 to 255 dimensions, got shape {array.shape} (file: {path})")
    header = struct.pack(f">HBB{array.ndim}I", 0, code, array.ndim, *array.shape)
    payload = header + numpy.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()
    if path.endswith(".gz"):
        payload = gzip.compress(payload, mtime=0)
    with open(path, "wb") as f:
        f.write(payload)
