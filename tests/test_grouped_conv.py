"""Grouped and depthwise convolutions against TensorFlow: tf.nn.conv2d with a (kh, kw, C / groups, O) kernel
(TensorFlow's grouped convolution; its gradients, which TensorFlow's CPU lacks, through the groups written
one by one) and tf.nn.depthwise_conv2d, outputs and every gradient, float32 and float64;
the Keras layers Conv2D(groups=) and DepthwiseConv2D through from_keras / to_keras; finite differences."""
from __future__ import annotations

import numpy as np
import pytest

import scratchnet as sn
from helpers import assert_close, load_tensorflow, to_backend
from scratchnet.gradcheck import check_op


def _tape(tf, fn, arrays, dy):
    ts = [tf.constant(a) for a in arrays]
    with tf.GradientTape() as tape:
        tape.watch(ts)
        y = fn(*ts)
    return y.numpy(), [g.numpy() for g in tape.gradient(y, ts, output_gradients=tf.constant(dy))]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape, kernel, groups, strides, padding", [
    ((2, 7, 6, 4), (3, 3), 2, 1, "SAME"),
    ((1, 9, 5, 6), (3, 2), 3, 2, "VALID"),
    ((3, 5, 5, 8), (1, 1), 4, 1, "VALID"),
    ((2, 6, 6, 4), (5, 5), 4, 1, "SAME"),  # one channel per group
])
def test_grouped_conv2d_matches_tensorflow(backend, dtype, shape, kernel, groups, strides, padding):
    tf = load_tensorflow()
    rng = np.random.default_rng(0)
    C = shape[3]
    O = 2 * groups
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((*kernel, C // groups, O)).astype(dtype)
    b = rng.standard_normal(O).astype(dtype)
    y, backprop = sn.ops.grouped_conv2d(*to_backend(backend, x, w, b), strides, padding, groups)
    dy = rng.standard_normal(y.shape).astype(dtype)
    # TensorFlow's CPU has the grouped forward but not its gradients: the referee for those is the same
    # convolution written group by group in TensorFlow (tf.nn.conv2d on each slice, concatenated).
    Cg, Og = C // groups, O // groups

    def by_groups(x_, w_, b_):
        return tf.concat([tf.nn.conv2d(x_[..., g * Cg:(g + 1) * Cg], w_[..., g * Og:(g + 1) * Og], strides, padding)
                          for g in range(groups)], axis=3) + b_

    y_tf, grads = _tape(tf, by_groups, (x, w, b), dy)
    assert_close(sn.to_numpy(y), tf.nn.conv2d(x, w, strides, padding).numpy() + b, dtype)  # TensorFlow's own grouped forward
    assert_close(sn.to_numpy(y), y_tf, dtype)
    for ours, theirs in zip(backprop(to_backend(backend, dy)), grads):
        assert_close(sn.to_numpy(ours), theirs, dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("multiplier, strides, padding", [(1, 1, "SAME"), (3, 2, "VALID"), (2, 1, "SAME")])
def test_depthwise_conv2d_matches_tensorflow(backend, dtype, multiplier, strides, padding):
    tf = load_tensorflow()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 7, 8, 3)).astype(dtype)
    w = rng.standard_normal((3, 3, 3, multiplier)).astype(dtype)
    b = rng.standard_normal(3 * multiplier).astype(dtype)
    y, backprop = sn.ops.depthwise_conv2d(*to_backend(backend, x, w, b), strides, padding)
    dy = rng.standard_normal(y.shape).astype(dtype)
    y_tf, grads = _tape(tf, lambda x_, w_, b_: tf.nn.depthwise_conv2d(
        x_, w_, (1, strides, strides, 1), padding) + b_, (x, w, b), dy)
    assert_close(sn.to_numpy(y), y_tf, dtype)
    for ours, theirs in zip(backprop(to_backend(backend, dy)), grads):
        assert_close(sn.to_numpy(ours), theirs, dtype)


def test_grouped_conv2d_gradients_by_finite_differences():
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((1, 4, 4, 4)), rng.standard_normal((2, 2, 2, 4))
    with sn.use_backend("numpy"):
        check_op(lambda x_, w_: sn.ops.grouped_conv2d(x_, w_, None, 1, "SAME", 2), x, w)


def test_the_keras_layers_convert_both_ways_and_train_the_same(backend):
    load_tensorflow()
    import keras

    from scratchnet.interop import from_keras, to_keras

    km = keras.Sequential([keras.Input((6, 6, 4), dtype="float64"),
                           keras.layers.Conv2D(6, 3, groups=2, padding="same", activation="relu", dtype="float64"),
                           keras.layers.DepthwiseConv2D(3, depth_multiplier=2, dtype="float64"),
                           keras.layers.Flatten(dtype="float64"), keras.layers.Dense(3, dtype="float64")])
    ours = from_keras(km)
    assert [type(layer).__name__ for layer in ours.layers][:2] == ["Conv2D", "DepthwiseConv2D"]
    x = np.random.default_rng(3).standard_normal((4, 6, 6, 4))
    np.testing.assert_allclose(sn.to_numpy(ours(to_backend(backend, x))), km(x).numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(to_keras(ours)(x).numpy(), km(x).numpy())


def test_grouped_and_depthwise_layers_export_and_load(tmp_path):
    model = sn.Sequential([sn.layers.Conv2D(6, 3, groups=3, padding="same"), sn.layers.DepthwiseConv2D(
        2, depth_multiplier=2, use_bias=False), sn.layers.Flatten(), sn.layers.Dense(2)])
    x = np.random.default_rng(4).random((2, 5, 5, 3), dtype=np.float32)
    expected = model.predict(x)
    sn.export.save_model(model, str(tmp_path / "m"))
    loaded = sn.export.load_model(str(tmp_path / "m"))
    assert [p.shape for p in loaded.parameters()] == [(3, 3, 1, 6), (6,), (2, 2, 6, 2), (192, 2), (2,)]
    np.testing.assert_array_equal(loaded.predict(x), expected)


def test_bad_groups_are_refused_by_name():
    with sn.use_backend("numpy"):
        refused_by_name()


def refused_by_name():
    x, w = np.zeros((1, 4, 4, 6), np.float32), np.zeros((3, 3, 2, 6), np.float32)
    with pytest.raises(ValueError, match=r"grouped_conv2d: groups=4 must divide the channels 6 and the filters 6"):
        sn.ops.grouped_conv2d(x, w, None, 1, "SAME", 4)
    with pytest.raises(ValueError, match=r"w must have C / groups = 3 input channels, got 2"):
        sn.ops.grouped_conv2d(x, w, None, 1, "SAME", 2)
    with pytest.raises(ValueError, match="groups=4 must divide filters=6"):
        sn.layers.Conv2D(6, 3, groups=4)
    with pytest.raises(ValueError, match="groups=4 must divide the input's 6 channels"):
        sn.layers.Conv2D(8, 3, groups=4)(x)
