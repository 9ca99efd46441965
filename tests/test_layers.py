"""Layers: outputs and every gradient against Keras layers holding the same weights; sharing; modes."""
from __future__ import annotations

import functools
import os
import zlib

import numpy as np
import pytest

import scratchnet as sn
from helpers import assert_close, load_tensorflow
from scratchnet.gradcheck import check_layer

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
L = sn.layers


# -- against Keras -------------------------------------------------------------------------
# Each case: (Keras layer factory, scratchnet layer factory, input maker). Keras runs once per
# case (cached); the scratchnet layer then runs on every backend.
def _floats(shape):
    return lambda rng: rng.standard_normal(shape).astype(np.float32)


CASES = {
    "dense_relu": (lambda k: k.layers.Dense(5, activation="relu"), lambda: L.Dense(5, activation="relu"), _floats((4, 3))),
    "dense_on_sequences_no_bias": (
        lambda k: k.layers.Dense(3, use_bias=False),
        lambda: L.Dense(3, use_bias=False),
        _floats((2, 4, 5)),
    ),
    "conv2d_same_stride2_odd_size": (
        lambda k: k.layers.Conv2D(4, 3, strides=2, padding="same", activation="tanh"),
        lambda: L.Conv2D(4, 3, strides=2, padding="same", activation="tanh"),
        _floats((2, 7, 6, 3)),
    ),
    "conv2d_valid_rect_kernel": (
        lambda k: k.layers.Conv2D(2, (2, 3), padding="valid"),
        lambda: L.Conv2D(2, (2, 3), padding="valid"),
        _floats((1, 5, 5, 2)),
    ),
    "max_pool2d_same_non_divisible": (
        lambda k: k.layers.MaxPooling2D(pool_size=2, padding="same"),
        lambda: L.MaxPool2D(pool_size=2, padding="same"),
        _floats((2, 5, 7, 3)),
    ),
    "max_pool2d_overlapping_valid": (
        lambda k: k.layers.MaxPooling2D(pool_size=3, strides=2),
        lambda: L.MaxPool2D(pool_size=3, strides=2),
        _floats((1, 7, 7, 2)),
    ),
    "lstm_last_output": (lambda k: k.layers.LSTM(4), lambda: L.LSTM(4), _floats((3, 5, 2))),
    "lstm_return_sequences": (
        lambda k: k.layers.LSTM(3, return_sequences=True),
        lambda: L.LSTM(3, return_sequences=True),
        _floats((2, 4, 3)),
    ),
    "lstm_return_state": (
        lambda k: k.layers.LSTM(3, return_state=True),
        lambda: L.LSTM(3, return_state=True),
        _floats((2, 4, 3)),
    ),
    "lstm_return_sequences_and_state": (
        lambda k: k.layers.LSTM(2, return_sequences=True, return_state=True),
        lambda: L.LSTM(2, return_sequences=True, return_state=True),
        _floats((2, 3, 2)),
    ),
    # Repeated ids: their rows must receive the sum of the gradients.
    "embedding_repeated_ids": (
        lambda k: k.layers.Embedding(6, 3),
        lambda: L.Embedding(6, 3),
        lambda rng: np.array([[1, 4, 1], [4, 4, 0]], dtype=np.int32),
    ),
}


def _as_list(y):
    return list(y) if isinstance(y, (list, tuple)) else [y]


@functools.lru_cache(maxsize=None)
def keras_reference(case):
    """Inputs, weights, output weights R, and Keras's outputs and gradients of sum(y * R)."""
    tf_ = load_tensorflow()
    import keras

    make_keras, _, make_x = CASES[case]
    rng = np.random.default_rng(zlib.crc32(case.encode()))
    x = make_x(rng)
    klayer = make_keras(keras)
    klayer(x)  # build
    weights = [rng.standard_normal(w.shape).astype(np.float32) * 0.5 for w in klayer.get_weights()]
    klayer.set_weights(weights)
    xt = tf_.constant(x)
    with tf_.GradientTape() as tape:
        if x.dtype.kind == "f":
            tape.watch(xt)
        ys = [y.numpy() for y in _as_list(klayer(xt))]
        Rs = [rng.standard_normal(y.shape).astype(np.float32) for y in ys]
        loss = tf_.add_n([tf_.reduce_sum(y * r) for y, r in zip(_as_list(klayer(xt)), Rs)])
    grads = tape.gradient(loss, ([xt] if x.dtype.kind == "f" else []) + klayer.trainable_weights)
    grads = [np.asarray(tf_.convert_to_tensor(g)) for g in grads]
    dx = grads.pop(0) if x.dtype.kind == "f" else None
    return x, weights, Rs, ys, dx, grads


