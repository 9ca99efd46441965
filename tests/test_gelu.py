"""GELU, exact and tanh-approximated: against TensorFlow (``tf.nn.gelu``), finite differences, and as a layer activation."""
from __future__ import annotations

import numpy as np
import pytest

import scratchnet as sn
from helpers import assert_close, load_tensorflow, to_backend
from scratchnet.gradcheck import check_op

DTYPES = [np.float32, np.float64]
DTYPE_IDS = ["float32", "float64"]


def awkward(dtype, seed=0):
    """Random values, GELU's turning point (-0.7518), 0, both signs far out (Φ = 0 or 1 to the last bit)."""
    rng = np.random.default_rng(seed)
    special = np.array([0.0, -0.0, -0.7517915, 1e-8, -1e-8, 6.0, -6.0, 12.0, -12.0, 40.0, -40.0])
    return np.concatenate([3 * rng.standard_normal(53), special]).reshape(4, 16).astype(dtype)


def tf_gelu(x, dy, approximate):
    """TensorFlow's GELU and its gradient. In float32, ``tf.nn.gelu`` itself. In float64, the same formula written
    with TensorFlow's elementary ops (``tf.math.erf``, ``tf.tanh``): its fused float64 ``tf.nn.gelu`` (and Keras's)
    is off by up to 5e-9 from x Φ(x) on [-3, 3] (measured; ``tf.math.erf`` itself is within 2e-16), too coarse
    for a float64 referee."""
    tf = load_tensorflow()
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        if x.dtype == np.float32:
            y = tf.nn.gelu(xt, approximate=approximate)
        elif approximate:
            y = 0.5 * xt * (1 + tf.tanh(np.sqrt(2 / np.pi) * (xt + 0.044715 * xt * xt * xt)))
        else:
            y = 0.5 * xt * (1 + tf.math.erf(xt / np.sqrt(2.0)))
        loss = tf.reduce_sum(y * dy)
    return y.numpy(), tape.gradient(loss, xt).numpy()


@pytest.mark.parametrize("approximate", [False, True], ids=["exact", "tanh"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_gelu_matches_tensorflow(backend, dtype, approximate):
    x = awkward(dtype)
    dy = np.random.default_rng(1).standard_normal(x.shape).astype(dtype)
    y, backprop = sn.ops.gelu(to_backend(backend, x), approximate=approximate)
    dx = backprop(to_backend(backend, dy))
    y_tf, dx_tf = tf_gelu(x, dy, approximate)
    y, dx = sn.to_numpy(y), sn.to_numpy(dx)
    assert y.dtype == dtype and dx.dtype == dtype
    assert_close(y, y_tf, dtype, "y")
    assert_close(dx, dx_tf, dtype, "dx")
    assert np.isfinite(y).all() and np.isfinite(dx).all()


@pytest.mark.parametrize("approximate", [False, True], ids=["exact", "tanh"])
def test_gelu_float64_finite_differences(approximate):
    x = awkward(np.float64, seed=2)[:, :12]  # leave out the far tails, where the differences are all rounding
    with sn.use_backend("numpy"):
        assert check_op(lambda x: sn.ops.gelu(x, approximate=approximate), x, mode="full").passed


def test_gelu_values_by_definition():
    """x Φ(x) at points where Φ is known: 0 at 0, x at +inf-ish, 0 at -inf-ish, Φ(1) = 0.8413447460685429."""
    with sn.use_backend("numpy"):
        y, _ = sn.ops.gelu(np.array([0.0, 1.0, 40.0, -40.0]))
    np.testing.assert_allclose(y, [0.0, 0.8413447460685429, 40.0, -0.0], rtol=1e-15, atol=0)


def test_gelu_as_a_layer_activation_matches_keras(backend):
    """Dense(activation="gelu") is Keras's Dense(activation="gelu"): the exact form."""
    tf = load_tensorflow()
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 7)).astype(np.float32)
    layer = sn.layers.Dense(4, activation="gelu")
    y = sn.to_numpy(layer(to_backend(backend, x)))
    w, b = (sn.to_numpy(p.value) for p in layer.parameters())
    y_tf = tf.keras.activations.gelu(tf.constant(x @ w + b)).numpy()
    assert_close(y, y_tf, np.float32, "y")


def test_gelu_refuses_a_non_boolean_approximate():
    with pytest.raises(ValueError, match=r"gelu: approximate must be True or False, got 'tanh'"):
        sn.ops.gelu(np.ones(3), approximate="tanh")
