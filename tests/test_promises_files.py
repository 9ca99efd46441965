"""Bounds before allocation: every size a file declares is checked against the file and a stated cap first.

Archives (checkpoints, exported models), IDX files and texts are read by the
rule safetensors applies to its header: a crafted or damaged file is one
clear error naming the file and the field (``CheckpointError`` or
``DataError``), never a traceback, a wrong array or gigabytes of memory.
The last tests hold the promise "no load of a crafted file of under 1 MB
takes more than 100 MB of memory", each load in a child process.
"""
from __future__ import annotations

import copy
import gzip
import hashlib
import json
import os
import struct
import subprocess
import sys
import textwrap
import time
import zlib

import numpy as np
import pytest

import scratchnet as sn
from scratchnet import archive
from scratchnet.archive import CheckpointError, read_archive, write_archive
from scratchnet.data import (DataError, IdxError, MnistUnavailable, idx, load_mnist, load_text, mnist, read_idx,
                             sample, text, write_idx)
from scratchnet.zoo import language_model

L = sn.layers


@pytest.fixture(autouse=True)
def reference_backend():
    with sn.use_backend("numpy"):
        yield


# ---------------------------------------------------------------------------
# Crafted files


def forge_archive(path, header, data=b"", header_len=None):
    """An archive around ``header`` (any JSON value, or raw bytes) with a valid checksum, as an attacker can write."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    body = archive.MAGIC + struct.pack("<Q", len(raw) if header_len is None else header_len) + raw + data
    with open(path, "wb") as f:
        f.write(body + hashlib.sha256(body).digest())
    return str(path)


def _entry(name="a", dtype="<f4", shape=(2,), offset=0, nbytes=8):
    return {"name": name, "dtype": dtype, "shape": list(shape) if isinstance(shape, tuple) else shape,
            "offset": offset, "nbytes": nbytes}


def _nested(depth):
    """``[[[...]]]`` ``depth`` levels deep, as JSON text (a Python list this deep could not be dumped)."""
    return "[" * depth + "]" * depth


def exported(tmp_path, edit=None, name="model.snm"):
    """An exported two-layer MLP, its header edited by ``edit(meta, arrays)``."""
    sn.random.seed(0)
    model = sn.Sequential([L.Dense(4, activation="relu"), L.Dense(3)], name="mlp")
    model.build((None, 5))
    path = str(tmp_path / name)
    sn.export.save_model(model, path)
    if edit is not None:
        meta, arrays = read_archive(path)
        edit(meta, arrays)
        write_archive(path, meta, arrays)
    return path


def wide_activation_export(tmp_path, layer, input_shape, kernel_shape, name="wide-activation.snm"):
    """An export whose one weight matches the file, but whose build pass would make a huge activation."""
    def edit(meta, arrays):
        meta["model"]["config"]["layers"] = [layer]
        meta["input_shape"] = input_shape
        meta["weights"] = [f"{layer['config']['name']}/kernel"]
        arrays.clear()
        arrays["weight_0"] = np.zeros(kernel_shape, np.float32)
    return exported(tmp_path, edit, name)


WIDE_DENSE = ({"class_name": "Dense", "config": {"name": "wide", "units": 200_000, "use_bias": False}},
              [None, 1000, 1], (1, 200_000))
WIDE_CONV = ({"class_name": "Conv2D", "config": {"name": "wide", "filters": 1000, "kernel_size": 3, "padding": "same",
                                                  "use_bias": False}}, [None, 1024, 1024, 1], (3, 3, 1, 1000))


def _layer_config(meta, i):
    return meta["model"]["config"]["layers"][i]["config"]


def gzip_zeros(path, header, n_mib):
    """A gzip file of ``header`` then ``n_mib`` MiB of zeros, about 1 KB per MiB: a gzip bomb, made in a second.

    Each MiB of zeros after a full flush deflates to the same block, so the
    block is repeated instead of compressing gigabytes.
    """
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = c.compress(header) + c.flush(zlib.Z_FULL_FLUSH)
    zeros = bytes(2**20)
    block = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    crc = zlib.crc32(header)
    for _ in range(n_mib):
        crc = zlib.crc32(zeros, crc)
    size = (len(header) + n_mib * 2**20) % 2**32
    with open(path, "wb") as f:
        f.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + first)
        for _ in range(n_mib):
            f.write(block)
        f.write(c.flush() + struct.pack("<II", crc, size))
    return str(path)


def test_the_bomb_maker_makes_a_valid_gzip_file(tmp_path):
    path = gzip_zeros(tmp_path / "small.gz", b"head", 3)
    assert gzip.decompress(open(path, "rb").read()) == b"head" + bytes(3 * 2**20)


# ---------------------------------------------------------------------------
# Archives: every field of the header checked against the bytes


ARCHIVES = {
    # (header, data, field named in the message)
    "shape a string read as digits": ({"meta": {}, "arrays": [_entry(shape="12", nbytes=8)]}, bytes(8), "shape"),
    "shape negative": ({"meta": {}, "arrays": [_entry(shape=[-1, -2], nbytes=8)]}, bytes(8), "shape"),
    "shape of booleans": ({"meta": {}, "arrays": [_entry(shape=[True, True], nbytes=4)]}, bytes(8), "shape"),
    "shape of floats": ({"meta": {}, "arrays": [_entry(shape=[2.0], nbytes=8)]}, bytes(8), "shape"),
    "shape huge": ({"meta": {}, "arrays": [_entry(shape=[2**40, 2**40], nbytes=8)]}, bytes(8), "nbytes"),
    "shape of 100 axes": ({"meta": {}, "arrays": [_entry(shape=[1] * 100, nbytes=4)]}, bytes(8), "shape"),
    "nbytes huge, past the end": ({"meta": {}, "arrays": [_entry(shape=[2**59], dtype="<f8", nbytes=2**62)]},
                                  bytes(8), "offset"),
    "offset past the end": ({"meta": {}, "arrays": [_entry(offset=100)]}, bytes(8), "offset"),
    "offset negative": ({"meta": {}, "arrays": [_entry(offset=-4)]}, bytes(8), "offset"),
    "offset a string": ({"meta": {}, "arrays": [_entry(offset="0")]}, bytes(8), "offset"),
    "names used twice": ({"meta": {}, "arrays": [_entry(), _entry(offset=8)]}, bytes(16), "name"),
    "name a number": ({"meta": {}, "arrays": [_entry(name=3)]}, bytes(8), "name"),
    "name empty": ({"meta": {}, "arrays": [_entry(name="")]}, bytes(8), "name"),
    "arrays overlapping": ({"meta": {}, "arrays": [_entry("a"), _entry("b", offset=4)]}, bytes(16), "offset"),
    "dtype object": ({"meta": {}, "arrays": [_entry(dtype="|O", nbytes=16)]}, bytes(16), "dtype"),
    "dtype sub-array": ({"meta": {}, "arrays": [_entry(dtype="(1000000,)<f8", shape=[1], nbytes=8)]}, bytes(8),
                        "dtype"),
    "dtype complex": ({"meta": {}, "arrays": [_entry(dtype="<c8", nbytes=16)]}, bytes(16), "dtype"),
    "dtype text": ({"meta": {}, "arrays": [_entry(dtype="<U1", nbytes=8)]}, bytes(8), "dtype"),
    "dtype big-endian": ({"meta": {}, "arrays": [_entry(dtype=">f4")]}, bytes(8), "dtype"),
    "dtype a number": ({"meta": {}, "arrays": [_entry(dtype=4)]}, bytes(8), "dtype"),
    "entry a list": ({"meta": {}, "arrays": [[1, 2]]}, bytes(8), "entry"),
    "entry without nbytes": ({"meta": {}, "arrays": [{"name": "a", "dtype": "<f4", "shape": [2], "offset": 0}]},
                             bytes(8), "nbytes"),
    "meta a list": ({"meta": [], "arrays": []}, b"", "meta"),
    "arrays an object": ({"meta": {}, "arrays": {}}, b"", "arrays"),
    "a list for a header": ([1, 2], b"", "meta"),
    "nested 100,000 deep": (f'{{"meta": {{"x": {_nested(100_000)}}}, "arrays": []}}'.encode(), b"", "nested"),
    "nested 200 deep": (f'{{"meta": {{"x": {_nested(200)}}}, "arrays": []}}'.encode(), b"", "nested"),
    "an integer of 5,000 digits": (b'{"meta": {"step": ' + b"9" * 5000 + b'}, "arrays": []}', b"", "header"),
    "not UTF-8": (b'{"meta": {"a": "\xff"}, "arrays": []}', b"", "header"),
}


@pytest.mark.parametrize("case", sorted(ARCHIVES))
def test_a_crafted_archive_header_is_one_checkpoint_error_naming_file_and_field(case, tmp_path):
    header, data, field = ARCHIVES[case]
    path = forge_archive(tmp_path / "crafted", header, data)
    with pytest.raises(CheckpointError) as err:
        read_archive(path)
    assert path in str(err.value) and field in str(err.value), str(err.value)


@pytest.mark.parametrize("header_len", [2**40, 2**64 - 1, 100])
def test_a_header_length_beyond_the_file_is_refused_before_it_is_read(tmp_path, header_len):
    path = forge_archive(tmp_path / "long-header", {"meta": {}, "arrays": []}, header_len=header_len)
    with pytest.raises(CheckpointError, match="header field 'header length' declares .* but only .* follow"):
        read_archive(path)


def test_a_header_longer_than_the_cap_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(archive, "MAX_HEADER_BYTES", 1000)
    path = forge_archive(tmp_path / "big-header", {"meta": {"pad": "x" * 2000}, "arrays": []})
    with pytest.raises(CheckpointError, match=r"declares 2,0\d\d bytes, more than the 1,000 a header may take"):
        read_archive(path)


def test_a_folder_or_a_device_is_refused_without_reading_it(tmp_path):
    with pytest.raises(CheckpointError, match="is a folder, not a checkpoint file"):
        read_archive(str(tmp_path))
    with pytest.raises(CheckpointError, match="'/dev/zero' is not a regular file"):
        read_archive("/dev/zero")  # read to the end, it never ends


def test_a_well_formed_archive_still_reads_back_exactly(tmp_path):
    arrays = {"f": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([True, False]),
              "i": np.array(-3, dtype=np.int64), "empty": np.zeros((0, 4), np.float16)}
    write_archive(str(tmp_path / "ok"), {"k": [1, {"x": None}]}, arrays)
    meta, back = read_archive(str(tmp_path / "ok"))
    assert meta == {"k": [1, {"x": None}]}
    for name, a in arrays.items():
        assert back[name].dtype == a.dtype and back[name].shape == a.shape and np.array_equal(back[name], a)


# ---------------------------------------------------------------------------
# Checkpoints read without a model


def _checkpoint(tmp_path, edit):
    model = sn.Sequential([L.Dense(3, name="fc")])
    model.build((None, 2))
    path = sn.Checkpoint(model).save(str(tmp_path / "ckpt"), step=1)
    meta, arrays = read_archive(path)
    edit(meta, arrays)
    write_archive(path, meta, arrays)
    return path


@pytest.mark.parametrize("edit, field", [
    (lambda meta, arrays: meta.pop("weights"), "'weights'"),
    (lambda meta, arrays: meta.update(ema=[]), "'ema'"),
    (lambda meta, arrays: meta.update(weights=["fc/kernel", "fc/kernel"]), "names a weight twice"),
    (lambda meta, arrays: arrays.update({"fc/kernel": arrays["fc/kernel"].astype(np.int32)}), "not floats"),
], ids=["weights missing", "ema a list", "weights twice", "integer weights"])
def test_list_and_load_variables_refuse_a_crafted_header_with_a_checkpoint_error(tmp_path, edit, field):
    path = _checkpoint(tmp_path, edit)
    for read in (sn.checkpoint.list_variables, sn.checkpoint.load_variables):
        with pytest.raises(CheckpointError, match=field):
            read(path)


# ---------------------------------------------------------------------------
# Exported models: the weights a config implies, checked against the file before they are allocated


def test_an_export_declaring_12000_units_is_refused_at_once_naming_the_layer_and_the_field(tmp_path):
    def widen(meta, arrays):
        _layer_config(meta, 0)["units"] = 12000
        _layer_config(meta, 1)["units"] = 12000

    path = exported(tmp_path, widen)
    assert os.path.getsize(path) < 2000
    start = time.perf_counter()
    with pytest.raises(CheckpointError) as err:
        sn.export.load_model(path)
    # Before: 1.7 GB and 4.9 s of random weights, then a shape error.
    assert time.perf_counter() - start < 1.0
    message = str(err.value)
    assert path in message and "layer 'dense' (units=12000)" in message
    assert "weight 'dense/kernel' of shape (5, 12000)" in message and "stores it with shape (5, 4)" in message


@pytest.mark.parametrize("case", [WIDE_DENSE, WIDE_CONV], ids=["dense 200,000 units on 1,000 steps",
                                                                 "conv of 1,000 filters on 1024 x 1024"])
def test_an_export_whose_build_pass_would_make_a_huge_activation_is_refused_first(tmp_path, case):
    path = wide_activation_export(tmp_path, *case)
    assert os.path.getsize(path) < 2**20
    with pytest.raises(CheckpointError, match=r"layer 'wide' .* would make [\d,]+ numbers for one example of header "
                                              r"field 'input_shape' .* more than the 4,194,304"):
        sn.export.load_model(path)


def _set_field(field, value):
    def edit(meta, arrays):
        meta[field] = value
    return edit


def _set_layer(i, key, value):
    def edit(meta, arrays):
        _layer_config(meta, i)[key] = value
    return edit


EXPORTS = {
    "model missing": (lambda meta, arrays: meta.pop("model"), "'model'"),
    "model a list": (_set_field("model", [1]), "'model'"),
    "model of an unknown class": (_set_field("model", {"class_name": "Nope", "config": {}}), "'model'"),
    "model class a list": (_set_field("model", {"class_name": ["Sequential"], "config": {}}), "'model'"),
    "model config a list": (_set_field("model", {"class_name": "Sequential", "config": [1]}), "'model'"),
    "model a lone Dense": (_set_field("model", {"class_name": "Dense", "config": {"units": 3}}), "'model'"),
    "layers missing": (lambda meta, arrays: meta["model"]["config"].pop("layers"), "'model'"),
    "a layer argument unknown": (_set_layer(0, "colour", "red"), "'model'"),
    "units a string": (_set_layer(0, "units", "4"), "'model'"),
    "units negative": (_set_layer(0, "units", -4), "'model'"),
    "units 50,000 (20 GB)": (lambda meta, arrays: [_set_layer(i, "units", 50_000)(meta, arrays) for i in (0, 1)],
                             "units=50000"),
    "a layer more than the file holds": (lambda meta, arrays: meta["model"]["config"]["layers"].append(
        {"class_name": "Dense", "config": {"units": 2, "name": "extra"}}), "stores no weight"),
    "input_shape missing": (lambda meta, arrays: meta.pop("input_shape"), "'input_shape'"),
    "input_shape a string": (_set_field("input_shape", "12"), "'input_shape'"),
    "input_shape negative": (_set_field("input_shape", [None, -5]), "'input_shape'"),
    "input_shape of floats": (_set_field("input_shape", [None, 5.0]), "'input_shape'"),
    "input_shape huge": (_set_field("input_shape", [None, 10**6, 10**6]), "'input_shape'"),
    "input_shape wrong for the weights": (_set_field("input_shape", [None, 7]), "shape (7, 4)"),
    "weights missing": (lambda meta, arrays: meta.pop("weights"), "'weights'"),
    "weights a string": (_set_field("weights", "dense/kernel"), "'weights'"),
    "weights named twice": (lambda meta, arrays: meta["weights"].__setitem__(1, "dense/kernel"), "'weights'"),
    "weights renamed": (lambda meta, arrays: meta["weights"].__setitem__(0, "other/kernel"), "stores no weight"),
    "a weight array missing": (lambda meta, arrays: arrays.pop("weight_3"), "'weights'"),
    "integer weights": (lambda meta, arrays: arrays.update(weight_0=arrays["weight_0"].astype(np.int32)), "not floats"),
    "version other": (_set_field("version", 2), "'version'"),
    "format other": (_set_field("format", "scratchnet.checkpoint"), "not an exported model"),
}


@pytest.mark.parametrize("case", sorted(EXPORTS))
def test_a_crafted_export_is_one_checkpoint_error_naming_the_file_and_the_field(case, tmp_path):
    edit, field = EXPORTS[case]
    path = exported(tmp_path, edit)
    state = copy.deepcopy(sn.random.get_state())
    with pytest.raises(CheckpointError) as err:
        sn.export.load_model(path)
    assert path in str(err.value) and field in str(err.value), str(err.value)
    assert sn.random.get_state() == state


@pytest.mark.parametrize("config", [{"class_name": ["Dense"]}, {"class_name": "Dense", "config": [4]}, [],
                                    {"config": {}}])
def test_a_malformed_layer_config_is_a_value_error_saying_what_a_config_is(config):
    with pytest.raises(ValueError, match=r"layers\.deserialize: expected \{'class_name': str, 'config': dict\}"):
        sn.layers.deserialize(config)


def test_an_export_still_loads_exactly_and_inside_a_callers_parameter_scope(tmp_path):
    path = exported(tmp_path)
    x = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    expected = sn.export.load_model(path).predict(x)
    sn.random.seed(99)
    with sn.ParameterStore().scope("caller"):
        loaded = sn.export.load_model(path)
    assert [p.name for p in loaded.parameters()] == ["dense/kernel", "dense/bias", "dense_1/kernel", "dense_1/bias"]
    np.testing.assert_array_equal(loaded.predict(x), expected)


# ---------------------------------------------------------------------------
# IDX files: the declared size capped, and never more than it read


class CountingGzip(gzip.GzipFile):
    """A GzipFile that counts the bytes it hands out."""

    delivered = 0

    def read(self, size=-1):
        data = super().read(size)
        CountingGzip.delivered += len(data)
        return data

    def readinto(self, b):
        before = CountingGzip.delivered  # readinto may call read: count its bytes once
        n = super().readinto(b)
        CountingGzip.delivered = before + n
        return n


@pytest.fixture
def counting_gzip(monkeypatch):
    CountingGzip.delivered = 0
    monkeypatch.setattr(idx.gzip, "GzipFile", CountingGzip)
    return CountingGzip


def test_a_gzip_bomb_declaring_little_is_read_no_further_than_declared_plus_one(tmp_path, counting_gzip):
    # 10 labels declared, then 300 MiB of zeros in 300 KB: before, all of it was inflated in memory.
    path = gzip_zeros(tmp_path / "bomb-labels.gz", struct.pack(">HBBI", 0, 8, 1, 10), 300)
    assert os.path.getsize(path) < 400_000
    with pytest.raises(IdxError, match=r"bomb-labels\.gz has more bytes than the data of shape \(10,\)"):
        read_idx(path)
    assert counting_gzip.delivered <= 8 + 10 + 1


def test_a_gzip_bomb_declaring_900_mib_is_refused_before_reading_its_data(tmp_path, counting_gzip):
    # It holds what it declares: 900 MiB of zeros in 0.9 MB, a ratio of about 1,000 (MNIST's is 5).
    path = gzip_zeros(tmp_path / "bomb-images.gz", struct.pack(">HBB3I", 0, 8, 3, 900, 1024, 1024), 900)
    assert os.path.getsize(path) < 1_000_000
    with pytest.raises(IdxError, match=r"bomb-images\.gz declares shape .* may inflate to at most .* gzip bomb"):
        read_idx(path)
    assert counting_gzip.delivered <= 16


def test_a_declared_size_beyond_the_cap_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "big-idx3-ubyte"
    path.write_bytes(struct.pack(">HBB3I", 0, 8, 3, 2**16, 2**16, 2**16))
    with pytest.raises(IdxError, match=r"declares shape \(65536, 65536, 65536\) of uint8, 281,474,976,710,656 bytes"):
        read_idx(path)
    monkeypatch.setattr(idx, "MAX_IDX_BYTES", 100)
    write_idx(tmp_path / "small.gz", np.zeros(101, np.uint8))
    with pytest.raises(IdxError, match="more than the 100 an IDX file may hold"):
        read_idx(tmp_path / "small.gz")


def test_real_looking_idx_files_still_read(tmp_path):
    labels = np.sort(np.random.default_rng(0).integers(0, 10, 100_000)).astype(np.uint8)  # compresses 1000-fold
    write_idx(tmp_path / "sorted-labels.gz", labels)
    np.testing.assert_array_equal(read_idx(tmp_path / "sorted-labels.gz"), labels)
    floats = np.random.default_rng(1).standard_normal((300, 7))
    write_idx(tmp_path / "floats.gz", floats)
    back = read_idx(tmp_path / "floats.gz")
    assert back.dtype == np.float64 and back.dtype.isnative and np.array_equal(back, floats)


def _mnist_folder(folder, **replace):
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
        "train_labels": (np.arange(30) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
        "test_labels": (np.arange(12) % 10).astype(np.uint8),
    }
    arrays.update(replace)
    for key, a in arrays.items():
        write_idx(folder / (mnist.FILES[key] + ".gz"), a)
    return folder


def _labels_with(value):
    labels = (np.arange(30) % 10).astype(np.uint8)
    labels[17] = value
    return labels


@pytest.mark.parametrize("replace, match", [
    ({"train_labels": _labels_with(10)}, r"train-labels-idx1-ubyte\.gz has label 10 \(example 17\); MNIST labels are 0\.\.9"),
    ({"train_labels": _labels_with(255)}, r"train-labels-idx1-ubyte\.gz has label 255"),
    ({"test_labels": np.zeros(11, np.uint8)}, r"t10k-images-idx3-ubyte\.gz has 12 images but .* has 11 labels"),
    ({"train_images": np.zeros((30, 32, 32), np.uint8)}, r"train-images-idx3-ubyte\.gz holds images of 32 x 32; "
                                                         r"MNIST's are 28 x 28"),
    ({"train_images": np.zeros((30, 784), np.uint8)}, r"must hold uint8 images \(N, H, W\)"),
    ({"train_labels": np.zeros(30, np.int32)}, r"must hold uint8 labels"),
], ids=["label 10", "label 255", "counts disagree", "32x32 images", "flat images", "int32 labels"])
def test_mnist_files_that_are_not_mnist_are_one_data_error_naming_the_file(tmp_path, replace, match):
    folder = _mnist_folder(tmp_path, **replace)
    with pytest.raises(DataError, match=match):
        load_mnist(folder, download=False)


@pytest.mark.parametrize("damage, match", [
    (lambda b: b"PK\x03\x04" + b[4:], r"has magic number 0x504b0304, not an IDX file"),
    (lambda b: b[: len(b) // 2], r"is truncated: shape \(30, 28, 28\) needs 23520 bytes of data, found"),
    (lambda b: b[:6], r"is truncated inside its header"),
    (lambda b: b"", r"is too short for an IDX header \(0 bytes\)"),
], ids=["wrong magic", "truncated data", "truncated header", "empty"])
def test_a_damaged_idx_file_is_one_data_error_naming_it(tmp_path, damage, match):
    folder = _mnist_folder(tmp_path)
    path = folder / (mnist.FILES["train_images"] + ".gz")
    path.write_bytes(gzip.compress(damage(gzip.decompress(path.read_bytes()))))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz " + match):
        load_mnist(folder, download=False)


def test_a_sample_csv_that_inflates_past_its_cap_is_refused_without_inflating_the_rest(tmp_path):
    path = gzip_zeros(tmp_path / "mnist_5k.csv.gz", b"", 900)
    with pytest.raises(MnistUnavailable, match=r"mnist_5k\.csv\.gz is not .* inflates to more than 16,777,216"):
        sample.parse_sample_csv(path)


# ---------------------------------------------------------------------------
# Texts: a capped size, read in chunks, and a capped vocabulary


def test_an_empty_or_non_utf8_text_is_one_data_error(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.txt is empty"):
        load_text(tmp_path / "empty.txt")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.txt is not utf-8 text \(invalid continuation byte at byte 3\)"):
        load_text(tmp_path / "latin1.txt")


def test_an_endless_device_is_read_no_further_than_the_cap(tmp_path):
    start = time.perf_counter()
    with pytest.raises(DataError, match=r"/dev/zero goes on past 1,048,576 bytes"):
        load_text("/dev/zero", max_bytes=2**20)
    assert time.perf_counter() - start < 5


def test_a_text_larger_than_the_cap_is_refused_before_it_is_read(tmp_path, monkeypatch):
    (tmp_path / "big.txt").write_text("a" * 5000, encoding="utf-8")
    with pytest.raises(DataError, match=r"big\.txt holds 5,000 bytes, more than the 4,096 a text may have"):
        load_text(tmp_path / "big.txt", max_bytes=4096)
    monkeypatch.setattr(text, "MAX_TEXT_BYTES", 4096)
    with pytest.raises(DataError, match="more than the 4,096"):
        language_model.CharLM.load_data(str(tmp_path / "big.txt"))


def test_charlm_on_dev_zero_stops_at_the_cap(monkeypatch):
    # `train charlm --data /dev/zero` read until memory ran out.
    monkeypatch.setattr(text, "MAX_TEXT_BYTES", 2**20)
    with pytest.raises(DataError, match="/dev/zero goes on past"):
        language_model.CharLM.load_data("/dev/zero")


def _distinct_characters(n):
    """``n`` different characters from the supplementary planes, 4 bytes each in UTF-8."""
    return "".join(chr(0x10000 + i) for i in range(n))


def test_a_text_of_200000_distinct_characters_is_refused_naming_the_file_and_the_count(tmp_path):
    path = tmp_path / "noise.txt"
    path.write_text(_distinct_characters(200_000), encoding="utf-8")
    assert path.stat().st_size < 1_000_000
    with pytest.raises(DataError, match=r"noise\.txt has 200,000 distinct chars, more than the 65,536"):
        load_text(path)


def test_charlm_refuses_a_vocabulary_beyond_its_memory_budget(tmp_path):
    # 40,000 characters fit MAX_VOCABULARY, but its logits and weights would take 2.4 GiB.
    path = tmp_path / "wide.txt"
    path.write_text(_distinct_characters(40_000) * 2, encoding="utf-8")
    with pytest.raises(DataError, match=r"charlm: .*wide\.txt: .*: 40,000 distinct characters would make .* take "
                                        r"2\.4 GiB, more than the 2 GiB"):
        language_model.CharLM.load_data(str(path))
    with pytest.raises(DataError, match="1,100,000 distinct characters"):
        sn.zoo.build("charlm", vocab_size=1_100_000)


@pytest.mark.parametrize("length, batch_size", [(300, None), (80, 1)], ids=["no batch", "no held-out row"])
def test_a_text_too_short_for_charlm_is_one_data_error_naming_the_file(tmp_path, length, batch_size):
    path = tmp_path / "short.txt"
    path.write_text(("abcdefghij" * 100)[:length], encoding="utf-8")
    with pytest.raises(DataError, match=r"short\.txt"):
        language_model.CharLM.load_data(str(path), batch_size=batch_size)


# ---------------------------------------------------------------------------
# The promise: no load of a crafted file under 1 MB takes more than 100 MB


_CHILD = textwrap.dedent("""
    import sys
    import scratchnet as sn
    import scratchnet.export
    from scratchnet.archive import CheckpointError
    from scratchnet.data import DataError, MnistUnavailable
    from scratchnet.data.sample import parse_sample_csv
    from scratchnet.zoo import language_model

    sn.backend.get_backend().xp.zeros(1)  # the backend's own modules (Numba: about 60 MB) count in the baseline
    path, load = sys.argv[1], sys.argv[2]
    if load:
        try:
            eval(load)
        except (CheckpointError, DataError, MnistUnavailable) as e:
            print("REFUSED", type(e).__name__, str(e).splitlines()[0])
        else:
            print("LOADED")
    # VmHWM: this process's own peak RSS. (getrusage's ru_maxrss would do, but
    # Linux carries it across exec from the forked parent, pytest and all.)
    with open("/proc/self/status") as f:
        print("PEAK", next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:")))
""")
MEMORY_BUDGET = 100 * 2**20


def _peak(path="", load=""):
    """Run ``load`` on ``path`` in a fresh interpreter: ``(peak RSS in bytes, what it printed)``."""
    out = subprocess.run([sys.executable, "-c", _CHILD, path, load], capture_output=True, text=True, timeout=300,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    return int(lines[-1].split()[1]), "\n".join(lines[:-1])


def _widened_export(tmp_path):
    def widen(meta, arrays):
        for i in (0, 1):
            _layer_config(meta, i)["units"] = 50_000
    return exported(tmp_path, widen, "wide.snm")


def _deep_checkpoint(tmp_path):
    return forge_archive(tmp_path / "deep", f'{{"meta": {{"weights": {_nested(200_000)}}}, "arrays": []}}'.encode())


CRAFTED = {
    # name: (make(tmp_path) -> path, the load as Python source, what the refusal says)
    "archive with a 1 TB header length": (
        lambda d: forge_archive(d / "a", {"meta": {}, "arrays": []}, header_len=2**40),
        "sn.archive.read_archive(path)", "header length"),
    "archive with a 2**40 x 2**40 array": (
        lambda d: forge_archive(d / "b", {"meta": {}, "arrays": [_entry(shape=[2**40, 2**40], nbytes=2**82)]}),
        "sn.archive.read_archive(path)", "malformed"),
    "checkpoint nested 200,000 deep": (
        _deep_checkpoint, "sn.checkpoint.list_variables(path)", "nested"),
    "exported model of 50,000 units (20 GB)": (
        _widened_export, "sn.export.load_model(path)", "units=50000"),
    "exported model of a Dense making 800 MB": (
        lambda d: wide_activation_export(d, *WIDE_DENSE), "sn.export.load_model(path)", "MAX_BUILD_NUMBERS"),
    "exported model of a Conv2D making 4 GB": (
        lambda d: wide_activation_export(d, *WIDE_CONV), "sn.export.load_model(path)", "MAX_BUILD_NUMBERS"),
    "exported model of a 10^6 x 10^6 input": (
        lambda d: exported(d, _set_field("input_shape", [None, 10**6, 10**6]), "huge-input.snm"),
        "sn.export.load_model(path)", "input_shape"),
    "gzip IDX bomb holding the 900 MiB it declares": (
        lambda d: gzip_zeros(d / "images.gz", struct.pack(">HBB3I", 0, 8, 3, 900, 1024, 1024), 900),
        "sn.data.read_idx(path)", "gzip bomb"),
    "gzip IDX bomb declaring 10 bytes, holding 900 MiB": (
        lambda d: gzip_zeros(d / "labels.gz", struct.pack(">HBBI", 0, 8, 1, 10), 900),
        "sn.data.read_idx(path)", "more bytes"),
    "MNIST sample CSV, a gzip bomb of 900 MiB": (
        lambda d: gzip_zeros(d / "mnist_5k.csv.gz", b"", 900), "parse_sample_csv(path)", "inflates to more than"),
    "text of 200,000 distinct characters": (
        lambda d: (d / "noise.txt").write_text(_distinct_characters(200_000), encoding="utf-8") and str(d / "noise.txt"),
        "sn.data.load_text(path)", "200,000 distinct"),
    "charlm text of 40,000 distinct characters": (
        lambda d: (d / "wide.txt").write_text(_distinct_characters(40_000) * 3, encoding="utf-8") and str(d / "wide.txt"),
        "language_model.CharLM.load_data(path)", "40,000 distinct"),
}


@pytest.fixture(scope="module")
def baseline_peak():
    """The peak RSS of a child that imports the same modules, starts the backend and loads nothing."""
    if not os.path.exists("/proc/self/status"):
        pytest.skip("measures peak memory with Linux's /proc/self/status")
    return _peak()[0]


@pytest.mark.parametrize("case", list(CRAFTED))
def test_no_load_of_a_crafted_file_under_1_mb_takes_more_than_100_mb(case, tmp_path, baseline_peak):
    make, load, refusal = CRAFTED[case]
    path = make(tmp_path)
    assert os.path.getsize(path) < 2**20
    peak, said = _peak(path, load)
    assert said.startswith("REFUSED") and refusal in said, said
    assert peak - baseline_peak < MEMORY_BUDGET, f"{case}: {(peak - baseline_peak) / 2**20:.0f} MB over the baseline"


def test_the_memory_measure_sees_a_load_of_a_real_size(tmp_path, baseline_peak):
    """The check above can fail: a genuine 200 MB IDX file is measured as the 200 MB it takes."""
    path = str(tmp_path / "big-idx1-ubyte")
    write_idx(path, np.ones(200 * 2**20, np.uint8))
    peak, said = _peak(path, "sn.data.read_idx(path)")
    assert said == "LOADED"
    assert peak - baseline_peak > 150 * 2**20

