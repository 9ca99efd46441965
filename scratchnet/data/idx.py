"""IDX files, the format MNIST ships in: read and write, gzipped or raw.

An IDX file is a 4-byte magic number ``00 00 TT NN`` (``TT`` the element
type, ``NN`` the number of dimensions), then ``NN`` big-endian uint32 sizes,
then the elements in row-major order, big-endian. MNIST's images are
``00 00 08 03`` (uint8, 3 dims: N, 28, 28) and its labels ``00 00 08 01``.
"""
from __future__ import annotations

import gzip
import os
import struct
import zlib

import numpy

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


class IdxError(ValueError):
    """An IDX file is malformed; the message names the file and what is wrong."""


def _read_bytes(path):
    with open(path, "rb") as f:
        data = f.read()
    # Decide by content, not by name: a file called .gz that was already
    # unpacked (or the reverse) is common after a manual download.
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (EOFError, OSError, zlib.error) as e:
            raise IdxError(f"read_idx: {path} is a broken gzip file ({e}); delete it and fetch it again") from None
    return data


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
        The magic number is wrong, a size is zero-dimensional nonsense, or the
        payload is shorter or longer than the header promises.
    """
    path = os.fspath(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise IdxError(f"read_idx: {path} is too short for an IDX header ({len(data)} bytes)")
    zero, type_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or type_code not in IDX_DTYPES:
        raise IdxError(
            f"read_idx: {path} has magic number 0x{data[:4].hex()}, not an IDX file "
            f"(expected 0x0000TTNN with type TT in {', '.join(f'0x{t:02x}' for t in IDX_DTYPES)})"
        )
    if ndim == 0:
        raise IdxError(f"read_idx: {path} declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxError(f"read_idx: {path} is truncated inside its header ({len(data)} bytes, header needs {header})")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = IDX_DTYPES[type_code]
    expected = int(numpy.prod(shape, dtype=numpy.int64)) * dtype.itemsize
    got = len(data) - header
    if got < expected:
        raise IdxError(
            f"read_idx: {path} is truncated: shape {shape} needs {expected} bytes of data, found {got}"
        )
    if got > expected:
        raise IdxError(
            f"read_idx: {path} has {got - expected} bytes after the data of shape {shape}; "
            "the header and the data disagree"
        )
    array = numpy.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


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
