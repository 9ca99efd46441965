"""Layer and batch normalization: the ops against TensorFlow and finite differences, the layers against Keras's
(outputs, input and weight gradients, the moving averages, training and inference), float32 and float64."""
from __future__ import annotations

import numpy as np
import pytest

import scratchnet as sn
from helpers import assert_close, load_tensorflow, to_backend
from scratchnet.gradcheck import check_op

DTYPES = [np.float32, np.float64]
DTYPE_IDS = ["float32", "float64"]


def data(shape, dtype, seed=0, offset=3.0):
    """Inputs far from zero mean and unit variance (an offset and a spread per channel), and an upstream gradient."""
    rng = np.random.default_rng(seed)
    x = offset + rng.standard_normal(shape) * np.linspace(0.5, 4.0, shape[-1])
    return x.astype(dtype), rng.standard_normal(shape).astype(dtype)


def keras_layer(kind, dtype, x, dy, training, **kwargs):
    """Keras's output, dx, weight gradients and weights after the call (moving averages updated in training)."""
    tf = load_tensorflow()
    layer = getattr(tf.keras.layers, kind)(dtype="float64" if dtype == np.float64 else "float32", **kwargs)
    xt = tf.constant(x)
    layer(xt)  # build
    rng = np.random.default_rng(5)
    weights = [(1 + 0.3 * rng.standard_normal(w.shape)).astype(dtype) if "variance" in w.name or "gamma" in w.name
               else (0.3 * rng.standard_normal(w.shape)).astype(dtype) for w in layer.weights]
    layer.set_weights(weights)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = layer(xt, training=training)
        loss = tf.reduce_sum(y * dy)
    trainable = layer.trainable_weights
    grads = tape.gradient(loss, [xt, *trainable])
    return y.numpy(), grads[0].numpy(), [g.numpy() for g in grads[1:]], weights, [w.numpy() for w in layer.weights]


def ours(kind, backend, dtype, x, dy, training, weights, **kwargs):
    layer = getattr(sn.layers, kind)(dtype=dtype, **kwargs)
    layer.forward(to_backend(backend, x))  # build (inference: no moving-average update)
    layer.set_weights(weights)
    y, backprop = layer.forward(to_backend(backend, x), training=training)
    layer.zero_grad()
    dx = backprop(to_backend(backend, dy))
    trainable = [p for p in layer.parameters() if p.trainable]
    return (sn.to_numpy(y), sn.to_numpy(dx), [sn.to_numpy(p.grad) for p in trainable],
            [sn.to_numpy(w) for w in layer.get_weights()])


SHAPES = {"rows": (6, 5), "sequence": (3, 4, 8), "image": (2, 3, 3, 4)}


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("affine", [dict(), dict(center=False), dict(scale=False)], ids=["affine", "no-beta", "no-gamma"])
def test_layer_normalization_matches_keras(backend, dtype, shape, affine):
    x, dy = data(SHAPES[shape], dtype)
    y_k, dx_k, wg_k, weights, _ = keras_layer("LayerNormalization", dtype, x, dy, True, **affine)
    y, dx, wg, _ = ours("LayerNormalization", backend, dtype, x, dy, True, weights, **affine)
    assert_close(y, y_k, dtype, "y")
    assert_close(dx, dx_k, dtype, "dx")
    assert len(wg) == len(wg_k)
    for g, g_k in zip(wg, wg_k):
        assert_close(g, g_k, dtype, "weight gradient")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
def test_batch_normalization_matches_keras(backend, dtype, shape, training):
    """Output, dx, dgamma, dbeta, and the moving averages after the call (updated with momentum in training only)."""
    x, dy = data(SHAPES[shape], dtype, seed=1)
    y_k, dx_k, wg_k, weights, after_k = keras_layer("BatchNormalization", dtype, x, dy, training, momentum=0.9)
    y, dx, wg, after = ours("BatchNormalization", backend, dtype, x, dy, training, weights, momentum=0.9)
    assert_close(y, y_k, dtype, "y")
    assert_close(dx, dx_k, dtype, "dx")
    for g, g_k, name in zip(wg, wg_k, ("dgamma", "dbeta")):
        assert_close(g, g_k, dtype, name)
    for w, w_k, name in zip(after, after_k, ("gamma", "beta", "moving_mean", "moving_variance")):
        assert_close(w, w_k, dtype, name)
    if not training:
        for w, w0 in zip(after[2:], weights[2:]):
            np.testing.assert_array_equal(w, w0)


