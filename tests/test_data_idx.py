"""IDX files: what write_idx writes, read_idx reads back; malformed files fail naming the file."""
from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from scratchnet.data import IdxError, read_idx, write_idx


@pytest.mark.parametrize("name", ["images-idx3-ubyte", "images-idx3-ubyte.gz"])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
        np.array([-5, 0, 70000], dtype=np.int32),
        np.linspace(-1, 1, 6).reshape(2, 3),
        np.array([[-1, 2]], dtype=np.int16),
    ],
    ids=["uint8-3d", "int32-1d", "float64-2d", "int16-2d"],
)
def test_write_then_read_round_trips_raw_and_gzipped(tmp_path, array, name):
    path = tmp_path / name
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == array.dtype
    assert back.dtype.isnative
    np.testing.assert_array_equal(back, array)


def test_mnist_header_layout_is_big_endian_magic_then_sizes(tmp_path):
    path = tmp_path / "labels"
    write_idx(path, np.array([7, 2, 1], dtype=np.uint8))
    assert path.read_bytes() == bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1])


def test_gzip_is_recognised_by_content_not_by_file_name(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte"  # gzipped, but named as if unpacked
    path.write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 2, 4, 9])))
    np.testing.assert_array_equal(read_idx(path), [4, 9])


def test_wrong_magic_number_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "not-idx.gz"
    path.write_bytes(gzip.compress(b"PK\x03\x04" + bytes(20)))
    with pytest.raises(IdxError, match=r"not-idx\.gz has magic number 0x504b0304, not an IDX file"):
        read_idx(path)


def test_unknown_element_type_is_an_error(tmp_path):
    path = tmp_path / "bad-type"
    path.write_bytes(bytes([0, 0, 0x07, 1, 0, 0, 0, 1, 0]))
    with pytest.raises(IdxError, match="bad-type has magic number 0x00000701"):
        read_idx(path)


def test_zero_dimensions_is_an_error(tmp_path):
    path = tmp_path / "zero-dims"
    path.write_bytes(bytes([0, 0, 8, 0]))
    with pytest.raises(IdxError, match="zero-dims declares 0 dimensions"):
        read_idx(path)


def test_header_cut_short_is_an_error(tmp_path):
    path = tmp_path / "short-header"
    path.write_bytes(bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0]))
    with pytest.raises(IdxError, match="short-header is truncated inside its header"):
        read_idx(path)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_payload_shorter_than_the_header_promises_is_an_error(tmp_path, gz):
    payload = struct.pack(">HBB3I", 0, 8, 3, 2, 28, 28) + bytes(28 * 28 + 5)
    path = tmp_path / ("cut.gz" if gz else "cut")
    path.write_bytes(gzip.compress(payload) if gz else payload)
    match = r"cut(\.gz)? is truncated: shape \(2, 28, 28\) needs 1568 bytes of data, found 789"
    with pytest.raises(IdxError, match=match):
        read_idx(path)


def test_payload_longer_than_the_header_promises_is_an_error(tmp_path):
    path = tmp_path / "long"
    path.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 2, 1, 2, 3]))
    with pytest.raises(IdxError, match=r"long has 1 bytes after the data of shape \(2,\)"):
        read_idx(path)


def test_gzip_stream_cut_off_mid_file_is_an_error_naming_the_file(tmp_path):
    data = gzip.compress(struct.pack(">HBB1I", 0, 8, 1, 5000) + bytes(range(250)) * 20)
    path = tmp_path / "cut-stream.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(IdxError, match=r"cut-stream\.gz is a broken gzip file"):
        read_idx(path)


def test_write_idx_refuses_dtypes_idx_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match=r"write_idx: IDX cannot hold dtype int64 \(array: \(3,\)"):
        write_idx(tmp_path / "x", np.arange(3, dtype=np.int64))
