"""The archive format of checkpoints and exported models: a JSON header and named arrays, with a SHA-256 trailer.

File layout (:func:`write_archive`)::

    b"SNARCH1\\n" | header length (8 bytes, little-endian) | header (JSON, UTF-8)
    | array bytes | SHA-256 of all the preceding bytes (32 bytes)

- Every file is written to a temporary name, flushed to disk (``fsync``) and
  renamed over its final name (``os.replace`` is atomic): a process killed
  while writing leaves the previous file intact (and, at worst, a hidden
  ``.<name>.*.tmp`` file, never read, safe to delete).
- A truncated or corrupted file is detected by its checksum before anything
  is loaded.
- Nothing is unpickled: arrays are raw little-endian bytes read back with
  ``numpy.frombuffer``.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import struct

import numpy

MAGIC = b"SNARCH1\n"
_DIGEST = 32
# Plain numeric data only: booleans, integers, floats.
_DTYPE_KINDS = "biuf"


class CheckpointError(ValueError):
    """A checkpoint or exported model cannot be read (corrupt, truncated) or does not fit the model."""


def write_archive(path, meta, arrays):
    """Atomically write ``meta`` (JSON-serialisable) and named arrays to ``path``.

    Parameters
    ----------
    path : str
    meta : dict
    arrays : dict of str -> numpy.ndarray
        Numeric arrays (bool, int, float); stored little-endian, C order.
    """
    entries, chunks, offset = [], [], 0
    for name, a in arrays.items():
        a = numpy.asarray(a)
        if a.dtype.kind not in _DTYPE_KINDS:
            raise ValueError(f"write_archive: array {name!r} has dtype {a.dtype}; only numeric arrays can be stored")
        data = numpy.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()
        entries.append({"name": name, "dtype": a.dtype.newbyteorder("<").str, "shape": list(a.shape),
                        "offset": offset, "nbytes": len(data)})
        chunks.append(data)
        offset += len(data)
    header = json.dumps({"meta": meta, "arrays": entries}).encode("utf-8")
    digest = hashlib.sha256()

    def parts():
        yield MAGIC
        yield struct.pack("<Q", len(header))
        yield header
        yield from chunks

    def write(f):
        for part in parts():
            digest.update(part)
            f.write(part)
        f.write(digest.digest())

    atomic_write(path, write)


def read_archive(path):
    """Read and verify a file written by :func:`write_archive`.

    Returns
    -------
    meta : dict
    arrays : dict of str -> numpy.ndarray

    Raises
    ------
    CheckpointError
        The file is too short, is not an archive, or its checksum does not
        match (a truncated or corrupted file). Nothing is returned half-read.
    """
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path!r} does not exist") from None
    if len(blob) < len(MAGIC) + 8 + _DIGEST or not blob.startswith(MAGIC):
        raise CheckpointError(f"{path!r} is not a scratchnet checkpoint, or is truncated ({len(blob)} bytes)")
    body, trailer = blob[:-_DIGEST], blob[-_DIGEST:]
    if hashlib.sha256(body).digest() != trailer:
        raise CheckpointError(
            f"{path!r} is corrupt or truncated: its SHA-256 checksum does not match its contents ({len(blob)} bytes); "
            f"nothing was loaded"
        )
    (header_len,) = struct.unpack_from("<Q", body, len(MAGIC))
    start = len(MAGIC) + 8
    try:
        header = json.loads(body[start:start + header_len].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path!r} has an unreadable header ({e})") from None
    if not isinstance(header, dict) or not isinstance(header.get("arrays"), list) or "meta" not in header:
        raise CheckpointError(f"{path!r} has a header without 'meta' and 'arrays'")
    data = memoryview(body)[start + header_len:]
    arrays = {}
    for e in header["arrays"]:
        arrays[e["name"]] = _array_entry(path, e, data)
    return header["meta"], arrays


def _array_entry(path, e, data):
    """The array a header entry describes, checked against the bytes that hold it."""
    try:
        name, shape, offset, nbytes = e["name"], tuple(int(s) for s in e["shape"]), int(e["offset"]), int(e["nbytes"])
        dtype = numpy.dtype(e["dtype"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path!r}: a header entry is malformed ({type(err).__name__}: {err})") from None
    size = 1
    for s in shape:
        size *= s
    if (dtype.kind not in _DTYPE_KINDS or min(shape, default=0) < 0 or offset < 0
            or nbytes != size * dtype.itemsize or offset + nbytes > len(data)):
        raise CheckpointError(f"{path!r}: entry {name!r} is malformed (dtype {dtype}, shape {shape}, "
                              f"{nbytes} bytes at offset {offset} of {len(data)})")
    a = numpy.frombuffer(data, dtype=dtype, count=size, offset=offset)
    return a.reshape(shape).astype(dtype.newbyteorder("="), copy=True)


def atomic_write(path, write):
    """Write via ``write(file)`` to a temporary file beside ``path``, fsync, then rename over ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    # Mode 0o666 lets the umask decide, as for any other file the user writes.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory):
    # Makes the rename itself durable; not every platform can open a directory.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