@pytest.mark.parametrize("op", ["layer_norm", "batch_norm"])
def test_float64_finite_differences(op):
    x, _ = data((4, 3, 5), np.float64, seed=2)
    rng = np.random.default_rng(3)
    gamma, beta = 1 + rng.standard_normal(5), rng.standard_normal(5)
    fn = getattr(sn.ops, op)
    with sn.use_backend("numpy"):
        if op == "layer_norm":
            assert check_op(lambda x, g, b: fn(x, g, b, 1e-3), x, gamma, beta, mode="full").passed
        else:
            assert check_op(lambda x, g, b: fn(x, g, b, 1e-3), x, gamma, beta, mode="full",
                            dy=(rng.standard_normal(x.shape), None, None)).passed


def test_the_ops_match_tensorflow_formulas_with_a_small_epsilon():
    """With PyTorch's epsilon (1e-5) and values of one sign: tf.nn.moments and tf.nn.batch_normalization."""
    tf = load_tensorflow()
    x, dy = data((5, 7), np.float64, seed=4, offset=10.0)
    gamma, beta = np.linspace(0.5, 2, 7), np.linspace(-1, 1, 7)
    for op, axes in (("layer_norm", [-1]), ("batch_norm", [0])):
        with sn.use_backend("numpy"):
            out, backprop = getattr(sn.ops, op)(x, gamma, beta, 1e-5)
            y = out[0] if op == "batch_norm" else out
            dx, dgamma, dbeta = backprop(dy)
        xt, gt, bt = (tf.Variable(a) for a in (x, gamma, beta))
        with tf.GradientTape() as tape:
            mean, var = tf.nn.moments(xt, axes=axes, keepdims=True)
            yt = tf.nn.batch_normalization(xt, mean, var, bt, gt, 1e-5)
            loss = tf.reduce_sum(yt * dy)
        for ours_, theirs, name in zip((y, dx, dgamma, dbeta), (yt, *tape.gradient(loss, [xt, gt, bt])),
                                       ("y", "dx", "dgamma", "dbeta")):
            assert_close(ours_, theirs.numpy(), np.float64, f"{op} {name}")


def test_batch_norm_returns_the_batch_statistics():
    x, _ = data((6, 2, 3), np.float64, seed=5)
    with sn.use_backend("numpy"):
        (y, mean, variance), _ = sn.ops.batch_norm(x)
    np.testing.assert_allclose(mean, x.reshape(-1, 3).mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(variance, x.reshape(-1, 3).var(axis=0), rtol=1e-13)
    np.testing.assert_allclose(y.reshape(-1, 3).mean(axis=0), 0, atol=1e-14)


def test_a_model_with_batch_norm_trains_and_restores_its_moving_averages(tmp_path):
    """fit updates the moving averages (training) and evaluate uses them; a checkpoint holds and restores them."""
    rng = np.random.default_rng(6)
    x = (5 + 3 * rng.standard_normal((64, 10))).astype(np.float32)
    y = (x[:, 0] > 5).astype(np.int64)

    def build():
        model = sn.Sequential([sn.layers.Dense(16), sn.layers.BatchNormalization(), sn.layers.Activation("relu"),
                               sn.layers.Dense(2)])
        model.compile(optimizer=sn.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        model.build((None, 10))
        return model

    with sn.use_backend("numpy"):
        sn.random.seed(0)
        model = build()
        bn = model.layers[1]
        model.fit(x, y, batch_size=16, epochs=5, verbose=0)
        assert not np.allclose(sn.to_numpy(bn.moving_mean.value), 0)
        before = model.evaluate(x, y, verbose=0)
        path = sn.Checkpoint(model=model).save(str(tmp_path), step=1)
        again = build()
        sn.Checkpoint(model=again).restore(path)
        np.testing.assert_array_equal(sn.to_numpy(again.layers[1].moving_variance.value),
                                      sn.to_numpy(bn.moving_variance.value))
        assert again.evaluate(x, y, verbose=0) == before


@pytest.mark.parametrize("call, message", [
    (lambda: sn.ops.layer_norm(np.ones((2, 3)), np.ones(4)), "gamma must have shape (3,)"),
    (lambda: sn.ops.layer_norm(np.ones((2, 3)), epsilon=0), "epsilon must be a positive number"),
    (lambda: sn.ops.batch_norm(np.ones(3)), "rank >= 2"),
    (lambda: sn.ops.batch_norm(np.ones((1, 3))), "at least 2 values"),
    (lambda: sn.layers.BatchNormalization(momentum=1.0), "momentum must be a number in [0, 1)"),
    (lambda: sn.layers.LayerNormalization(axis=1), "axis must be -1"),
    (lambda: sn.layers.LayerNormalization(epsilon=-1), "epsilon must be a positive number"),
])
def test_bad_arguments_are_one_clear_error(call, message):
    with sn.use_backend("numpy"), pytest.raises(ValueError) as info:
        call()
    assert message in str(info.value)
