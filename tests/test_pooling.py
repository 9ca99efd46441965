"""max_pool2d: forward and gradient against TensorFlow, ties included, on every backend."""
from __future__ import annotations

import functools

import numpy as np
import pytest

import scratchnet as sn
from helpers import assert_close, load_tensorflow, to_backend
from scratchnet.gradcheck import check_op

DTYPES = [np.float32, np.float64]

# (x shape NHWC, ksize, strides, padding)
CASES = {
    "random_2x2_valid": ((2, 8, 8, 3), 2, 2, "VALID"),
    "overlapping_3x3_stride2_valid": ((2, 9, 9, 3), 3, 2, "VALID"),
    "overlapping_3x3_stride2_same": ((2, 8, 7, 2), 3, 2, "SAME"),
    "odd_size_stride2_same": ((2, 7, 9, 3), 2, 2, "SAME"),
    "window_larger_than_input_same": ((2, 2, 3, 2), 4, 1, "SAME"),
    "batch1_nonsquare_same": ((1, 7, 10, 2), (2, 3), (1, 2), "SAME"),
}


def _tie_free(rng, shape, dtype):
    """Distinct values (a shuffled ramp), so every window has one maximum."""
    size = int(np.prod(shape))
    return (rng.permutation(size).reshape(shape) / size - 0.5).astype(dtype)


def _ties(rng, shape, dtype):
    """ReLU of rounded noise: many equal values and whole windows of zeros."""
    return np.maximum(np.round(rng.standard_normal(shape)), 0).astype(dtype)


def _inputs(case, dtype, kind):
    x_shape, ksize, strides, padding = CASES[case]
    rng = np.random.default_rng(list(CASES).index(case))
    x = (_tie_free if kind == "tie_free" else _ties)(rng, x_shape, dtype)
    return x, ksize, strides, padding, rng


@functools.lru_cache(maxsize=None)
def tf_reference(case, dtype, kind):
    """TensorFlow's y and dx for a random upstream gradient (computed once per case)."""
    tfm = load_tensorflow()
    x, ksize, strides, padding, rng = _inputs(case, dtype, kind)
    xt = tfm.Variable(x)
    with tfm.GradientTape() as tape:
        y = tfm.nn.max_pool2d(xt, ksize, strides, padding)
    dY = rng.standard_normal(y.shape).astype(dtype)
    dx = tape.gradient(y, xt, output_gradients=tfm.constant(dY))
    return y.numpy(), dY, dx.numpy()


def _check_against_tensorflow(backend, case, dtype, kind):
    x, ksize, strides, padding, _ = _inputs(case, dtype, kind)
    y_tf, dY, dx_tf = tf_reference(case, dtype, kind)
    y, bp = sn.ops.max_pool2d(to_backend(backend, x), ksize, strides, padding)
    dx = bp(to_backend(backend, dY))
    assert y.dtype == dtype and dx.dtype == dtype
    assert_close(sn.to_numpy(y), y_tf, dtype, "y")
    assert_close(sn.to_numpy(dx), dx_tf, dtype, "dx")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("case", list(CASES))
def test_max_pool2d_matches_tensorflow(backend, case, dtype):
    _check_against_tensorflow(backend, case, dtype, "tie_free")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize(
    "case", ["random_2x2_valid", "overlapping_3x3_stride2_same", "odd_size_stride2_same", "batch1_nonsquare_same"]
)
def test_max_pool2d_routes_ties_as_tensorflow_does(backend, case, dtype):
    _check_against_tensorflow(backend, case, dtype, "ties")


def test_a_tied_window_sends_its_whole_gradient_to_its_first_maximum(backend):
    # Rows: a window of four zeros (after a ReLU) and a window tied at 5 in its
    # second and fourth positions; the gradient goes to the first of each, unsplit.
    x = np.array([[0, 0, 1, 5], [0, 0, 2, 5]], dtype=np.float32).reshape(1, 2, 4, 1)
    y, bp = sn.ops.max_pool2d(to_backend(backend, x), 2, 2)
    dx = sn.to_numpy(bp(to_backend(backend, np.array([3, 7], dtype=np.float32).reshape(1, 1, 2, 1))))
    expected = np.array([[3, 0, 0, 7], [0, 0, 0, 0]], dtype=np.float32).reshape(1, 2, 4, 1)
    np.testing.assert_array_equal(dx, expected)


def test_overlapping_windows_add_their_gradients_at_a_shared_maximum(backend):
    # 3x3 windows, stride 2, on a 5x5 input whose maximum is the centre: all four
    # windows contain it, so it receives the sum of their gradients.
    x = np.zeros((1, 5, 5, 1), dtype=np.float64)
    x[0, 2, 2, 0] = 1.0
    y, bp = sn.ops.max_pool2d(to_backend(backend, x), 3, 2)
    dY = np.array([1.0, 2.0, 4.0, 8.0]).reshape(1, 2, 2, 1)
    dx = sn.to_numpy(bp(to_backend(backend, dY)))
    np.testing.assert_array_equal(sn.to_numpy(y), np.ones((1, 2, 2, 1)))
    assert dx[0, 2, 2, 0] == 15.0
    assert dx.sum() == 15.0


