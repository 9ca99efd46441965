"""dense: output and every gradient against tf.matmul, finite differences, bad input."""
from __future__ import annotations

import numpy as np
import pytest

import scratchnet as sn
from helpers import assert_close, load_tensorflow, to_backend
from scratchnet.gradcheck import check_op

DTYPES = [np.float32, np.float64]


def make_inputs(dtype, N=5, C=4, K=3, seed=0):
    rng = np.random.default_rng(seed)
    return tuple(
        rng.standard_normal(s).astype(dtype) for s in ((N, C), (C, K), (K,), (N, K))
    )


def tf_reference(x, w, b, dY):
    tf_ = load_tensorflow()
    x_t, w_t = tf_.constant(x), tf_.constant(w)
    b_t = None if b is None else tf_.constant(b)
    with tf_.GradientTape() as tape:
        tape.watch([x_t, w_t] + ([] if b is None else [b_t]))
        Y = tf_.matmul(x_t, w_t)
        if b is not None:
            Y = Y + b_t
        loss = tf_.reduce_sum(Y * dY)
    grads = tape.gradient(loss, [x_t, w_t] + ([] if b is None else [b_t]))
    return Y.numpy(), [g.numpy() for g in grads] + ([None] if b is None else [])


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no_bias"])
def test_dense_matches_tf_matmul_output_and_every_gradient(backend, with_bias, dtype):
    x, w, b, dY = make_inputs(dtype)
    b = b if with_bias else None
    Y, bp = sn.ops.dense(*to_backend(backend, x, w, b))
    dx, dw, db = bp(to_backend(backend, dY))
    want_Y, (want_dx, want_dw, want_db) = tf_reference(x, w, b, dY)
    assert Y.dtype == dtype
    assert_close(sn.to_numpy(Y), want_Y, dtype, "y")
    assert_close(sn.to_numpy(dx), want_dx, dtype, "dx")
    assert_close(sn.to_numpy(dw), want_dw, dtype, "dw")
    if with_bias:
        assert_close(sn.to_numpy(db), want_db, dtype, "db")
    else:
        assert db is None


def test_dense_gradients_match_finite_differences(rng):
    x, w, b, R = make_inputs(np.float64, seed=1)
    with sn.use_backend("numpy"):
        check_op(sn.ops.dense, x, w, b, dy=R)


def test_dense_backprop_does_not_mutate_its_gradient(backend):
    x, w, b, dY = make_inputs(np.float32)
    _, bp = sn.ops.dense(*to_backend(backend, x, w, b))
    dY_b = to_backend(backend, dY)
    bp(dY_b)
    np.testing.assert_array_equal(sn.to_numpy(dY_b), dY)


@pytest.mark.parametrize(
    "shapes, message",
    [
        (((5,), (4, 3), None), r"dense: x must have rank 2 \[N, C\], got shape \(5,\)"),
        (((5, 4), (4, 3, 1), None), r"dense: w must have rank 2 \[C, K\]"),
        (((5, 4), (6, 3), None), r"dense: x has 4 features but w expects 6 \(x: \(5, 4\), w: \(6, 3\)\)"),
        (((5, 4), (4, 3), (4,)), r"dense: b must have shape \(3,\) to match w \(4, 3\), got \(4,\)"),
    ],
)
def test_dense_rejects_mismatched_shapes_naming_the_op(backend, shapes, message):
    arrays = [None if s is None else np.ones(s, np.float32) for s in shapes]
    with pytest.raises(ValueError, match=message):
        sn.ops.dense(*to_backend(backend, *arrays))


def test_dense_rejects_mixed_dtypes_and_a_wrong_gradient(backend):
    with pytest.raises(ValueError, match=r"dense: w is float64 but x is float32"):
        sn.ops.dense(*to_backend(backend, np.ones((2, 3), np.float32), np.ones((3, 4), np.float64)))
    with pytest.raises(ValueError, match=r"dense: x must be float32 or float64, got int64"):
        sn.ops.dense(*to_backend(backend, np.ones((2, 3), np.int64), np.ones((3, 4), np.float32)))
    _, bp = sn.ops.dense(*to_backend(backend, np.ones((2, 3), np.float32), np.ones((3, 4), np.float32)))
    with pytest.raises(ValueError, match=r"dense: dy must have the output's shape \(2, 4\), got \(2, 3\)"):
        bp(to_backend(backend, np.ones((2, 3), np.float32)))
