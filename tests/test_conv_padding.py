"""Explicit padding (conv2d, max_pool2d, avg_pool2d) and dilation (conv2d): against TensorFlow where it has
them, against the formula where it does not, through the layers, Keras interop and export; and their errors."""
from __future__ import annotations

import numpy as np
import pytest

import scratchnet as sn
from helpers import assert_close, load_tensorflow, to_backend
from scratchnet.gradcheck import check_op

DTYPES = [np.float32, np.float64]
DTYPE_IDS = ["float32", "float64"]

#: (padding as scratchnet takes it, as (top, bottom, left, right))
PADDINGS = [(1, (1, 1, 1, 1)), ((2, 0), (2, 2, 0, 0)), (((0, 3), (2, 1)), (0, 3, 2, 1))]
PADDING_IDS = ["int", "pair", "per-side"]


def tf_conv(x, w, dy, pads, dilation):
    """TensorFlow's conv2d and its gradients. Its CPU kernels have no dilated backward, so a dilated one is
    tf.nn.atrous_conv2d (space-to-batch) on the explicitly padded input."""
    tf = load_tensorflow()
    top, bottom, left, right = pads
    paddings = [[0, 0], [top, bottom], [left, right], [0, 0]]
    xt, wt = tf.Variable(x), tf.Variable(w)
    with tf.GradientTape() as tape:
        if dilation == 1:
            y = tf.nn.conv2d(xt, wt, 1, paddings)
        else:
            y = tf.nn.atrous_conv2d(tf.pad(xt, paddings), wt, dilation, "VALID")
        loss = tf.reduce_sum(y * dy)
    dx, dw = tape.gradient(loss, [xt, wt])
    return y.numpy(), dx.numpy(), dw.numpy()


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("dilation", [1, 2, 3])
@pytest.mark.parametrize("padding, pads", PADDINGS, ids=PADDING_IDS)
def test_conv2d_explicit_padding_and_dilation_match_tensorflow(backend, padding, pads, dilation, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 9, 8, 3)).astype(dtype)
    w = rng.standard_normal((3, 2, 3, 4)).astype(dtype)
    y, backprop = sn.ops.conv2d(*to_backend(backend, x, w), padding=padding, dilations=dilation)
    dy = rng.standard_normal(tuple(y.shape)).astype(dtype)
    dx, dw, _ = backprop(to_backend(backend, dy))
    y_tf, dx_tf, dw_tf = tf_conv(x, w, dy, pads, dilation)
    assert_close(sn.to_numpy(y), y_tf, dtype, "y")
    assert_close(sn.to_numpy(dx), dx_tf, dtype, "dx")
    assert sn.to_numpy(dw).shape == w.shape
    assert_close(sn.to_numpy(dw), dw_tf, dtype, "dw")


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
def test_dilation_with_named_padding_matches_tensorflow(backend, padding):
    """SAME with a dilated kernel pads for its dilated size, as TensorFlow does (forward: tf.nn.conv2d)."""
    tf = load_tensorflow()
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((2, 10, 9, 2)), rng.standard_normal((3, 3, 2, 5))
    y, _ = sn.ops.conv2d(*to_backend(backend, x, w), padding=padding, dilations=(2, 3))
    assert_close(sn.to_numpy(y), tf.nn.conv2d(x, w, 1, padding, dilations=(2, 3)).numpy(), np.float64, "y")


def test_conv2d_explicit_padding_and_dilation_finite_differences():
    rng = np.random.default_rng(2)
    x, w, b = rng.standard_normal((1, 6, 5, 2)), rng.standard_normal((2, 3, 2, 3)), rng.standard_normal(3)
    with sn.use_backend("numpy"):
        assert check_op(lambda x, w, b: sn.ops.conv2d(x, w, b, padding=((1, 2), (0, 1)), dilations=(2, 1)),
                        x, w, b, mode="full").passed


def _pool_formula(x, k, s, pads, kind):
    """max (padding never wins) or mean over the real cells of each window, by loops: the oracle."""
    top, bottom, left, right = pads
    N, H, W, C = x.shape
    fill = -np.inf if kind == "max" else np.nan
    xp = np.full((N, H + top + bottom, W + left + right, C), fill)
    xp[:, top:top + H, left:left + W] = x
    OH, OW = (H + top + bottom - k) // s + 1, (W + left + right - k) // s + 1
    y = np.empty((N, OH, OW, C))
    for i in range(OH):
        for j in range(OW):
            window = xp[:, i * s:i * s + k, j * s:j * s + k].reshape(N, -1, C)
            y[:, i, j] = window.max(axis=1) if kind == "max" else np.nanmean(window, axis=1)
    return y


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("padding, pads", [(1, (1, 1, 1, 1)), (((0, 1), (1, 0)), (0, 1, 1, 0))],
                         ids=["int", "per-side"])
