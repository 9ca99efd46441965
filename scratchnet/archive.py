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
import math
import os
import secrets
import stat
import struct

import numpy

MAGIC = b"SNARCH1\n"
_DIGEST = 32
_PREFIX = len(MAGIC) + 8  # the magic and the header length
#: The dtypes an array may have, as :func:`write_archive` writes them: plain
#: numeric data (booleans, integers, floats), little-endian. Nothing else is
#: read back, so a crafted entry cannot name an object, string or sub-array dtype.
DTYPES = frozenset(numpy.dtype(t).newbyteorder("<").str
                   for t in ("?", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8"))
#: The longest header read (16 MiB). A header lists each array (about 150
#: bytes) and, in an exported model, the layers' configs: a few KB for the
#: seed models, about 1.5 MB for ten thousand arrays. safetensors caps its
#: header at 100 MB; 16 MiB leaves room to spare, and a crafted length field
#: can no longer make the reader parse gigabytes of "header".
MAX_HEADER_BYTES = 16 * 2**20
#: The deepest nesting of lists and objects a header may have. The files
#: this code writes nest about 7 levels deep (an exported Sequential inside a
#: Sequential adds 4); JSON nested thousands deep would make the parser, and
#: any code that walks the header, fail with a RecursionError.
MAX_HEADER_DEPTH = 64
#: The most dimensions an array may have (NumPy's own limit is 64).
MAX_NDIM = 32


class CheckpointError(ValueError):
    """A checkpoint or exported model cannot be read (corrupt, truncated, crafted) or does not fit the model.

    The message names the file and, for a malformed header, the field.
    """


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
        if a.dtype.newbyteorder("<").str not in DTYPES:
            raise ValueError(f"write_archive: array {name!r} has dtype {a.dtype}; only numeric arrays "
                             f"(bool, int8-64, uint8-64, float16-64) can be stored")
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

    Every size the file declares (the header's length, each array's shape,
    offset and byte count) is checked against the file's own length and the
    caps above before anything is allocated from it, as safetensors checks
    its header.

    Returns
    -------
    meta : dict
    arrays : dict of str -> numpy.ndarray

    Raises
    ------
    CheckpointError
        The file cannot be read, is too short, is not an archive, its
        checksum does not match (a truncated or corrupted file), or its
        header is malformed; the message names the file and the field.
        Nothing is returned half-read.
    """
    blob = _read_file(path)
    if len(blob) < _PREFIX + _DIGEST or not blob.startswith(MAGIC):
        raise CheckpointError(f"{path!r} is not a scratchnet checkpoint, or is truncated ({len(blob)} bytes)")
    body, trailer = memoryview(blob)[:-_DIGEST], blob[-_DIGEST:]
    if hashlib.sha256(body).digest() != trailer:
        raise CheckpointError(
            f"{path!r} is corrupt or truncated: its SHA-256 checksum does not match its contents ({len(blob)} bytes); "
            f"nothing was loaded"
        )
    header, data = _split_header(path, body)
    arrays = {}
    for i, entry in enumerate(header["arrays"]):
        name, array = _array_entry(path, i, entry, data, arrays)
        arrays[name] = array
    _check_no_overlap(path, header["arrays"])
    return header["meta"], arrays


def _read_file(path):
    """The bytes of ``path``, which must be a regular file (a folder, a device or a pipe is refused)."""
    try:
        with open(path, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise CheckpointError(f"{path!r} is not a regular file, so it is not a checkpoint")
            return f.read()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path!r} does not exist") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path!r} is a folder, not a checkpoint file") from None
    except OSError as e:
        raise CheckpointError(f"{path!r} cannot be read ({e.strerror or e})") from None


def _split_header(path, body):
    """The parsed header (``{"meta": dict, "arrays": list}``) and a view of the array bytes after it."""
    (header_len,) = struct.unpack_from("<Q", body, len(MAGIC))
    room = len(body) - _PREFIX
    if header_len > room:
        raise CheckpointError(f"{path!r}: header field 'header length' declares {header_len:,} bytes, "
                              f"but only {room:,} bytes follow it in the file")
    if header_len > MAX_HEADER_BYTES:
        raise CheckpointError(f"{path!r}: header field 'header length' declares {header_len:,} bytes, "
                              f"more than the {MAX_HEADER_BYTES:,} a header may take")
    try:
        header = json.loads(bytes(body[_PREFIX:_PREFIX + header_len]).decode("utf-8"))
    except RecursionError:
        raise CheckpointError(f"{path!r} has an unreadable header (nested too deeply)") from None
    except ValueError as e:  # not UTF-8, not JSON, or an integer of thousands of digits
        raise CheckpointError(f"{path!r} has an unreadable header ({e})") from None
    if not isinstance(header, dict) or not isinstance(header.get("arrays"), list) \
            or not isinstance(header.get("meta"), dict):
        raise CheckpointError(f"{path!r} has a header without 'meta' and 'arrays' (an object and a list)")
    depth = _depth(header)
    if depth > MAX_HEADER_DEPTH:
        raise CheckpointError(f"{path!r}: the header is nested {depth} levels deep, more than the "
                              f"{MAX_HEADER_DEPTH} a scratchnet header may have")
    return header, body[_PREFIX + header_len:]


def _depth(value):
    """How deeply ``value`` (parsed JSON) nests lists and objects; walked without recursion."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        value, level = todo.pop()
        if isinstance(value, (dict, list)):
            deepest = max(deepest, level)
            todo.extend((v, level + 1) for v in (value.values() if isinstance(value, dict) else value))
    return deepest


def _is_count(value):
    """A non-negative JSON integer (a bool is not one, though Python says it is an int)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _array_entry(path, i, e, data, seen):
    """``(name, array)`` of header entry ``i``, each field checked against the bytes that hold it.

    ``seen`` holds the arrays read so far, so that a name used twice is refused.
    """
    def bad(field, problem):
        name = e.get("name") if isinstance(e, dict) else None
        which = f"arrays[{i}]" + (f" ({name!r})" if isinstance(name, str) else "")
        return CheckpointError(f"{path!r}: header entry {which} is malformed: field {field!r} {problem}")

    if not isinstance(e, dict):
        raise bad("entry", f"must be an object, got {type(e).__name__}")
    for field in ("name", "dtype", "shape", "offset", "nbytes"):
        if field not in e:
            raise bad(field, "is missing")
    name, dtype, shape, offset, nbytes = e["name"], e["dtype"], e["shape"], e["offset"], e["nbytes"]
    if not isinstance(name, str) or not name:
        raise bad("name", f"must be a non-empty string, got {name!r}")
    if name in seen:
        raise bad("name", "is used by an earlier entry too; each array has one name")
    if dtype not in DTYPES:
        raise bad("dtype", f"is {dtype!r}; an array holds one of {', '.join(sorted(DTYPES))}")
    if not isinstance(shape, list) or len(shape) > MAX_NDIM or not all(_is_count(s) for s in shape):
        raise bad("shape", f"must be a list of at most {MAX_NDIM} non-negative integers, got {shape!r}")
    for field, value in (("offset", offset), ("nbytes", nbytes)):
        if not _is_count(value):
            raise bad(field, f"must be a non-negative integer, got {value!r}")
    dtype = numpy.dtype(dtype)
    size = math.prod(shape)  # exact: Python integers do not overflow
    if nbytes != size * dtype.itemsize:
        raise bad("nbytes", f"is {nbytes:,}, but shape {tuple(shape)} of {dtype} takes {size * dtype.itemsize:,}")
    if offset + nbytes > len(data):
        raise bad("offset", f"puts {nbytes:,} bytes at {offset:,}, past the end of the {len(data):,} bytes of data")
    a = numpy.frombuffer(data, dtype=dtype, count=size, offset=offset)
    return name, a.reshape(shape).astype(dtype.newbyteorder("="), copy=True)


def _check_no_overlap(path, entries):
    """Refuse two arrays that share bytes: a crafted header could make one array read another's data."""
    spans = sorted((e["offset"], e["offset"] + e["nbytes"], e["name"]) for e in entries if e["nbytes"])
    for (_, end, first), (start, _, second) in zip(spans, spans[1:]):
        if start < end:
            raise CheckpointError(f"{path!r}: header entries {first!r} and {second!r} are malformed: "
                                  f"field 'offset' makes them share bytes ({second!r} starts at byte {start:,}, "
                                  f"before {first!r} ends at {end:,})")


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
