"""conv2d: forward and every gradient against TensorFlow, on every backend."""
from __future__ import annotations

import functools

import numpy as np
import pytest

import scratchnet as sn
from helpers import assert_close, load_tensorflow, to_backend
from scratchnet.gradcheck import check_op

DTYPES = [np.float32, np.float64]

# (x shape NHWC, w shape HWIO, strides, padding, with bias): the main random
# case, then the shapes where padding arithmetic goes wrong.
CASES = {
    "random_valid": ((3, 9, 8, 3), (3, 3, 3, 4), 1, "VALID", True),
    "odd_size_stride2_same": ((2, 7, 9, 3), (3, 3, 3, 5), 2, "SAME", True),
    "even_kernel_asymmetric_padding": ((2, 6, 7, 2), (4, 2, 2, 3), 1, "SAME", True),
    "kernel_larger_than_input_same": ((2, 3, 2, 2), (5, 5, 2, 3), 1, "SAME", True),
    "batch1_nonsquare_same_no_bias": ((1, 8, 11, 3), (2, 3, 3, 4), (2, 3), "SAME", False),
    "batch1_nonsquare_valid": ((1, 8, 11, 3), (3, 2, 3, 2), (3, 2), "VALID", True),
}


def _inputs(case, dtype):
    x_shape, w_shape, strides, padding, with_bias = CASES[case]
    rng = np.random.default_rng(list(CASES).index(case))
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[-1]).astype(dtype) if with_bias else None
    return x, w, b, strides, padding, rng


@functools.lru_cache(maxsize=None)
def tf_reference(case, dtype):
    """TensorFlow's y, and dx, dw, db for a random upstream gradient (computed once per case)."""
    tfm = load_tensorflow()
    x, w, b, strides, padding, rng = _inputs(case, dtype)
    xt, wt = tfm.Variable(x), tfm.Variable(w)
    bt = tfm.Variable(b) if b is not None else None
    with tfm.GradientTape() as tape:
        y = tfm.nn.conv2d(xt, wt, strides, padding)
        if bt is not None:
            y = y + bt
    dY = rng.standard_normal(y.shape).astype(dtype)
    sources = [xt, wt] + ([bt] if bt is not None else [])
    grads = tape.gradient(y, sources, output_gradients=tfm.constant(dY))
    db = grads[2].numpy() if bt is not None else None
    return y.numpy(), dY, grads[0].numpy(), grads[1].numpy(), db


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("case", list(CASES))
def test_conv2d_matches_tensorflow(backend, case, dtype):
    x, w, b, strides, padding, _ = _inputs(case, dtype)
    y_tf, dY, dx_tf, dw_tf, db_tf = tf_reference(case, dtype)

    y, bp = sn.ops.conv2d(*to_backend(backend, x, w, b), strides=strides, padding=padding)
    dx, dw, db = bp(to_backend(backend, dY))

    assert y.dtype == dtype and dx.dtype == dtype and dw.dtype == dtype
    assert_close(sn.to_numpy(y), y_tf, dtype, "y")
    assert_close(sn.to_numpy(dx), dx_tf, dtype, "dx")
    assert_close(sn.to_numpy(dw), dw_tf, dtype, "dw")
    if b is None:
        assert db is None
    else:
        assert_close(sn.to_numpy(db), db_tf, dtype, "db")


def test_conv2d_gradients_pass_a_finite_difference_check():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 7, 6, 3))
    w = rng.standard_normal((3, 4, 3, 2))
    b = rng.standard_normal(2)
    with sn.use_backend("numpy"):
        conv = functools.partial(sn.ops.conv2d, strides=(2, 1), padding="SAME")
        y, _ = conv(x, w, b)
        check_op(conv, x, w, b, dy=rng.standard_normal(y.shape))


