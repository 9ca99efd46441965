"""Checkpoints: round trips, partial and renamed restores, moving averages, crash safety, corruption, resume."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import scratchnet as sn
from scratchnet import layers as L
from scratchnet.checkpoint import CheckpointError

X = np.random.default_rng(0).standard_normal((24, 5)).astype(np.float32)
Y = np.arange(24) % 3


@pytest.fixture(autouse=True)
def reference_backend():
    """These tests are about files, not kernels: the reference backend, with nothing to compile."""
    with sn.use_backend("numpy"):
        yield


def make_model(seed, names=("dense", "dense_1"), dropout=0.0):
    sn.random.seed(seed)
    stack = [L.Dense(6, activation="relu", name=names[0])]
    if dropout:
        stack.append(L.Dropout(dropout))
    stack.append(L.Dense(3, name=names[1]))
    model = sn.Sequential(stack)
    model.build((None, 5))
    model.compile(sn.optimizers.Adam(0.05), sn.losses.SparseCategoricalCrossentropy())
    model.ema = sn.ExponentialMovingAverage(0.9)
    return model


def train(model, steps, batch=8):
    for _ in range(steps):
        # Batches drawn from the global generator, so the RNG state matters on resume.
        idx = sn.random.generator().choice(len(X), batch, replace=False)
        model.train_on_batch(X[idx], Y[idx])


def weights(model):
    return {p.name: sn.to_numpy(p.value) for p in model.parameters()}


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_round_trip_restores_weights_optimizer_averages_step_and_rng(tmp_path):
    model = make_model(1)
    train(model, 3)
    path = sn.Checkpoint(model).save(str(tmp_path), model.step)
    assert path == os.path.join(str(tmp_path), "model-3")
    rng_after_save = sn.random.get_state()

    other = make_model(2)
    sn.random.seed(99)
    assert sn.Checkpoint(other).restore(path) == 3
    assert other.step == 3
    assert_same(weights(other), weights(model))
    assert_same(other.optimizer.state_dict(), model.optimizer.state_dict())
    assert_same(other.ema.state_dict(), model.ema.state_dict())
    assert sn.random.get_state() == rng_after_save


def test_index_names_the_latest_and_only_the_last_n_are_kept(tmp_path):
    model = make_model(1)
    ckpt = sn.Checkpoint(model)
    d = str(tmp_path)
    assert sn.latest_checkpoint(d) is None
    for step in (10, 20, 30, 40):
        ckpt.save(d, step, max_to_keep=2)
    assert sn.latest_checkpoint(d) == os.path.join(d, "model-40")
    assert sorted(f for f in os.listdir(d) if not f.startswith(".")) == ["checkpoint", "model-30", "model-40"]
    assert json.load(open(os.path.join(d, "checkpoint")))["all"] == ["model-30", "model-40"]


def test_partial_restore_loads_only_the_included_parameters(tmp_path):
    model = make_model(1)
    path = sn.Checkpoint(model).save(str(tmp_path), 0)
    other = make_model(2)
    before = weights(other)
    sn.Checkpoint(other).restore(path, include=["dense/kernel"])
    after = weights(other)
    np.testing.assert_array_equal(after["dense/kernel"], weights(model)["dense/kernel"])
    for name in ("dense/bias", "dense_1/kernel", "dense_1/bias"):
        np.testing.assert_array_equal(after[name], before[name])
    assert other.step == 0 and other.optimizer.iterations == 0


def test_restore_under_other_names_with_a_mapping(tmp_path):
    model = make_model(1)
    path = sn.Checkpoint(model).save(str(tmp_path), 0)
    renamed = make_model(2, names=("other_v1", "other_v2"))
    by_name = {p.name: p for p in renamed.parameters()}
    mapping = {old: by_name[old.replace("dense_1", "other_v2").replace("dense", "other_v1")] for old in weights(model)}
    sn.Checkpoint(renamed).restore(path, mapping=mapping)
    for old, p in mapping.items():
        np.testing.assert_array_equal(sn.to_numpy(p.value), weights(model)[old])
    with pytest.raises(CheckpointError, match="missing from the checkpoint: other_v1/kernel"):
        sn.Checkpoint(renamed).restore(path)


def test_moving_averages_restore_into_the_weights(tmp_path):
    model = make_model(1)
    train(model, 4)
    path = sn.Checkpoint(model).save(str(tmp_path), model.step)
    averages = {p.name: sn.to_numpy(model.ema.average(p)) for p in model.parameters()}
    assert not np.array_equal(averages["dense/kernel"], weights(model)["dense/kernel"])

    evaluator = make_model(2)
    sn.Checkpoint(evaluator).restore(path, ema_into_weights=True)
    assert_same(weights(evaluator), averages)

    evaluator = make_model(3)
    sn.Checkpoint(evaluator).restore(path, mapping=sn.ExponentialMovingAverage(0.9).variables_to_restore(evaluator))
    assert_same(weights(evaluator), averages)


def test_a_model_that_does_not_fit_gets_an_error_listing_every_difference_and_is_unchanged(tmp_path):
    model = make_model(1)
    path = sn.Checkpoint(model).save(str(tmp_path), 0)
    sn.random.seed(5)
    other = sn.Sequential([L.Dense(7, name="dense"), L.Dense(3, name="head")])
    other.build((None, 5))
    before = weights(other)
    with pytest.raises(CheckpointError) as e:
        sn.Checkpoint(other).restore(path)
    message = str(e.value)
    assert "missing from the checkpoint: head/kernel, head/bias" in message
    assert "dense/kernel (5, 6) -> dense/kernel (5, 7)" in message
    assert "in the checkpoint but not in the model: dense_1/kernel, dense_1/bias" in message
    assert_same(weights(other), before)


def test_non_strict_restore_skips_missing_names_but_never_wrong_shapes(tmp_path):
    model = make_model(1)
    path = sn.Checkpoint(model).save(str(tmp_path), 0)
    sn.random.seed(5)
    other = sn.Sequential([L.Dense(6, name="dense"), L.Dense(3, name="head")])
    other.build((None, 5))
    head = weights(other)["head/kernel"]
    sn.Checkpoint(other).restore(path, strict=False)
    np.testing.assert_array_equal(weights(other)["dense/kernel"], weights(model)["dense/kernel"])
    np.testing.assert_array_equal(weights(other)["head/kernel"], head)


def test_a_crash_while_saving_leaves_the_previous_checkpoint_current(tmp_path, monkeypatch):
    model = make_model(1)
    d = str(tmp_path)
    ckpt = sn.Checkpoint(model)
    first = ckpt.save(d, 1)
    saved = weights(model)
    train(model, 1)

    real_replace = os.replace

    def crash(src, dst):
        raise OSError("disk full (injected)")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="injected"):
        ckpt.save(d, 2)
    monkeypatch.setattr(os, "replace", real_replace)

    assert sorted(os.listdir(d)) == ["checkpoint", "model-1"]  # no temporary file left behind
    assert sn.latest_checkpoint(d) == first
    restored = make_model(2)
    sn.Checkpoint(restored).restore(sn.latest_checkpoint(d))
    assert_same(weights(restored), saved)


def test_a_process_killed_mid_save_leaves_the_previous_checkpoint_loadable(tmp_path):
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        import scratchnet as sn
        from test_checkpoint import make_model, train
        sn.use_backend("numpy")
        model = make_model(1)
        ckpt = sn.Checkpoint(model)
        ckpt.save({str(tmp_path)!r}, 1)
        train(model, 1)
        # Die for real, with the new checkpoint's bytes written but not yet renamed.
        os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)
        ckpt.save({str(tmp_path)!r}, 2)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert result.returncode == -9, result.stderr.decode()
    assert sn.latest_checkpoint(str(tmp_path)) == os.path.join(str(tmp_path), "model-1")
    with sn.use_backend("numpy"):
        expected = make_model(1)
        restored = make_model(2)
        sn.Checkpoint(restored).restore(sn.latest_checkpoint(str(tmp_path)))
        assert_same(weights(restored), weights(expected))


@pytest.mark.parametrize("damage", ["flip_a_byte", "truncate"])
def test_a_corrupt_or_truncated_file_is_reported_and_nothing_is_loaded(tmp_path, damage):
    model = make_model(1)
    path = sn.Checkpoint(model).save(str(tmp_path), 7)
    blob = bytearray(open(path, "rb").read())
    if damage == "flip_a_byte":
        blob[len(blob) // 2] ^= 0x01
    else:
        blob = blob[: len(blob) - 100]
    open(path, "wb").write(bytes(blob))
    other = make_model(2)
    before = weights(other)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        sn.Checkpoint(other).restore(path)
    assert_same(weights(other), before)
    assert other.step == 0


def test_object_arrays_are_refused_even_with_a_valid_checksum(tmp_path):
    """The format has no pickled data: a forged entry with an object dtype is rejected."""
    path = str(tmp_path / "forged")
    sn.archive.write_archive(path, {"format": "scratchnet.checkpoint"}, {"a": np.zeros(2)})
    with pytest.raises(ValueError, match="only numeric arrays"):
        sn.archive.write_archive(path, {}, {"a": np.array([{}], dtype=object)})
    import hashlib
    import struct

    header = json.dumps({"meta": {}, "arrays": [{"name": "a", "dtype": "|O", "shape": [1], "offset": 0, "nbytes": 8}]}).encode()
    body = sn.archive.MAGIC + struct.pack("<Q", len(header)) + header + b"\0" * 8
    open(path, "wb").write(body + hashlib.sha256(body).digest())
    with pytest.raises(CheckpointError, match="malformed"):
        sn.archive.read_archive(path)


@pytest.mark.parametrize("name", ["numpy", "numba"])
def test_resuming_from_a_checkpoint_matches_an_uninterrupted_run(tmp_path, name):
    """Adam + EMA + dropout and batches from the global RNG: 3 + 3 steps == 6 steps, bit for bit."""
    with sn.use_backend(name):
        straight = make_model(1, dropout=0.5)
        train(straight, 6)

        first = make_model(1, dropout=0.5)
        train(first, 3)
        path = sn.Checkpoint(first).save(str(tmp_path), first.step)
        train(first, 5)  # the run goes on and dies; its later state must not leak

        resumed = make_model(42, dropout=0.5)
        sn.random.seed(1234)
        sn.Checkpoint(resumed).restore(path)
        train(resumed, 3)

        assert resumed.step == straight.step == 6
        assert_same(weights(resumed), weights(straight))
        assert_same(resumed.ema.state_dict(), straight.ema.state_dict())
        assert_same(resumed.optimizer.state_dict(), straight.optimizer.state_dict())


def test_list_variables_shows_weights_and_averages(tmp_path):
    model = make_model(1)
    train(model, 1)
    path = sn.Checkpoint(model).save(str(tmp_path), 1)
    names = dict(sn.checkpoint.list_variables(path))
    assert names["dense/kernel"] == (5, 6)
    assert names["dense_1/bias/ExponentialMovingAverage"] == (3,)
    assert not any(n.startswith("optimizer/") for n in names)


def test_bad_save_arguments_are_errors(tmp_path):
    ckpt = sn.Checkpoint(make_model(1))
    with pytest.raises(ValueError, match="step must be a non-negative int"):
        ckpt.save(str(tmp_path), -1)
    with pytest.raises(ValueError, match="max_to_keep must be a positive int or None"):
        ckpt.save(str(tmp_path), 1, max_to_keep=0)
    with pytest.raises(CheckpointError, match="does not exist"):
        ckpt.restore(str(tmp_path / "model-5"))


def _forge(path, header):
    """A file with a valid checksum around ``header`` (a dict) and 8 zero bytes of data."""
    import hashlib
    import struct

    header = json.dumps(header).encode()
    body = sn.archive.MAGIC + struct.pack("<Q", len(header)) + header + b"\0" * 8
    open(path, "wb").write(body + hashlib.sha256(body).digest())


@pytest.mark.parametrize("entry", [
    {"name": "a", "dtype": "<f8", "shape": [2], "offset": 0, "nbytes": 8},     # shape wants 16 bytes
    {"name": "a", "dtype": "<f4", "shape": [2], "offset": -4, "nbytes": 8},    # before the data
    {"name": "a", "dtype": "<f4", "shape": [2], "offset": 4, "nbytes": 8},     # past the end
    {"name": "a", "dtype": "<f4", "shape": [2]},                               # fields missing
])
def test_a_header_entry_that_does_not_match_its_bytes_is_a_checkpoint_error(tmp_path, entry):
    path = str(tmp_path / "forged")
    _forge(path, {"meta": {}, "arrays": [entry]})
    with pytest.raises(CheckpointError, match="malformed"):
        sn.archive.read_archive(path)


def test_a_header_without_meta_and_arrays_is_a_checkpoint_error(tmp_path):
    path = str(tmp_path / "forged")
    _forge(path, [1, 2, 3])
    with pytest.raises(CheckpointError, match="without 'meta' and 'arrays'"):
        sn.archive.read_archive(path)


@pytest.mark.parametrize("bad", ["../victim", "/tmp/victim", "sub/model-1", ".hidden", ".."])
def test_an_index_naming_files_outside_the_directory_is_refused_and_deletes_nothing(tmp_path, bad):
    """save() deletes the oldest names the index lists: a tampered index must not reach other files."""
    run = tmp_path / "run"
    run.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (run / "checkpoint").write_text(json.dumps({"latest": "model-1", "all": [bad, "model-1"]}))
    ckpt = sn.Checkpoint(make_model(1))
    with pytest.raises(CheckpointError, match="not a file name inside"):
        ckpt.save(str(run), 2, max_to_keep=1)
    with pytest.raises(CheckpointError, match="not a file name inside"):
        sn.latest_checkpoint(str(run))
    assert victim.read_text() == "keep me"


def test_a_prefix_that_is_not_a_plain_file_name_is_refused(tmp_path):
    ckpt = sn.Checkpoint(make_model(1))
    for prefix in ("", "sub/model", ".hidden", "checkpoint", ".."):
        with pytest.raises(ValueError, match="prefix must be a plain file name"):
            ckpt.save(str(tmp_path), 1, prefix=prefix)


def test_a_checkpoint_written_before_the_training_layer_moved_still_restores():
    """``tests/data/checkpoint-v1-mlp`` was written at commit ee463dc, before parameters, layers and the zoo moved."""
    from pathlib import Path

    from scratchnet.checkpoint import load_variables

    folder = Path(__file__).parent / "data" / "checkpoint-v1-mlp"
    with sn.use_backend("numpy"):
        recipe = sn.zoo.build("mlp", hidden=8)
        path = sn.latest_checkpoint(str(folder))
        assert recipe.checkpoint().restore(path) == 3 and recipe.step == 3
        stored = load_variables(path)
        for p in recipe.model.parameters():
            np.testing.assert_array_equal(sn.to_numpy(p.value), stored[p.name])
            np.testing.assert_array_equal(sn.to_numpy(recipe.ema.average(p)), stored[f"{p.name}/ExponentialMovingAverage"])
        assert recipe.optimizer.iterations == 3
