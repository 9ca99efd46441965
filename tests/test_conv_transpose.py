"""sn.ops.conv2d_transpose and sn.layers.Conv2DTranspose against tf.nn.conv2d_transpose and Keras's layer
(outputs and every gradient, float32 and float64), its adjointness with conv2d, and its errors."""
from __future__ import annotations

import numpy as np
import pytest

import scratchnet as sn
from helpers import assert_close, load_tensorflow, to_backend
from scratchnet.gradcheck import check_op

DTYPES = [np.float32, np.float64]
DTYPE_IDS = ["float32", "float64"]
CASES = {  # x shape, w shape (kh, kw, F, C), strides, padding
    "3x3 stride 2 same": ((2, 5, 4, 3), (3, 3, 6, 3), 2, "SAME"),
    "2x2 stride 2 valid": ((2, 4, 4, 2), (2, 2, 5, 2), 2, "VALID"),
    "4x3 strides (2, 3) valid": ((1, 3, 3, 2), (4, 3, 2, 2), (2, 3), "VALID"),
    "5x5 stride 1 same": ((2, 6, 5, 1), (5, 5, 3, 1), 1, "SAME"),
    "3x3 stride 3 same (no overlaps)": ((1, 3, 2, 2), (3, 3, 2, 2), 3, "SAME"),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", list(CASES))
def test_conv2d_transpose_matches_tensorflow(backend, case, dtype):
    tf = load_tensorflow()
    x_shape, w_shape, strides, padding = CASES[case]
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(x_shape).astype(dtype), rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[2]).astype(dtype)
    y, backprop = sn.ops.conv2d_transpose(*to_backend(backend, x, w, b), strides=strides, padding=padding)
    dy = rng.standard_normal(tuple(y.shape)).astype(dtype)
    dx, dw, db = backprop(to_backend(backend, dy))
    xt, wt, bt = tf.Variable(x), tf.Variable(w), tf.Variable(b)
    with tf.GradientTape() as tape:
        yt = tf.nn.conv2d_transpose(xt, wt, tuple(y.shape), strides, padding) + bt
        loss = tf.reduce_sum(yt * dy)
    grads = tape.gradient(loss, [xt, wt, bt])
    assert_close(sn.to_numpy(y), yt.numpy(), dtype, "y")
    for name, ours, theirs in zip(("dx", "dw", "db"), (dx, dw, db), grads):
        assert_close(sn.to_numpy(ours), theirs.numpy(), dtype, name)


def test_it_is_the_transpose_of_conv2d():
    """<conv2d(u, w), x> = <u, conv2d_transpose(x, w)> for every u, x: the two maps are adjoint."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((3, 3, 4, 2))  # conv2d: 4 -> 2 channels; the transpose: 2 -> 4
    u = rng.standard_normal((2, 8, 6, 4))
    with sn.use_backend("numpy"):
        z, _ = sn.ops.conv2d(u, w.transpose(0, 1, 2, 3), strides=2, padding="SAME")
        x = rng.standard_normal(z.shape)
        y, _ = sn.ops.conv2d_transpose(x, w, strides=2, padding="SAME")
    assert y.shape == u.shape
    assert np.isclose(np.sum(z * x), np.sum(u * y), rtol=1e-12)


def test_finite_differences_float64():
    rng = np.random.default_rng(2)
    x, w, b = rng.standard_normal((1, 3, 2, 2)), rng.standard_normal((3, 2, 3, 2)), rng.standard_normal(3)
    with sn.use_backend("numpy"):
        assert check_op(lambda x, w, b: sn.ops.conv2d_transpose(x, w, b, strides=2, padding="SAME"), x, w, b,
                        mode="full").passed


def test_the_layer_matches_keras_and_converts_both_ways(backend):
    load_tensorflow()
    import keras

    km = keras.Sequential([keras.Input((4, 5, 3), dtype="float64"),
                           keras.layers.Conv2DTranspose(2, 3, strides=2, padding="same", activation="relu",
                                                        dtype="float64")])
    rng = np.random.default_rng(3)
    km.set_weights([rng.standard_normal(w.shape) for w in km.get_weights()])
    x = rng.standard_normal((2, 4, 5, 3))
    ours = sn.interop.from_keras(km)
    assert_close(sn.to_numpy(ours(backend.xp.asarray(x))), km(x).numpy(), np.float64, "y")
    np.testing.assert_allclose(sn.interop.to_keras(ours)(x).numpy(), km(x).numpy(), rtol=1e-12, atol=1e-13)
    layer = ours.layers[0]
    config = layer.get_config()
    assert sn.layers.deserialize({"class_name": "Conv2DTranspose", "config": config}).get_config() == config


@pytest.mark.parametrize("call, message", [
    (lambda x, w: sn.ops.conv2d_transpose(x, w[:, :, :, :1]), "x has 2 channels but w (kh, kw, F, C) expects C = 1"),
    (lambda x, w: sn.ops.conv2d_transpose(x, w, padding=1), "padding must be 'SAME' or 'VALID'"),
    (lambda x, w: sn.ops.conv2d_transpose(x, w, b=np.ones(5)), "b must have shape (3,)"),
    (lambda x, w: sn.layers.Conv2DTranspose(0, 3), "filters must be a positive int"),
])
def test_bad_arguments_are_one_clear_error(call, message):
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((1, 3, 3, 2)), rng.standard_normal((2, 2, 3, 2))
    with sn.use_backend("numpy"), pytest.raises(ValueError) as info:
        call(x, w)
    assert message in str(info.value)


def test_the_layer_exports_and_loads_with_the_same_outputs(tmp_path):
    from scratchnet.export import load_model, save_model

    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 4, 4, 2))
    with sn.use_backend("numpy"):
        model = sn.Sequential([sn.layers.Conv2DTranspose(3, 3, strides=2, padding="same"), sn.layers.Flatten(),
                               sn.layers.Dense(2)], dtype="float64")
        y = sn.to_numpy(model(x))
        assert model.layers[0].kernel.shape == (3, 3, 3, 2)  # (kh, kw, F, C)
        save_model(model, str(tmp_path / "m.snm"))
        np.testing.assert_array_equal(sn.to_numpy(load_model(str(tmp_path / "m.snm"))(x)), y)
