"""Losses, metrics and training with masks against Keras 3: per-position losses times the mask over the mask's sum
(Keras's ``apply_mask``), accuracy over the unmasked positions, and a Sequential Embedding(mask_zero) + GRU + Dense
trained 50 SGD steps in float64 to Keras's weights within 1e-9."""
from __future__ import annotations

import os

import numpy as np
import pytest

import scratchnet as sn
from helpers import assert_close, load_tensorflow, to_backend

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
DTYPES = [np.float32, np.float64]
DTYPE_IDS = ["float32", "float64"]
N, T, K = 4, 5, 3


def _mask(rng):
    m = rng.random((N, T)) > 0.4
    m[0] = False  # a row masked throughout
    m[1, 2] = False
    m[2] = True
    return m


def _keras_loss(tf, loss, y_true, y_pred, mask):
    """Keras's value and gradient with respect to y_pred, the mask attached to y_pred as a model attaches it."""
    from keras.src.backend import set_keras_mask

    yt = tf.constant(y_pred)
    with tf.GradientTape() as tape:
        tape.watch(yt)
        y = tf.identity(yt)
        set_keras_mask(y, tf.constant(mask))
        value = loss(tf.constant(y_true), y)
    return value.numpy(), tape.gradient(value, yt).numpy()


CASES = {
    "sparse logits": (lambda k: k.losses.SparseCategoricalCrossentropy(from_logits=True),
                      lambda: sn.losses.SparseCategoricalCrossentropy(from_logits=True), "ids"),
    "sparse probabilities": (lambda k: k.losses.SparseCategoricalCrossentropy(),
                             lambda: sn.losses.SparseCategoricalCrossentropy(from_logits=False), "ids"),
    "sparse sum": (lambda k: k.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum"),
                   lambda: sn.losses.SparseCategoricalCrossentropy(reduction="sum"), "ids"),
    "categorical logits": (lambda k: k.losses.CategoricalCrossentropy(from_logits=True),
                           lambda: sn.losses.CategoricalCrossentropy(from_logits=True), "onehot"),
    "categorical probabilities": (lambda k: k.losses.CategoricalCrossentropy(),
                                  lambda: sn.losses.CategoricalCrossentropy(from_logits=False), "onehot"),
    "mse": (lambda k: k.losses.MeanSquaredError(), lambda: sn.losses.MeanSquaredError(), "values"),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", list(CASES))
def test_masked_loss_matches_keras(backend, case, dtype):
    tf = load_tensorflow()
    import keras

    rng = np.random.default_rng(0)
    keras_loss, ours, labels = CASES[case]
    mask = _mask(rng)
    logits = rng.standard_normal((N, T, K)).astype(dtype)
    y_pred = logits if "logits" in case or case == "mse" else tf.nn.softmax(logits).numpy()
    ids = rng.integers(0, K, (N, T))
    y_true = {"ids": ids, "onehot": np.eye(K, dtype=dtype)[ids],
              "values": rng.standard_normal((N, T, K)).astype(dtype)}[labels]
    value_k, grad_k = _keras_loss(tf, keras_loss(keras).__class__(**{**keras_loss(keras).get_config(),
                                                                     "dtype": np.dtype(dtype).name}),
                                  y_true, y_pred, mask)
    value, backprop = ours()(to_backend(backend, y_true), to_backend(backend, y_pred), mask=to_backend(backend, mask))
    assert_close(value, value_k, dtype, "loss")
    assert_close(sn.to_numpy(backprop(1.0)), grad_k, dtype, "dloss/dy_pred")
    value_all, _ = ours()(to_backend(backend, y_true), to_backend(backend, y_pred), mask=to_backend(backend, mask & False))
    assert value_all == 0.0  # nothing left: 0, as Keras's divide_no_nan


@pytest.mark.parametrize("metric", ["sparse_categorical_accuracy", "categorical_accuracy", "accuracy"])
def test_masked_metrics_match_keras(backend, metric):
    tf = load_tensorflow()
    import keras
    from keras.src.backend import set_keras_mask

    rng = np.random.default_rng(1)
    mask = _mask(rng)
    y_pred = rng.standard_normal((N, T, K))
    ids = rng.integers(0, K, (N, T))
    y_true = ids if metric != "categorical_accuracy" else np.eye(K)[ids]
    keras_metric = {"sparse_categorical_accuracy": keras.metrics.SparseCategoricalAccuracy,
                    "accuracy": keras.metrics.SparseCategoricalAccuracy,
                    "categorical_accuracy": keras.metrics.CategoricalAccuracy}[metric]()
    y = tf.constant(y_pred)
    set_keras_mask(y, tf.constant(mask))
    keras_metric.update_state(tf.constant(y_true), y)
    ours = getattr(sn.metrics, metric)(to_backend(backend, y_true), to_backend(backend, y_pred),
                                       mask=to_backend(backend, mask))
    assert abs(ours - float(keras_metric.result())) < 1e-6
    assert getattr(sn.metrics, metric)(to_backend(backend, y_true), to_backend(backend, y_pred),
                                       mask=to_backend(backend, mask & False)) == 0.0


def test_custom_loss_without_mask_is_refused():
    model = sn.Sequential([sn.layers.Embedding(5, 2, mask_zero=True), sn.layers.GRU(3, return_sequences=True)])
    model.compile("sgd", loss=lambda y, p: sn.losses.MeanSquaredError()(y, p), metrics=[])
    with pytest.raises(ValueError, match="takes no mask= argument"):
        model.train_on_batch(np.array([[1, 2, 0]]), np.zeros((1, 3, 3)))


STEPS = 50
LEARNING_RATE = 2.0**-3


def _data(rng, V):
    ids = rng.integers(1, V, (16, 7))
    lengths = rng.integers(1, 8, 16)
    ids[np.arange(7)[None, :] >= lengths[:, None]] = 0  # right padding
    ids[3, 2] = 0  # a hole in the middle
    ids[5] = 0  # a sequence of padding alone
    return ids, rng.integers(0, 4, (16, 7))


def test_embedding_gru_dense_trains_like_keras_float64(backend):
    """Sequential Embedding(mask_zero) + GRU(return_sequences) + Dense: 50 SGD steps in float64 through Keras's own
    train_on_batch (so Keras's fit path is the one that masks its loss), the masked loss and accuracy of every step
    and the final weights as Keras's (1e-9)."""
    load_tensorflow()
    import keras

    rng = np.random.default_rng(2)
    V = 9
    keras_model = keras.Sequential([keras.Input((7,), dtype="int32"),
                                    keras.layers.Embedding(V, 6, mask_zero=True, dtype="float64"),
                                    keras.layers.GRU(5, return_sequences=True, dtype="float64"),
                                    keras.layers.Dense(4, dtype="float64")])
    keras_model.compile(keras.optimizers.SGD(LEARNING_RATE),
                        keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype="float64"),
                        metrics=[keras.metrics.SparseCategoricalAccuracy(dtype="float64")])
    ours = sn.Sequential([sn.layers.Embedding(V, 6, mask_zero=True), sn.layers.GRU(5, return_sequences=True),
                          sn.layers.Dense(4)], dtype="float64")
    ours.build((None, 7))
    ours.set_weights(keras_model.get_weights())
    ours.compile(sn.optimizers.SGD(LEARNING_RATE), sn.losses.SparseCategoricalCrossentropy(from_logits=True),
                 metrics=["accuracy"])
    for step in range(STEPS):
        x, y = _data(rng, V)
        logs_k = keras_model.train_on_batch(x, y, return_dict=True)
        logs = ours.train_on_batch(x, y)
        # Keras reports the loss through its loss tracker, a float32 Mean: equal to float32 rounding.
        assert abs(logs["loss"] - logs_k["loss"]) <= 1e-7 * abs(logs_k["loss"]), step
        assert abs(logs["accuracy"] - logs_k["sparse_categorical_accuracy"]) < 1e-12, step
    for w, w_k in zip(ours.get_weights(), keras_model.get_weights()):
        assert np.linalg.norm(w - w_k) <= 1e-9 * np.linalg.norm(w_k)
    x, y = _data(rng, V)
    result_k = keras_model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    result = ours.evaluate(x, y, batch_size=16)
    assert abs(result["loss"] - result_k["loss"]) <= 1e-7 * abs(result_k["loss"])
    assert abs(result["accuracy"] - result_k["sparse_categorical_accuracy"]) < 1e-12
    np.testing.assert_allclose(ours.predict(x, batch_size=16), keras_model.predict(x, verbose=0), rtol=1e-9,
                               atol=1e-12)
    # Several batches: Keras's metric is the accuracy over every unmasked position of all of them (a running total
    # and count), its loss the batches' losses weighted by their sizes.
    x2, y2 = _data(rng, V)
    x, y = np.concatenate([x, x2]), np.concatenate([y, y2])
    x[20:23] = 0  # batches of 5 then: some nearly all padding
    result_k = keras_model.evaluate(x, y, batch_size=5, verbose=0, return_dict=True)
    result = ours.evaluate(x, y, batch_size=5)
    # Keras's loss tracker adds the 7 batches' weighted losses in float32: its rounding, a few 1e-8 per addition.
    assert abs(result["loss"] - result_k["loss"]) <= 5e-7 * abs(result_k["loss"])
    assert abs(result["accuracy"] - result_k["sparse_categorical_accuracy"]) < 1e-7