def test_padding_never_wins_even_over_negative_inputs(backend):
    # SAME pads a 3x3 input to 4x4 for a 2x2 stride-2 pool; if the padding took
    # part as a zero, the right and bottom windows would return 0.
    rng = np.random.default_rng(5)
    x = -1.0 - _tie_free(rng, (1, 3, 3, 2), np.float64) - 0.5
    y, bp = sn.ops.max_pool2d(to_backend(backend, x), 2, 2, "SAME")
    y = sn.to_numpy(y)
    assert y.shape == (1, 2, 2, 2)
    np.testing.assert_array_equal(y[0, 1, 1], x[0, 2, 2])
    np.testing.assert_array_equal(y[0, 0, 1], x[0, 0:2, 2].max(axis=0))
    dx = sn.to_numpy(bp(to_backend(backend, np.ones_like(y))))
    assert dx.sum() == y.size  # every gradient landed inside the input


def test_max_pool2d_gradient_passes_a_finite_difference_check():
    rng = np.random.default_rng(6)
    x = _tie_free(rng, (2, 7, 6, 2), np.float64)
    with sn.use_backend("numpy"):
        pool = functools.partial(sn.ops.max_pool2d, ksize=3, strides=2, padding="SAME")
        y, _ = pool(x)
        # The ramp's values are 1/168 apart, far more than eps: no window changes its winner.
        report = check_op(pool, x, dy=rng.standard_normal(y.shape))
        assert report["x"].n_nondiff == 0


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_max_pool2d_backprop_leaves_dy_untouched(backend, dtype):
    x, ksize, strides, padding, rng = _inputs("overlapping_3x3_stride2_same", dtype, "ties")
    y, bp = sn.ops.max_pool2d(to_backend(backend, x), ksize, strides, padding)
    dY = to_backend(backend, rng.standard_normal(y.shape).astype(dtype))
    before = sn.to_numpy(dY)
    bp(dY)
    np.testing.assert_array_equal(sn.to_numpy(dY), before)


# --- numba kernels against the reference (the oracle) -----------------------

# (x shape, kh, kw, sh, sw, pads (top, bottom, left, right))
KERNEL_CASES = [
    ((2, 8, 8, 3), 2, 2, 2, 2, (0, 0, 0, 0)),
    ((2, 9, 9, 3), 3, 3, 2, 2, (1, 1, 1, 1)),
    ((2, 8, 7, 2), 3, 3, 2, 2, (0, 1, 1, 1)),
    ((1, 2, 3, 2), 4, 4, 1, 1, (1, 2, 1, 2)),
    ((1, 7, 10, 1), 2, 3, 1, 2, (0, 1, 0, 1)),
]


@pytest.mark.parametrize("kind", ["tie_free", "ties"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("x_shape, kh, kw, sh, sw, pads", KERNEL_CASES)
def test_numba_max_pool2d_kernels_match_the_reference(numba_ops, x_shape, kh, kw, sh, sw, pads, dtype, kind):
    from scratchnet.ops.reference import ReferenceOps

    ref = ReferenceOps()
    rng = np.random.default_rng(7)
    X = (_tie_free if kind == "tie_free" else _ties)(rng, x_shape, dtype)
    Y, argmax = numba_ops.max_pool2d_forward(X, kh, kw, sh, sw, pads)
    Y_ref, argmax_ref = ref.max_pool2d_forward(X, kh, kw, sh, sw, pads)
    np.testing.assert_array_equal(Y, Y_ref)
    np.testing.assert_array_equal(argmax, argmax_ref)
    assert Y.dtype == dtype and argmax.dtype == np.int64

    dY = rng.standard_normal(Y.shape).astype(dtype)
    dX = numba_ops.max_pool2d_backward(dY, argmax, x_shape)
    # Overlapping windows may add in another order: equal up to rounding.
    assert_close(dX, ref.max_pool2d_backward(dY, argmax_ref, x_shape), dtype, "max_pool2d_backward")
    assert dX.dtype == dtype


# --- bad input --------------------------------------------------------------


@pytest.mark.parametrize(
    "x, kwargs, fragment",
    [
        (np.zeros((8, 8, 3), np.float32), {}, "x must have rank 4"),
        (np.zeros((2, 8, 8, 3), np.float32), {"padding": "same-ish"}, "padding must be 'SAME' or 'VALID'"),
        (np.zeros((2, 8, 8, 3), np.float32), {"strides": 0}, "strides must be a positive int"),
        (np.zeros((2, 8, 8, 3), np.float32), {"ksize": 0}, "ksize must be a positive int"),
        (np.zeros((2, 8, 2, 3), np.float32), {"ksize": 3}, "window width 3 is larger than the input width 2"),
        (np.zeros((2, 8, 8, 3), np.int64), {}, "x must be float32 or float64"),
    ],
    ids=["rank", "padding", "strides_0", "ksize_0", "valid_too_small", "int_x"],
)
def test_max_pool2d_rejects_bad_input_naming_the_op(x, kwargs, fragment):
    args = {"ksize": 2, "strides": 2, "padding": "VALID", **kwargs}
    with sn.use_backend("numpy"):
        with pytest.raises(ValueError, match="^max_pool2d: ") as err:
            sn.ops.max_pool2d(x, **args)
    assert fragment in str(err.value)


def test_max_pool2d_backprop_rejects_a_gradient_of_the_wrong_shape():
    with sn.use_backend("numpy"):
        y, bp = sn.ops.max_pool2d(np.zeros((2, 8, 8, 3), np.float32), 2, 2)
        with pytest.raises(ValueError, match=r"^max_pool2d: dy must have the output's shape \(2, 4, 4, 3\)"):
            bp(np.zeros((2, 8, 8, 3), np.float32))