@pytest.mark.parametrize("case", sorted(CASES))
def test_layer_output_and_gradients_match_keras(case, backend):
    x, weights, Rs, ys, dx_expected, grads_expected = keras_reference(case)
    layer = CASES[case][1]()
    layer.forward(x)  # build
    layer.set_weights(weights)
    assert [p.shape for p in layer.parameters()] == [w.shape for w in weights]
    y, backprop = layer.forward(x, training=True)
    for got, want in zip(_as_list(y), ys):
        assert_close(sn.to_numpy(got), want, np.float32, f"{case}: output")
    dys = [backend.xp.asarray(r) for r in Rs]
    dx = backprop(dys if isinstance(y, list) else dys[0])
    if dx_expected is None:
        assert dx is None
    else:
        assert_close(sn.to_numpy(dx), dx_expected, np.float32, f"{case}: dx")
    for p, g in zip(layer.parameters(), grads_expected):
        assert_close(sn.to_numpy(p.grad), g, np.float32, f"{case}: d{p.name}")


def test_lstm_return_state_backprop_accepts_none_for_unused_outputs(backend, rng):
    layer = L.LSTM(3, return_state=True)
    x = rng.standard_normal((2, 4, 3)).astype(np.float32)
    (out, h, c), backprop = layer.forward(x, training=True)
    # The last output IS h: its gradient through either name is the same.
    assert_close(sn.to_numpy(out), sn.to_numpy(h), np.float32)
    dy = backend.xp.asarray(rng.standard_normal((2, 3)).astype(np.float32))
    dx_out = backprop([dy, None, None])
    grads_out = [sn.to_numpy(p.grad) for p in layer.parameters()]
    layer.zero_grad()
    dx_h = backprop([None, dy, None])
    assert_close(sn.to_numpy(dx_h), sn.to_numpy(dx_out), np.float32)
    for p, g in zip(layer.parameters(), grads_out):
        assert_close(sn.to_numpy(p.grad), g, np.float32, p.name)


# -- float64 gradients, by finite differences ------------------------------------------------
def test_stack_gradients_are_exact_in_float64(rng):
    with sn.use_backend("numpy"):
        model = sn.Sequential([
            L.Conv2D(2, 2, padding="same", activation="tanh", dtype="float64"),
            L.Flatten(dtype="float64"),
            L.Dense(3, activation="sigmoid", dtype="float64"),
        ])
        x = rng.standard_normal((2, 3, 3, 2))
        R = rng.standard_normal((2, 3))
        y, _ = model.forward(x, training=True)
        assert y.dtype == np.float64
        report = check_layer(model, x, dy=R, training=True)
        assert [c.name for c in report] == ["x"] + [p.name for p in model.parameters()]


# -- sharing and accumulation ---------------------------------------------------------------
def test_layer_used_twice_receives_the_sum_of_both_gradients(backend, rng):
    dense = L.Dense(3, activation="tanh")
    model = sn.Sequential([dense, dense])
    x = rng.standard_normal((4, 3)).astype(np.float32)
    dy = rng.standard_normal((4, 3)).astype(np.float32)
    y, backprop = model.forward(x, training=True)
    backprop(backend.xp.asarray(dy))
    assert len(list(model.parameters())) == 2, "a layer used twice has its weights listed once"
    # The same computation spelled out with the ops: two uses, two gradients, summed.
    W, b = (sn.to_numpy(p.value) for p in dense.parameters())
    with sn.use_backend("numpy"):
        z1, bp1 = sn.ops.dense(x, W, b)
        h1, t1 = sn.ops.tanh(z1)
        z2, bp2 = sn.ops.dense(h1, W, b)
        h2, t2 = sn.ops.tanh(z2)
        dh1, dW2, db2 = bp2(t2(dy))
        _, dW1, db1 = bp1(t1(dh1))
    assert_close(sn.to_numpy(y), h2, np.float32, "y")
    assert_close(sn.to_numpy(dense.kernel.grad), dW1 + dW2, np.float32, "kernel grad")
    assert_close(sn.to_numpy(dense.bias.grad), db1 + db2, np.float32, "bias grad")


def test_gradients_accumulate_across_backprops_until_zero_grad(backend, rng):
    layer = L.Dense(2)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    dy = backend.xp.asarray(rng.standard_normal((3, 2)).astype(np.float32))
    _, backprop = layer.forward(x, training=True)
    backprop(dy)
    once = sn.to_numpy(layer.kernel.grad)
    backprop(dy)
    assert_close(sn.to_numpy(layer.kernel.grad), 2 * once, np.float32)
    layer.zero_grad()
    assert all(p.grad is None for p in layer.parameters())


def test_backprop_leaves_the_incoming_gradient_untouched(backend, rng):
    model = sn.Sequential([L.Dense(3, activation="relu"), L.Dropout(0.5), L.Dense(3, activation="softmax")])
    x = rng.standard_normal((4, 3)).astype(np.float32)
    _, backprop = model.forward(x, training=True)
    dy = backend.xp.asarray(rng.standard_normal((4, 3)).astype(np.float32))
    before = sn.to_numpy(dy)
    backprop(dy)
    np.testing.assert_array_equal(sn.to_numpy(dy), before)


