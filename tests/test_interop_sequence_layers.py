"""from_keras / to_keras for the sequence and normalization layers: GRU, SimpleRNN, Bidirectional,
LayerNormalization, BatchNormalization. Predicts like Keras, and trains like it in float64."""
from __future__ import annotations

import numpy as np
import pytest

import scratchnet as sn
from helpers import load_tensorflow
from scratchnet.interop import from_keras, to_keras


def keras_model(keras, rng):
    f64 = {"dtype": "float64"}
    model = keras.Sequential([
        keras.Input((6, 5), dtype="float64"),
        keras.layers.Bidirectional(keras.layers.GRU(4, return_sequences=True, **f64), **f64),
        keras.layers.LayerNormalization(**f64),
        keras.layers.SimpleRNN(3, go_backwards=True, **f64),
        keras.layers.BatchNormalization(momentum=0.9, **f64),
        keras.layers.Dense(2, **f64),
    ])
    weights = [0.4 * rng.standard_normal(w.shape) for w in model.get_weights()]
    weights[-3] = 1 + np.abs(weights[-3])  # the batch norm's moving variance
    model.set_weights(weights)
    return model


def test_from_keras_predicts_like_keras_and_to_keras_round_trips(backend):
    load_tensorflow()
    import keras

    rng = np.random.default_rng(0)
    km = keras_model(keras, rng)
    x = rng.standard_normal((4, 6, 5))
    ours = from_keras(km)
    assert [type(layer).__name__ for layer in ours.layers] == ["Bidirectional", "LayerNormalization", "SimpleRNN",
                                                                "BatchNormalization", "Dense"]
    np.testing.assert_allclose(sn.to_numpy(ours(backend.xp.asarray(x))),
                               km(x).numpy(), rtol=1e-12, atol=1e-13)
    again = to_keras(ours)
    np.testing.assert_array_equal(again(x).numpy(), km(x).numpy())


def test_a_converted_model_trains_like_keras_in_float64():
    """50 SGD steps on the same batches: every weight (and the moving averages) within 1e-9 of Keras's. The learning
    rate is one float32 holds exactly: Keras keeps it in a float32 variable, so 0.05 would train at 0.05000000075."""
    load_tensorflow()
    import keras

    rng = np.random.default_rng(1)
    km = keras_model(keras, rng)
    with sn.use_backend("numpy"):
        ours = from_keras(km)
        ours.compile(optimizer=sn.optimizers.SGD(0.0625), loss="sparse_categorical_crossentropy")
    km.compile(optimizer=keras.optimizers.SGD(0.0625),  # a Keras loss computes in floatx() unless given a dtype
               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype="float64"))
    for step in range(50):
        x = rng.standard_normal((8, 6, 5))
        y = rng.integers(0, 2, size=8)
        with sn.use_backend("numpy"):
            ours.train_on_batch(x, y)
        km.train_on_batch(x, y)
    for ours_w, keras_w, w in zip(ours.get_weights(), km.get_weights(), km.weights):
        np.testing.assert_allclose(sn.to_numpy(ours_w), keras_w, rtol=1e-9, atol=1e-11, err_msg=w.path)


@pytest.mark.parametrize("make, message", [
    (lambda keras: keras.layers.GRU(3, reset_after=False), "reset_after=True"),
    (lambda keras: keras.layers.GRU(3, recurrent_dropout=0.1), "(recurrent) dropout are not supported"),
    (lambda keras: keras.layers.LayerNormalization(rms_scaling=True), "rms_scaling"),
    (lambda keras: keras.layers.Bidirectional(keras.layers.GRU(3), merge_mode=None), "merge_mode=None"),
])
def test_what_has_no_scratchnet_counterpart_is_refused_by_name(make, message):
    load_tensorflow()
    import keras

    km = keras.Sequential([keras.Input((4, 3)), make(keras)])
    with pytest.raises(ValueError, match="from_keras") as info:
        from_keras(km)
    assert message in str(info.value)