def test_conv2d_same_padding_puts_the_extra_row_and_column_at_the_bottom_right():
    # A 2x2 all-ones kernel over a 3x3 input with SAME, stride 1: total padding 1
    # per axis, all of it after the input, so the last row/column sees one pixel less.
    x = np.arange(9, dtype=np.float64).reshape(1, 3, 3, 1)
    w = np.ones((2, 2, 1, 1))
    with sn.use_backend("numpy"):
        y, _ = sn.ops.conv2d(x, w, padding="SAME")
    expected = np.array([[8, 12, 7], [20, 24, 13], [13, 15, 8]], dtype=np.float64)
    np.testing.assert_array_equal(y[0, :, :, 0], expected)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_conv2d_backprop_leaves_dy_untouched(backend, dtype):
    x, w, b, strides, padding, rng = _inputs("odd_size_stride2_same", dtype)
    y, bp = sn.ops.conv2d(*to_backend(backend, x, w, b), strides=strides, padding=padding)
    dY = to_backend(backend, rng.standard_normal(y.shape).astype(dtype))
    before = sn.to_numpy(dY)
    bp(dY)
    np.testing.assert_array_equal(sn.to_numpy(dY), before)


# --- numba kernels against the reference (the oracle) -----------------------

# (x shape, kh, kw, sh, sw, pads (top, bottom, left, right))
KERNEL_CASES = [
    ((3, 9, 8, 3), 3, 3, 1, 1, (0, 0, 0, 0)),
    ((2, 7, 9, 3), 3, 3, 2, 2, (1, 1, 1, 1)),
    ((2, 6, 7, 2), 4, 2, 1, 1, (1, 2, 0, 1)),
    ((1, 3, 2, 2), 5, 5, 1, 1, (2, 2, 2, 2)),
    ((1, 8, 11, 1), 2, 3, 2, 3, (0, 1, 0, 1)),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("x_shape, kh, kw, sh, sw, pads", KERNEL_CASES)
def test_numba_im2col_and_col2im_match_the_reference(numba_ops, x_shape, kh, kw, sh, sw, pads, dtype):
    from scratchnet.ops.reference import ReferenceOps

    ref = ReferenceOps()
    rng = np.random.default_rng(3)
    X = rng.standard_normal(x_shape).astype(dtype)
    cols = numba_ops.im2col(X, kh, kw, sh, sw, pads)
    # im2col only copies, so the two must agree bit for bit.
    np.testing.assert_array_equal(cols, ref.im2col(X, kh, kw, sh, sw, pads))
    assert cols.dtype == dtype

    dcols = rng.standard_normal(cols.shape).astype(dtype)
    dX = numba_ops.col2im(dcols, x_shape, kh, kw, sh, sw, pads)
    # col2im sums overlapping windows in another order: equal up to rounding.
    assert_close(dX, ref.col2im(dcols, x_shape, kh, kw, sh, sw, pads), dtype, "col2im")
    assert dX.dtype == dtype


def test_col2im_is_the_adjoint_of_im2col(backend):
    # <im2col(X), D> == <X, col2im(D)> for every X, D: the defining property of the backward.
    rng = np.random.default_rng(4)
    x_shape, kh, kw, sh, sw, pads = KERNEL_CASES[2]
    X = rng.standard_normal(x_shape)
    cols = backend.im2col(to_backend(backend, X), kh, kw, sh, sw, pads)
    D = rng.standard_normal(tuple(cols.shape))
    dX = backend.col2im(to_backend(backend, D), x_shape, kh, kw, sh, sw, pads)
    lhs = float(np.sum(sn.to_numpy(cols) * D))
    rhs = float(np.sum(X * sn.to_numpy(dX)))
    assert lhs == pytest.approx(rhs, rel=1e-12)


# --- bad input --------------------------------------------------------------


def _f32(*shape):
    return np.zeros(shape, dtype=np.float32)


def test_conv2d_names_both_shapes_when_channels_do_not_match():
    with pytest.raises(ValueError) as err:
        sn.ops.conv2d(*to_backend(sn.backend.get_backend(), _f32(8, 28, 28, 3), _f32(5, 5, 4, 32)))
    assert str(err.value) == "conv2d: x has 3 channels but w expects 4 (x: (8, 28, 28, 3), w: (5, 5, 4, 32))"


@pytest.mark.parametrize(
    "args, kwargs, fragment",
    [
        ((_f32(28, 28, 1), _f32(5, 5, 1, 32)), {}, "x must have rank 4"),
        ((_f32(2, 28, 28, 1), _f32(5, 5, 32)), {}, "w must have rank 4"),
        ((_f32(2, 8, 8, 1), _f32(3, 3, 1, 2)), {"padding": "FULL"}, "padding must be 'SAME' or 'VALID'"),
        ((_f32(2, 8, 8, 1), np.zeros((3, 3, 1, 2))), {}, "w is float64 but x is float32"),
        ((_f32(2, 8, 8, 1), _f32(3, 3, 1, 2)), {"strides": 0}, "strides must be a positive int"),
        ((_f32(2, 8, 8, 1), _f32(3, 3, 1, 2)), {"strides": (1, 0)}, "strides must be a positive int"),
        ((_f32(2, 3, 8, 1), _f32(5, 3, 1, 2)), {"padding": "VALID"}, "window height 5 is larger than the input height 3"),
        ((_f32(2, 8, 8, 1), _f32(3, 3, 1, 2), _f32(3)), {}, "b must have shape (2,)"),
        ((np.zeros((2, 8, 8, 1), dtype=np.int32), _f32(3, 3, 1, 2)), {}, "x must be float32 or float64"),
    ],
    ids=["x_rank", "w_rank", "padding", "dtype_mismatch", "strides_0", "strides_pair_0", "valid_too_small", "bias_shape", "int_x"],
)
def test_conv2d_rejects_bad_input_naming_the_op(args, kwargs, fragment):
    with sn.use_backend("numpy"):
        with pytest.raises(ValueError, match="^conv2d: ") as err:
            sn.ops.conv2d(*args, **kwargs)
    assert fragment in str(err.value)


def test_conv2d_backprop_rejects_a_gradient_of_the_wrong_shape():
    with sn.use_backend("numpy"):
        y, bp = sn.ops.conv2d(_f32(2, 8, 8, 1), _f32(3, 3, 1, 2))
        with pytest.raises(ValueError, match=r"^conv2d: dy must have the output's shape \(2, 6, 6, 2\)"):
            bp(_f32(2, 8, 8, 2))


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_numba_conv2d_run_in_several_chunks_matches_the_reference(numba_ops, monkeypatch, dtype):
    from scratchnet.ops.reference import ReferenceOps

    ref, rng = ReferenceOps(), np.random.default_rng(5)
    X = rng.standard_normal((5, 7, 9, 3)).astype(dtype)
    W = rng.standard_normal((3, 3, 3, 4)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    # Two images per chunk: chunks of 2, 2 and 1.
    monkeypatch.setattr(numba_ops, "chunk_bytes", 2 * 5 * 9 * 27 * X.itemsize)
    pads = (1, 1, 1, 1)
    Y = numba_ops.conv2d_forward(X, W, b, 2, 2, pads)
    assert_close(Y, ref.conv2d_forward(X, W, b, 2, 2, pads), dtype, "y")
    dY = rng.standard_normal(Y.shape).astype(dtype)
    got = numba_ops.conv2d_backward(dY, X, W, Y, 2, 2, pads)
    want = ref.conv2d_backward(dY, X, W, Y, 2, 2, pads)
    for g, w, name in zip(got, want, ("dx", "dw", "db")):
        assert_close(g, w, dtype, name)


def test_conv2d_rejects_an_empty_kernel():
    with pytest.raises(ValueError, match=r"conv2d: w must have no empty dimension"):
        sn.ops.conv2d(*to_backend(sn.backend.get_backend(), np.ones((1, 4, 4, 1), np.float32),
                                  np.ones((0, 3, 1, 2), np.float32)))
