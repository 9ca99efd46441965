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
    (lambda x, w: sn.ops.conv2d_transpose(x, w, padding="FULL"), "padding must be 'SAME' or 'VALID', an int"),
    (lambda x, w: sn.ops.conv2d_transpose(x, w, padding=(1, -1)), "padding must be 'SAME', 'VALID', an int"),
    (lambda x, w: sn.ops.conv2d_transpose(x, w, strides=2, output_padding=2),
     "output_padding (2, 2) must be smaller than the strides (2, 2)"),
    (lambda x, w: sn.ops.conv2d_transpose(x, w, strides=2, output_padding=(1, -1)),
     "output_padding must be None, a non-negative int or a pair of them, got (1, -1)"),
    (lambda x, w: sn.ops.conv2d_transpose(x, w, output_padding=1), "output_padding (1, 1) must be smaller than the "
     "strides (1, 1)"),
    # an even kernel, SAME and output_padding 0: 4 rows, which a SAME convolution of stride 2 maps to 2, not 3
    (lambda x, w: sn.ops.conv2d_transpose(x, w, strides=2, padding="SAME", output_padding=0),
     "padding 'SAME' and output_padding (0, 0) give an output of 4x4, which a 2x2 convolution with strides (2, 2) "
     "does not map back to the input's 3x3"),
    (lambda x, w: sn.ops.conv2d_transpose(x, w, padding=((2, 2), (0, 0))), "give an output of 0x4"),
    (lambda x, w: sn.layers.Conv2DTranspose(3, 3, strides=2, output_padding=3), "Conv2DTranspose: output_padding"),
    (lambda x, w: sn.layers.Conv2DTranspose(3, 3, padding="full"), "Conv2DTranspose: padding must be"),
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



# -- output_padding and explicit padding (issue 26) ------------------------------------------------------
PADDED = {  # x shape, w shape (kh, kw, F, C), strides, padding, output_padding
    "same 3x3 stride 2, output_padding 1": ((2, 3, 4, 2), (3, 3, 5, 2), 2, "SAME", 1),
    "same 3x3 stride 2, output_padding (0, 1)": ((2, 3, 4, 2), (3, 3, 5, 2), 2, "SAME", (0, 1)),
    "same 4x3 strides (3, 2), output_padding (2, 1)": ((1, 3, 3, 3), (4, 3, 2, 3), (3, 2), "SAME", (2, 1)),
    "valid 3x3 stride 2, output_padding 1": ((2, 3, 4, 2), (3, 3, 5, 2), 2, "VALID", 1),
    "valid 2x2 stride 3 (kernel smaller than stride: H * s)": ((2, 3, 2, 2), (2, 2, 3, 2), 3, "VALID", None),
    "explicit 1": ((2, 3, 4, 2), (3, 3, 5, 2), 2, 1, None),
    "explicit (1, 2), output_padding 1": ((1, 4, 4, 2), (3, 5, 2, 2), 2, (1, 2), 1),
    "explicit ((2, 0), (0, 1)), output_padding (1, 0)": ((2, 3, 3, 1), (3, 3, 4, 1), (2, 3), ((2, 0), (0, 1)), (1, 0)),
    "explicit ((0, 3), (1, 1)) stride 1": ((1, 5, 4, 2), (4, 3, 3, 2), 1, ((0, 3), (1, 1)), None),
}


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _expected_size(H, k, s, padding, output_padding, axis):
    """Keras's sizes (keras.src.backend.common.backend_utils) and PyTorch's for an explicit padding, by hand."""
    p = None if output_padding is None else _pair(output_padding)[axis]
    if padding == "SAME":
        return H * s if p is None else (H - 1) * s + k % 2 + p
    if padding == "VALID":
        return (H - 1) * s + k + (max(k, s) - k if p is None else p)
    pads = ((padding, padding),) * 2 if isinstance(padding, int) else (
        tuple((v, v) for v in padding) if isinstance(padding[0], int) else padding)
    return (H - 1) * s + k - sum(pads[axis]) + (p or 0)


def _tf_padding(padding):
    if isinstance(padding, str):
        return padding
    if isinstance(padding, int):
        return [[0, 0], [padding, padding], [padding, padding], [0, 0]]
    if isinstance(padding[0], int):
        return [[0, 0], [padding[0], padding[0]], [padding[1], padding[1]], [0, 0]]
    return [[0, 0], list(padding[0]), list(padding[1]), [0, 0]]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", list(PADDED))
def test_output_padding_and_explicit_padding_match_tensorflow(backend, case, dtype):
    tf = load_tensorflow()
    x_shape, w_shape, strides, padding, output_padding = PADDED[case]
    rng = np.random.default_rng(6)
    x, w = rng.standard_normal(x_shape).astype(dtype), rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[2]).astype(dtype)
    y, backprop = sn.ops.conv2d_transpose(*to_backend(backend, x, w, b), strides=strides, padding=padding,
                                          output_padding=output_padding)
    (sh, sw), (N, H, W, _), (kh, kw, F, _) = _pair(strides), x_shape, w_shape
    assert tuple(y.shape) == (N, _expected_size(H, kh, sh, padding, output_padding, 0),
                              _expected_size(W, kw, sw, padding, output_padding, 1), F)
    dy = rng.standard_normal(tuple(y.shape)).astype(dtype)
    dx, dw, db = backprop(to_backend(backend, dy))
    xt, wt, bt = tf.Variable(x), tf.Variable(w), tf.Variable(b)
    with tf.GradientTape() as tape:
        yt = tf.nn.conv2d_transpose(xt, wt, tuple(y.shape), strides, _tf_padding(padding)) + bt
        loss = tf.reduce_sum(yt * dy)
    grads = tape.gradient(loss, [xt, wt, bt])
    assert_close(sn.to_numpy(y), yt.numpy(), dtype, "y")
    for name, ours, theirs in zip(("dx", "dw", "db"), (dx, dw, db), grads):
        assert_close(sn.to_numpy(ours), theirs.numpy(), dtype, name)


