"""Keras interop: converted models compute what Keras computes, and train to the same weights."""
from __future__ import annotations

import os

import numpy as np
import pytest

import scratchnet as sn
from helpers import assert_close, load_tensorflow

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _keras():
    load_tensorflow()
    import keras

    return keras


def _mlp(keras):
    return keras.Sequential([
        keras.Input((6,)),
        keras.layers.Dense(8, activation="relu"),
        keras.layers.Dropout(0.0),
        keras.layers.Dense(4, activation="tanh"),
        keras.layers.Dense(3),
    ], name="mlp")


def _cnn(keras):
    return keras.Sequential([
        keras.Input((7, 7, 2)),
        keras.layers.Conv2D(3, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2, padding="same"),
        keras.layers.Conv2D(4, 2, strides=2),
        keras.layers.Flatten(),
        keras.layers.Dense(3),
    ], name="cnn")


def _lstm(keras):
    return keras.Sequential([
        keras.Input((5,), dtype="int32"),
        keras.layers.Embedding(9, 4),
        keras.layers.LSTM(5, return_sequences=True),
        keras.layers.LSTM(4),
        keras.layers.Dense(3),
    ], name="rnn")


MODELS = {"mlp": _mlp, "cnn": _cnn, "lstm": _lstm}


def _data(name, rng, n=6):
    if name == "lstm":
        x = rng.integers(0, 9, size=(n, 5)).astype(np.int32)
    else:
        shape = {"mlp": (6,), "cnn": (7, 7, 2)}[name]
        x = rng.standard_normal((n,) + shape).astype(np.float32)
    return x, rng.integers(0, 3, size=n)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_from_keras_model_gives_keras_outputs_and_names(name, rng):
    keras = _keras()
    keras_model = MODELS[name](keras)
    model = sn.interop.from_keras(keras_model)
    x, _ = _data(name, rng)
    assert_close(sn.to_numpy(model(x)), keras_model(x).numpy(), np.float32, name)
    assert [p.name.split("/")[0] for p in model.parameters()] == [
        layer.name for layer in keras_model.layers for _ in layer.weights
    ]


def _keras_train_step(keras_model, optimizer, x, y):
    """One Keras optimizer step on the summed (dense) gradient; returns the loss before it.

    ``train_on_batch`` would hand Keras's Adam the Embedding gradient as
    IndexedSlices, whose repeated ids it updates one slice at a time instead of
    summing them first: not Adam on the gradient. Densifying gives the real one.
    """
    tf_ = load_tensorflow()
    import keras

    with tf_.GradientTape() as tape:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, keras_model(x, training=True))
    grads = tape.gradient(loss, keras_model.trainable_weights)
    optimizer.apply_gradients([(tf_.convert_to_tensor(g), w) for g, w in zip(grads, keras_model.trainable_weights)])
    return float(loss)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_from_keras_model_trains_to_kerass_weights_in_five_steps(name, optimizer, rng):
    keras = _keras()
    keras_model = MODELS[name](keras)
    model = sn.interop.from_keras(keras_model)
    if optimizer == "sgd":
        keras_opt, ours = keras.optimizers.SGD(0.1, momentum=0.9), sn.optimizers.SGD(0.1, momentum=0.9)
    else:
        keras_opt, ours = keras.optimizers.Adam(0.01), sn.optimizers.Adam(0.01)
    model.compile(ours, sn.losses.SparseCategoricalCrossentropy(), metrics=[])
    for _ in range(5):
        x, y = _data(name, rng)
        keras_loss = _keras_train_step(keras_model, keras_opt, x, y)
        logs = model.train_on_batch(x, y)
        assert logs["loss"] == pytest.approx(keras_loss, rel=1e-4)
    for p, want in zip(model.parameters(), keras_model.get_weights()):
        assert_close(sn.to_numpy(p.value), want, np.float32, f"{name}/{optimizer}: {p.name}")