def test_dropout_is_active_only_in_training_mode(backend):
    model = sn.Sequential([L.Dropout(0.5, seed=3)])
    x = np.ones((50, 40), dtype=np.float32)
    y_eval, bp_eval = model.forward(x, training=False)
    np.testing.assert_array_equal(sn.to_numpy(y_eval), x)
    np.testing.assert_array_equal(sn.to_numpy(bp_eval(backend.xp.asarray(x))), x)
    y_train = sn.to_numpy(model.forward(x, training=True)[0])
    assert set(np.unique(y_train)) == {0.0, 2.0}
    assert 0.4 < (y_train == 0).mean() < 0.6
    y_again = sn.to_numpy(model.forward(x, training=True)[0])
    assert not np.array_equal(y_train, y_again), "each training call draws a new mask"


def test_stateful_lstm_carries_state_between_batches(backend, rng):
    x = rng.standard_normal((2, 6, 3)).astype(np.float32)
    whole = L.LSTM(4, return_sequences=True)
    ys_whole = sn.to_numpy(whole(x))
    stateful = L.LSTM(4, return_sequences=True, stateful=True)
    stateful(x[:, :3])
    stateful.set_weights(whole.get_weights())
    stateful.reset_states()
    first = sn.to_numpy(stateful(x[:, :3]))
    second = sn.to_numpy(stateful(x[:, 3:]))
    assert_close(np.concatenate([first, second], axis=1), ys_whole, np.float32)
    with pytest.raises(ValueError, match="fixed batch size"):
        stateful(x[:1, :3])
    stateful.reset_states()
    assert_close(sn.to_numpy(stateful(x[:, :3])), first, np.float32)


def test_lstm_initial_state_gradients_come_back_with_dx(backend, rng):
    layer = L.LSTM(2)
    x = rng.standard_normal((2, 3, 2)).astype(np.float32)
    h0 = rng.standard_normal((2, 2)).astype(np.float32)
    c0 = rng.standard_normal((2, 2)).astype(np.float32)
    y, backprop = layer.forward(x, training=True, initial_state=[h0, c0])
    assert not np.allclose(sn.to_numpy(y), sn.to_numpy(layer(x)))
    dx, dh0, dc0 = backprop(backend.xp.ones((2, 2), dtype=np.float32))
    assert dx.shape == x.shape and dh0.shape == h0.shape and dc0.shape == c0.shape


def test_flatten_reshape_and_activation_layers_round_trip_shapes(backend, rng):
    x = rng.standard_normal((2, 3, 4, 2)).astype(np.float32)
    model = sn.Sequential([L.Flatten(), L.Reshape((4, -1)), L.Activation("relu")])
    y, backprop = model.forward(x, training=True)
    assert y.shape == (2, 4, 6)
    np.testing.assert_array_equal(sn.to_numpy(y), np.maximum(x.reshape(2, 4, 6), 0))
    dx = backprop(backend.xp.ones((2, 4, 6), dtype=np.float32))
    np.testing.assert_array_equal(sn.to_numpy(dx), (x > 0).astype(np.float32))


# -- errors ----------------------------------------------------------------------------------
def test_bad_layer_arguments_and_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown activation 'relu6'"):
        L.Dense(3, activation="relu6")
    with pytest.raises(ValueError, match="padding must be 'valid', 'same', an int"):
        L.Conv2D(3, 3, padding="full")
    with pytest.raises(ValueError, match="units must be a positive int"):
        L.LSTM(0)
    with pytest.raises(ValueError, match=r"Dense 'dense': input must have rank >= 2 .* got shape \(3,\)"):
        L.Dense(2).forward(np.zeros(3, dtype=np.float32))
    with pytest.raises(ValueError, match=r"LSTM 'lstm': input must have rank 3"):
        L.LSTM(2).forward(np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"cannot reshape input \(2, 6\)"):
        L.Reshape((4,)).forward(np.zeros((2, 6), dtype=np.float32))
    dense = L.Dense(2)
    dense(np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"dense: x has 4 features but w expects 3"):
        dense(np.zeros((1, 4), dtype=np.float32))


def test_layers_serialize_to_configs_that_rebuild_them():
    layer = L.Conv2D(4, (3, 2), strides=2, padding="same", activation="relu",
                     kernel_initializer=sn.initializers.truncated_normal(0.1), kernel_regularizer=sn.regularizers.l2(0.01))
    clone = L.deserialize(L.serialize(layer))
    assert clone.get_config() == layer.get_config()
    model = sn.Sequential([L.Embedding(5, 2), L.LSTM(3, return_sequences=True), L.Dense(5)], name="lm")
    rebuilt = L.deserialize(L.serialize(model))
    assert rebuilt.get_config() == model.get_config()