LAYER_CASES = [(3, 2, "same", 1), (3, 2, "same", (1, 0)), (4, 3, "same", 2), (3, 2, "valid", 1), (2, 3, "valid", None),
               (2, 3, "valid", 2), (5, 2, "valid", (0, 1))]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("kernel_size, strides, padding, output_padding", LAYER_CASES)
def test_the_layer_with_output_padding_matches_keras(backend, kernel_size, strides, padding, output_padding, dtype):
    """Keras's Conv2DTranspose(output_padding=...): its output shape and values, and every gradient (GradientTape)."""
    tf = load_tensorflow()
    import keras

    name = np.dtype(dtype).name
    kl = keras.layers.Conv2DTranspose(4, kernel_size, strides=strides, padding=padding, output_padding=output_padding,
                                      activation="relu", dtype=name)
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 3, 5, 3)).astype(dtype)
    kl.build(x.shape)
    kl.set_weights([rng.standard_normal(v.shape).astype(dtype) for v in kl.get_weights()])
    xt = tf.Variable(x)
    with tf.GradientTape() as tape:
        yt = kl(xt)
        dy = rng.standard_normal(tuple(yt.shape)).astype(dtype)
        loss = tf.reduce_sum(yt * dy)
    grads = tape.gradient(loss, [xt, *kl.trainable_weights])
    model = sn.Sequential([sn.layers.Conv2DTranspose(4, kernel_size, strides=strides, padding=padding,
                                                     output_padding=output_padding, activation="relu")], dtype=name)
    model.build((None, 3, 5, 3))
    model.set_weights(kl.get_weights())
    y, backprop = model.layers[0].forward(to_backend(backend, x), training=True)
    assert tuple(y.shape) == tuple(yt.shape)
    dx = backprop(to_backend(backend, dy))
    assert_close(sn.to_numpy(y), yt.numpy(), dtype, "y")
    layer = model.layers[0]
    for label, ours, theirs in zip(("dx", "dkernel", "dbias"), (dx, layer.kernel.grad, layer.bias.grad), grads):
        assert_close(sn.to_numpy(ours), theirs.numpy(), dtype, label)


def test_finite_differences_with_output_padding_and_explicit_padding_float64():
    rng = np.random.default_rng(9)
    x, w, b = rng.standard_normal((1, 3, 2, 2)), rng.standard_normal((3, 2, 3, 2)), rng.standard_normal(3)
    with sn.use_backend("numpy"):
        for padding, output_padding in (("SAME", (1, 1)), ("VALID", 1), (((1, 0), (0, 1)), (1, 1))):
            assert check_op(lambda x, w, b: sn.ops.conv2d_transpose(x, w, b, strides=2, padding=padding,
                                                                    output_padding=output_padding),
                            x, w, b, mode="full").passed


def test_it_stays_the_transpose_of_conv2d_with_explicit_padding_and_output_padding():
    """<conv2d(u, w, pads), x> = <u, conv2d_transpose(x, w, pads, output_padding)>, u the transpose's output shape."""
    rng = np.random.default_rng(10)
    w = rng.standard_normal((3, 3, 4, 2))
    x = rng.standard_normal((2, 4, 3, 2))
    with sn.use_backend("numpy"):
        y, _ = sn.ops.conv2d_transpose(x, w, strides=2, padding=((1, 0), (2, 1)), output_padding=(1, 1))
        u = rng.standard_normal(y.shape)
        z, _ = sn.ops.conv2d(u, w, strides=2, padding=((1, 0), (2, 1)))
    assert z.shape == x.shape
    assert np.isclose(np.sum(z * x), np.sum(u * y), rtol=1e-12)


def test_the_layer_config_keeps_output_padding_and_explicit_padding():
    layer = sn.layers.Conv2DTranspose(3, 3, strides=2, padding=(1, 0), output_padding=(1, 0))
    config = layer.get_config()
    assert config["output_padding"] == (1, 0) and config["padding"] == ((1, 1), (0, 0))
    again = sn.layers.deserialize({"class_name": "Conv2DTranspose", "config": config})
    assert again.get_config() == config
    assert sn.layers.Conv2DTranspose(3, 3).get_config()["output_padding"] is None


@pytest.mark.parametrize("padding, output_padding", [("same", 1), ("valid", (1, 0)), ("same", None)])
def test_output_padding_travels_through_from_keras_to_keras_and_export(tmp_path, padding, output_padding):
    load_tensorflow()
    import keras

    from scratchnet.interop import from_keras, to_keras

    km = keras.Sequential([keras.Input((5, 4, 3)), keras.layers.Conv2DTranspose(
        4, 3, strides=2, padding=padding, output_padding=output_padding)])
    x = np.random.default_rng(0).random((2, 5, 4, 3), dtype=np.float32)
    ours = from_keras(km)
    np.testing.assert_allclose(ours.predict(x), km.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(to_keras(ours).predict(x, verbose=0), km.predict(x, verbose=0))
    sn.export.save_model(ours, str(tmp_path / "m"))
    np.testing.assert_array_equal(sn.export.load_model(str(tmp_path / "m")).predict(x), ours.predict(x))