def test_keras_train_on_batch_agrees_where_no_embedding_is_involved(rng):
    keras = _keras()
    keras_model = _cnn(keras)
    model = sn.interop.from_keras(keras_model)
    keras_model.compile(keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                        run_eagerly=True)
    model.compile(sn.optimizers.Adam(0.01), sn.losses.SparseCategoricalCrossentropy(), metrics=[])
    for _ in range(2):
        x, y = _data("cnn", rng)
        assert model.train_on_batch(x, y)["loss"] == pytest.approx(float(keras_model.train_on_batch(x, y)), rel=1e-4)
    for p, want in zip(model.parameters(), keras_model.get_weights()):
        assert_close(sn.to_numpy(p.value), want, np.float32, p.name)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_to_keras_round_trip_keeps_architecture_and_weights(name, rng):
    keras = _keras()
    model = sn.interop.from_keras(MODELS[name](keras))
    x, _ = _data(name, rng)
    keras_model = sn.interop.to_keras(model)
    assert [type(layer).__name__ for layer in keras_model.layers] == [
        type(layer).__name__ for layer in MODELS[name](keras).layers
    ]
    assert_close(keras_model(x).numpy(), sn.to_numpy(model(x)), np.float32, name)
    back = sn.interop.from_keras(keras_model)
    for a, b in zip(back.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_native_model_converts_to_keras_and_back():
    keras = _keras()
    model = sn.Sequential([sn.layers.Reshape((4, 2)), sn.layers.LSTM(3, return_sequences=True), sn.layers.Flatten(),
                           sn.layers.Activation("sigmoid"), sn.layers.Dense(2, activation="softmax")])
    model.build((None, 8))
    x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(2, 8)
    keras_model = sn.interop.to_keras(model)
    assert isinstance(keras_model, keras.Sequential)
    assert_close(keras_model(x).numpy(), sn.to_numpy(model(x)), np.float32)


def test_interop_refuses_what_it_cannot_express():
    keras = _keras()
    with pytest.raises(ValueError, match="layer 'up' is a UpSampling2D"):
        sn.interop.from_keras(keras.Sequential([keras.Input((4, 4, 1)), keras.layers.UpSampling2D(name="up")]))
    with pytest.raises(ValueError, match="the Keras model is not built"):
        sn.interop.from_keras(keras.Sequential([keras.layers.Dense(2)]))
    with pytest.raises(ValueError, match="the model is not built"):
        sn.interop.to_keras(sn.Sequential([sn.layers.Dense(2)]))
    dense = sn.layers.Dense(2)
    shared = sn.Sequential([dense, dense])
    shared.build((None, 2))
    with pytest.raises(ValueError, match="a layer used twice"):
        sn.interop.to_keras(shared)


def test_from_keras_carries_l1_l2_regularizers_over_and_to_keras_back(rng):
    keras = _keras()
    reg = keras.regularizers
    keras_model = keras.Sequential([
        keras.Input((5,), dtype="int32"),
        keras.layers.Embedding(9, 4, embeddings_regularizer=reg.L2(1e-3), name="emb"),
        keras.layers.LSTM(3, return_sequences=True, recurrent_regularizer=reg.L1(2.0**-9), name="lstm"),
        keras.layers.Reshape((5, 3, 1)),
        keras.layers.Conv2D(2, 2, kernel_regularizer=reg.L1L2(l1=1e-3, l2=3e-3), bias_regularizer=reg.L2(1e-2),
                            name="conv"),
        keras.layers.Flatten(),
        keras.layers.Dense(3, kernel_regularizer=reg.l2(5e-5), name="dense"),
    ])
    model = sn.interop.from_keras(keras_model)
    configs = {layer.name: layer.get_config() for layer in model.layers}

    def l1l2(l1=0.0, l2=0.0):
        return {"class_name": "L1L2", "config": {"l1": l1, "l2": l2}}

    assert configs["emb"]["embeddings_regularizer"] == l1l2(l2=1e-3)
    assert configs["lstm"]["recurrent_regularizer"] == l1l2(l1=2.0**-9)  # (Keras keeps L1 in float32)
    assert configs["lstm"]["kernel_regularizer"] is None
    assert configs["conv"]["kernel_regularizer"] == l1l2(1e-3, 3e-3)
    assert configs["conv"]["bias_regularizer"] == l1l2(l2=1e-2)
    assert configs["dense"]["kernel_regularizer"] == l1l2(l2=5e-5)
    # Keras's penalties are scratchnet's.
    assert model.regularization_loss() == pytest.approx(float(sum(keras_model.losses)), rel=1e-5)
    back = sn.interop.to_keras(model)
    assert float(sum(back.losses)) == pytest.approx(float(sum(keras_model.losses)), rel=1e-6)
    assert back.get_layer("conv").kernel_regularizer.get_config() == {"l1": 1e-3, "l2": 3e-3}


def test_from_keras_refuses_what_would_train_differently():
    keras = _keras()

    def model(**kwargs):
        return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d", **kwargs)])

    with pytest.raises(ValueError, match="layer 'd' has kernel_regularizer=OrthogonalRegularizer"):
        sn.interop.from_keras(model(kernel_regularizer=keras.regularizers.OrthogonalRegularizer()))
    with pytest.raises(ValueError, match="layer 'd' has an activity_regularizer"):
        sn.interop.from_keras(model(activity_regularizer=keras.regularizers.L2(1e-3)))
    with pytest.raises(ValueError, match="layer 'd' has a kernel_constraint"):
        sn.interop.from_keras(model(kernel_constraint=keras.constraints.NonNeg()))
