"""relu, sigmoid, tanh, softmax: outputs and gradients against TensorFlow, finite differences."""
from __future__ import annotations

import numpy as np
import pytest

import scratchnet as sn
from helpers import assert_close, load_tensorflow, to_backend
from scratchnet.gradcheck import check_op

DTYPES = [np.float32, np.float64]
OPS = ["relu", "sigmoid", "tanh", "softmax"]


def tf_reference(name, x, dY):
    tf_ = load_tensorflow()
    fn = {"relu": tf_.nn.relu, "sigmoid": tf_.sigmoid, "tanh": tf_.tanh, "softmax": tf_.nn.softmax}[name]
    x_t = tf_.constant(x)
    with tf_.GradientTape() as tape:
        tape.watch(x_t)
        Y = fn(x_t)
        loss = tf_.reduce_sum(Y * dY)
    return Y.numpy(), tape.gradient(loss, x_t).numpy()


def make_input(dtype, shape=(4, 6)):
    rng = np.random.default_rng(0)
    x = 3 * rng.standard_normal(shape)
    # Exact zeros (relu's kink, where the gradient must be 0 as in TF) and
    # large values (sigmoid, tanh and softmax must neither overflow nor NaN).
    x.flat[:4] = [0.0, 0.0, 80.0, -800.0]
    return x.astype(dtype), rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", OPS)
def test_activation_matches_tensorflow_value_and_gradient(backend, name, dtype):
    x, dY = make_input(dtype)
    Y, bp = getattr(sn.ops, name)(to_backend(backend, x))
    dX = bp(to_backend(backend, dY))
    want_Y, want_dX = tf_reference(name, x, dY)
    assert Y.dtype == dtype and dX.dtype == dtype
    assert np.all(np.isfinite(sn.to_numpy(Y))) and np.all(np.isfinite(sn.to_numpy(dX)))
    assert_close(sn.to_numpy(Y), want_Y, dtype, "y")
    assert_close(sn.to_numpy(dX), want_dX, dtype, "dx")


def test_relu_gradient_is_zero_at_zero(backend):
    x = to_backend(backend, np.array([-1.0, 0.0, -0.0, 2.0], np.float32))
    _, bp = sn.ops.relu(x)
    np.testing.assert_array_equal(sn.to_numpy(bp(to_backend(backend, np.ones(4, np.float32)))), [0, 0, 0, 1])


def test_softmax_rows_sum_to_one_along_the_chosen_axis(backend):
    x, _ = make_input(np.float64, shape=(3, 4, 5))
    for axis in (-1, 0, 1):
        Y, _ = sn.ops.softmax(to_backend(backend, x), axis=axis)
        np.testing.assert_allclose(sn.to_numpy(Y).sum(axis=axis), 1.0, rtol=1e-12)


@pytest.mark.parametrize("name", OPS)
def test_activation_gradient_matches_finite_differences(name):
    rng = np.random.default_rng(1)
    # relu is not differentiable at 0: keep the inputs clear of it.
    x = rng.standard_normal((3, 5))
    x = np.where(np.abs(x) < 0.1, 0.5, x)
    R = rng.standard_normal((3, 5))
    op = getattr(sn.ops, name)
    with sn.use_backend("numpy"):
        check_op(op, x, dy=R)


def test_softmax_along_axis_0_matches_finite_differences():
    rng = np.random.default_rng(2)
    x, R = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    with sn.use_backend("numpy"):
        check_op(lambda z: sn.ops.softmax(z, axis=0), x, dy=R)


@pytest.mark.parametrize("name", OPS)
def test_activation_backprop_does_not_mutate_its_gradient(backend, name):
    x, dY = make_input(np.float32)
    _, bp = getattr(sn.ops, name)(to_backend(backend, x))
    dY_b = to_backend(backend, dY)
    bp(dY_b)
    np.testing.assert_array_equal(sn.to_numpy(dY_b), dY)


@pytest.mark.parametrize("name", OPS)
def test_activation_rejects_bad_input_naming_the_op(backend, name):
    op = getattr(sn.ops, name)
    with pytest.raises(ValueError, match=rf"{name}: x must be float32 or float64, got int64"):
        op(to_backend(backend, np.ones((2, 3), np.int64)))
    _, bp = op(to_backend(backend, np.ones((2, 3), np.float32)))
    with pytest.raises(ValueError, match=rf"{name}: dy must have the output's shape \(2, 3\), got \(3, 2\)"):
        bp(to_backend(backend, np.ones((3, 2), np.float32)))


def test_softmax_rejects_a_scalar_and_an_axis_out_of_range(backend):
    with pytest.raises(ValueError, match=r"softmax: x must have rank >= 1"):
        sn.ops.softmax(to_backend(backend, np.float32(1.0)))
    with pytest.raises(ValueError, match=r"softmax: axis 2 is out of range for x of shape \(2, 3\)"):
        sn.ops.softmax(to_backend(backend, np.ones((2, 3), np.float32)), axis=2)
