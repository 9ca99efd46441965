"""Exported models: architecture + weights in one file, rebuilt without the code that built them."""
from __future__ import annotations

import numpy as np
import pytest

import scratchnet as sn
from scratchnet import layers as L
from scratchnet.checkpoint import CheckpointError


@pytest.fixture(autouse=True)
def reference_backend():
    with sn.use_backend("numpy"):
        yield


def _mlp():
    return sn.Sequential([L.Dense(6, activation="relu", kernel_regularizer=sn.regularizers.l2(1e-4)), L.Dropout(0.5),
                          L.Dense(3, activation="softmax")], name="mlp"), np.random.default_rng(1).standard_normal((4, 5))


def _lenet():
    model = sn.Sequential([L.Reshape((6, 6, 1)), L.Conv2D(2, 3, padding="same", activation="relu"), L.MaxPool2D(2),
                           L.Flatten(), L.Dense(3)])
    return model, np.random.default_rng(2).standard_normal((2, 36))


def _charlm():
    model = sn.Sequential([L.Embedding(7, 4), L.LSTM(5, return_sequences=True), L.Dense(7)])
    return model, np.random.default_rng(3).integers(0, 7, size=(2, 3))


@pytest.mark.parametrize("build", [_mlp, _lenet, _charlm], ids=["mlp", "lenet", "charlm"])
def test_exported_model_gives_identical_predictions(tmp_path, build):
    sn.random.seed(0)
    model, x = build()
    x = x.astype(np.float32) if x.dtype.kind == "f" else x.astype(np.int32)
    expected = model.predict(x)
    path = str(tmp_path / "model.snm")
    sn.export.save_model(model, path)

    sn.random.seed(123)  # a different process would start from other random weights
    loaded = sn.export.load_model(path)
    assert type(loaded) is sn.Sequential and loaded.name == model.name
    assert [type(a) for a in loaded.layers] == [type(b) for b in model.layers]
    np.testing.assert_array_equal(loaded.predict(x), expected)


def test_loading_a_model_leaves_the_global_random_generator_alone(tmp_path):
    sn.random.seed(0)
    model, x = _mlp()
    model(x.astype(np.float32))
    path = str(tmp_path / "m")
    sn.export.save_model(model, path)
    sn.random.seed(7)
    state = sn.random.get_state()
    sn.export.load_model(path)
    assert sn.random.get_state() == state


def test_a_corrupt_export_or_a_checkpoint_is_refused(tmp_path):
    model, x = _mlp()
    model(x.astype(np.float32))
    path = str(tmp_path / "m")
    sn.export.save_model(model, path)
    blob = bytearray(open(path, "rb").read())
    blob[-40] ^= 0xFF
    open(path, "wb").write(bytes(blob))
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        sn.export.load_model(path)
    ckpt = sn.Checkpoint(model).save(str(tmp_path / "ck"), 1)
    with pytest.raises(CheckpointError, match="is a 'scratchnet.checkpoint' file, not an exported model"):
        sn.export.load_model(ckpt)


def test_only_built_sequential_models_can_be_exported(tmp_path):
    with pytest.raises(ValueError, match="save_model: model 'mlp' is not built"):
        sn.export.save_model(_mlp()[0], str(tmp_path / "m"))

    class Custom(sn.Model):
        def call(self, x, training=False):
            return x, lambda dy: dy

    with pytest.raises(ValueError, match="only a Sequential or a functional Model of registered layers can be exported, got Custom"):
        sn.export.save_model(Custom(), str(tmp_path / "m"))