def test_pools_with_explicit_padding_match_the_formula_and_their_gradients_are_right(backend, kind, padding, pads):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 7, 6, 3))
    op = sn.ops.max_pool2d if kind == "max" else sn.ops.avg_pool2d
    y, _ = op(to_backend(backend, x), 3, 2, padding=padding)
    np.testing.assert_allclose(sn.to_numpy(y), _pool_formula(x, 3, 2, pads, kind), rtol=1e-14, atol=1e-15)
    with sn.use_backend("numpy"):
        assert check_op(lambda x: op(x, 3, 2, padding=padding), x, mode="full").passed


def test_max_pool_explicit_padding_matches_tensorflow_in_float32():
    """TensorFlow's explicitly padded max pool computes in float32 even on float64 input (its result equals the
    float32 one), so it referees float32 only; float64 is held to the formula above."""
    tf = load_tensorflow()
    x = np.random.default_rng(4).standard_normal((2, 7, 6, 3)).astype(np.float32)
    with sn.use_backend("numpy"):
        y, _ = sn.ops.max_pool2d(x, 3, 2, padding=((1, 1), (0, 1)))
    np.testing.assert_array_equal(y, tf.nn.max_pool2d(x, 3, 2, [[0, 0], [1, 1], [0, 1], [0, 0]]).numpy())


def test_layers_take_explicit_padding_and_dilation_and_round_trip_them(tmp_path):
    from scratchnet.export import load_model, save_model

    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 12, 12, 1))
    with sn.use_backend("numpy"):
        model = sn.Sequential([sn.layers.Conv2D(4, 3, padding=((1, 2), (2, 1)), dilation_rate=2),
                               sn.layers.MaxPool2D(3, 2, padding=1), sn.layers.AveragePooling2D(2, padding=(1, 0)),
                               sn.layers.Flatten(), sn.layers.Dense(2)], dtype="float64")
        y = sn.to_numpy(model(x))
        for layer in model.layers[:3]:
            config = layer.get_config()
            again = sn.layers.deserialize({"class_name": type(layer).__name__, "config": config})
            assert again.get_config() == config
        save_model(model, str(tmp_path / "m.snm"))
        np.testing.assert_array_equal(sn.to_numpy(load_model(str(tmp_path / "m.snm"))(x)), y)


def test_keras_dilated_conv_converts_both_ways_and_explicit_padding_is_refused_by_to_keras():
    load_tensorflow()
    import keras

    km = keras.Sequential([keras.Input((10, 10, 2), dtype="float64"),
                           keras.layers.Conv2D(3, 3, dilation_rate=2, padding="same", dtype="float64")])
    x = np.random.default_rng(6).standard_normal((2, 10, 10, 2))
    with sn.use_backend("numpy"):
        ours = sn.interop.from_keras(km)
        np.testing.assert_allclose(sn.to_numpy(ours(x)), km(x).numpy(), rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(sn.interop.to_keras(ours)(x).numpy(), km(x).numpy(), rtol=1e-12, atol=1e-13)
        padded = sn.Sequential([sn.layers.Conv2D(3, 3, padding=1)])
        padded.build((None, 10, 10, 2))
        with pytest.raises(ValueError, match=r"explicit padding .* \(put a keras.layers.ZeroPadding2D"):
            sn.interop.to_keras(padded)


@pytest.mark.parametrize("call, message", [
    (lambda x, w: sn.ops.conv2d(x, w, strides=2, dilations=2), "a dilated convolution takes strides 1"),
    (lambda x, w: sn.ops.conv2d(x, w, padding=-1), "non-negative ints"),
    (lambda x, w: sn.ops.conv2d(x, w, padding=(1, 2, 3, 4)), "((top, bottom), (left, right))"),
    (lambda x, w: sn.ops.conv2d(x, w, padding=1.5), "non-negative ints"),
    (lambda x, w: sn.ops.conv2d(x, w, dilations=0), "dilations"),
    (lambda x, w: sn.ops.conv2d(x, w, dilations=5), "dilations: (5, 5), so the kernel spans 11x11"),
    (lambda x, w: sn.ops.max_pool2d(x, 3, 1, padding=2), "at most half the window"),
    (lambda x, w: sn.layers.Conv2D(2, 3, strides=2, dilation_rate=2), "strides 1"),
])
def test_bad_padding_and_dilation_are_one_clear_error(call, message):
    rng = np.random.default_rng(7)
    x, w = rng.standard_normal((1, 5, 5, 2)), rng.standard_normal((3, 3, 2, 2))
    with sn.use_backend("numpy"), pytest.raises(ValueError) as info:
        call(x, w)
    assert message in str(info.value)
