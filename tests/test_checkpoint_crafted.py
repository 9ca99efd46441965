"""Restore is all or nothing for any file: crafted checkpoints (valid checksum, malformed header) change nothing."""
from __future__ import annotations

import copy

import numpy as np
import pytest

import scratchnet as sn
from scratchnet.archive import read_archive, write_archive
from scratchnet.checkpoint import CheckpointError

L = sn.layers


def _model(seed):
    sn.random.seed(seed)
    model = sn.Sequential([L.Dense(4, activation="relu", name="fc1"), L.Dense(3, name="fc2")])
    model.compile(sn.optimizers.Adam(0.01), sn.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.ema = sn.ExponentialMovingAverage(0.9)
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((8, 5)).astype(np.float32), rng.integers(0, 3, 8)
    for _ in range(2 + seed):
        model.train_on_batch(x, y)
    return model


def _state(model):
    """Everything a restore may change: weights, optimizer, averages, step, global RNG."""
    return {
        "weights": [w.copy() for w in model.get_weights()],
        "optimizer": {k: np.array(v) for k, v in model.optimizer.state_dict().items()},
        "ema": {k: v.copy() for k, v in model.ema.state_dict().items()},
        "step": model.step,
        "rng": copy.deepcopy(sn.random.get_state()),
    }


def _same(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    return a == b


def _set(field, value):
    def edit(meta, arrays):
        target = meta
        *path, last = field.split(".")
        for key in path:
            target = target[key]
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value
    return edit


def _array(name, fn):
    def edit(meta, arrays):
        if fn is _DELETE:
            del arrays[name]
        else:
            arrays[name] = fn(arrays[name])
    return edit


_DELETE = object()
_K = "fc1/kernel"

CRAFTED = {
    # step
    "step missing": _set("step", _DELETE), "step a string": _set("step", "2"), "step a float": _set("step", 2.5),
    "step negative": _set("step", -1), "step a bool": _set("step", True), "step null": _set("step", None),
    "step a list": _set("step", [2]),
    # weights
    "weights missing": _set("weights", _DELETE), "weights a string": _set("weights", _K),
    "weights a number": _set("weights", 3), "weights name a number": _set("weights", [3]),
    "weights name an absent array": _set("weights", [_K, "fc1/nothing"]), "weights a dict": _set("weights", {}),
    "weight array missing": _array(_K, _DELETE),
    "weight array reshaped": _array(_K, lambda a: a.reshape(-1)),
    "weight array transposed": _array(_K, lambda a: np.ascontiguousarray(a.T)),
    "weight array of ints": _array(_K, lambda a: a.astype(np.int32)),
    "weight array of bools": _array(_K, lambda a: a > 0),
    "weight array empty": _array(_K, lambda a: a[:0]),
    # rng
    "rng a number": _set("rng", 5), "rng a string": _set("rng", "PCG64"), "rng a list": _set("rng", [1, 2]),
    "rng unknown generator": _set("rng.bit_generator", "Nope"), "rng generator a number": _set("rng.bit_generator", 7),
    "rng state a string": _set("rng.state", "x"), "rng state missing": _set("rng.state", _DELETE),
    "rng state keys wrong": _set("rng.state", {"a": 1}), "rng inc a string": _set("rng.state.inc", "1"),
    "rng bit_generator missing": _set("rng.bit_generator", _DELETE),
    # optimizer
    "optimizer a number": _set("optimizer", 5), "optimizer a list": _set("optimizer", []),
    "optimizer class a number": _set("optimizer.class", 3), "optimizer class other": _set("optimizer.class", "SGD"),
    "optimizer class missing": _set("optimizer.class", _DELETE), "optimizer state a list": _set("optimizer.state", []),
    "optimizer state missing": _set("optimizer.state", _DELETE),
    "optimizer state names an absent array": _set("optimizer.state.iterations", "nothing"),
    "optimizer state names a number": _set("optimizer.state.iterations", 4),
    "optimizer iterations missing": _set("optimizer.state.iterations", _DELETE),
    "optimizer iterations a float": _array("optimizer/iterations", lambda a: a.astype(np.float64)),
    "optimizer iterations a vector": _array("optimizer/iterations", lambda a: np.array([2, 2])),
    "optimizer iterations negative": _array("optimizer/iterations", lambda a: np.array(-1)),
    "optimizer slot missing": _set(f"optimizer.state.{_K}:m", _DELETE),
    "optimizer slot unknown": _set("optimizer.state.fc1/kernel:velocity", "optimizer/fc1/kernel:m"),
    "optimizer slot of ints": _array(f"optimizer/{_K}:m", lambda a: a.astype(np.int64)),
    "optimizer slot reshaped": _array(f"optimizer/{_K}:v", lambda a: a.reshape(-1)),
    "optimizer slot array missing": _array(f"optimizer/{_K}:m", _DELETE),
    "optimizer slot of an unknown parameter": _set("optimizer.state.fc9/kernel:m", f"optimizer/{_K}:m"),
    "optimizer slot without a parameter name": _set("optimizer.state.m", f"optimizer/{_K}:m"),
    # ema
    "ema a number": _set("ema", 5), "ema a list": _set("ema", []), "ema name a number": _set("ema.name", 3),
    "ema shadows a list": _set("ema.shadows", []), "ema shadows missing": _set("ema.shadows", _DELETE),
    "ema shadow names an absent array": _set(f"ema.shadows.{_K}", "nothing"),
    "ema shadow names a number": _set(f"ema.shadows.{_K}", 1),
    "ema shadow of ints": _array(f"{_K}/ExponentialMovingAverage", lambda a: a.astype(np.int16)),
    "ema shadow reshaped": _array(f"{_K}/ExponentialMovingAverage", lambda a: a.reshape(-1)),
    "ema shadow of an unknown parameter": _set("ema.shadows.fc9/kernel", f"{_K}/ExponentialMovingAverage"),
    "ema shadow array missing": _array(f"{_K}/ExponentialMovingAverage", _DELETE),
    # the whole header
    "format other": _set("format", "scratchnet.model"), "format missing": _set("format", _DELETE),
    "version other": _set("version", 99), "version missing": _set("version", _DELETE),
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    with sn.use_backend("numpy"):
        model = _model(0)
        path = sn.Checkpoint(model).save(str(tmp_path_factory.mktemp("ckpt")), step=model.step)
    return read_archive(path)


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_a_crafted_checkpoint_restores_or_is_refused_with_nothing_changed(case, saved, tmp_path):
    meta, arrays = copy.deepcopy(saved[0]), {k: v.copy() for k, v in saved[1].items()}
    CRAFTED[case](meta, arrays)
    path = str(tmp_path / "model-2")
    write_archive(path, meta, arrays)  # a valid SHA-256 over the edited contents
    with sn.use_backend("numpy"):
        model = _model(1)
        before = _state(model)
        try:
            sn.Checkpoint(model).restore(path)
        except CheckpointError as e:
            assert path in str(e)
            assert _same(_state(model), before), f"{case}: a refused restore changed the model"
        else:
            pytest.fail(f"{case}: restored a malformed file")


def test_a_malformed_field_is_named_in_the_error(saved, tmp_path):
    for case, field in (("step a string", "'step'"), ("rng state a string", "'rng'"),
                        ("weights name an absent array", "'weights'"), ("ema shadows a list", "'ema'"),
                        ("optimizer state names an absent array", "'optimizer.state.iterations'")):
        meta, arrays = copy.deepcopy(saved[0]), dict(saved[1])
        CRAFTED[case](meta, arrays)
        path = str(tmp_path / "model-2")
        write_archive(path, meta, arrays)
        with sn.use_backend("numpy"), pytest.raises(CheckpointError, match=f"header field {field}"):
            sn.Checkpoint(_model(1)).restore(path)
