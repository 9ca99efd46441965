"""The fast (Numba) kernels against the reference: fused epilogues, skipped dx, batch splits, one-pass updates.

Every fast kernel is checked against the NumPy oracle (``ReferenceOps``) in
float32 and float64, on odd shapes, with the batch split between threads
forced even where the inputs are small (``threads.MIN_PART_MACS`` patched to
1) and several chunks per part; ReLU ties (pre-activations exactly 0) must
pass no gradient, as TensorFlow's ReLU does. Speed itself is measured in
``bench/``, never here.
"""
from __future__ import annotations

import numpy as np
import pytest

import scratchnet as sn
from helpers import to_backend
from helpers import assert_close
from scratchnet._config import conv_algorithm
from scratchnet.ops.reference import ReferenceOps

DTYPES = [np.float32, np.float64]
REF = ReferenceOps()


@pytest.fixture
def split_everything(monkeypatch):
    """Every op splits its work between threads, however small."""
    from scratchnet.kernels.runtime import threads

    monkeypatch.setattr(threads, "MIN_PART_MACS", 1)
    monkeypatch.setattr(threads, "rows_for", lambda macs_per_row, min_macs=1: 1)
    return threads


def _assert_gradients_match(got, want, dtype):
    """``(dx, dw, db)`` of a fast kernel against the reference's: each in ``dtype`` and close; None where it is."""
    for g, w, name in zip(got, want, ("dx", "dw", "db")):
        if w is not None:
            assert g.dtype == dtype, name
            assert_close(g, w, dtype, name)


def _relu_ties(y_pre, rng):
    """Zero out a block of pre-activations exactly, so that the ReLU meets ties at 0."""
    y_pre = y_pre.copy()
    y_pre.reshape(-1)[: y_pre.size // 4] = 0
    return y_pre


# --- conv2d: fused bias + ReLU, need_dx, chunks and threads ----------------------------------

CONV_CASES = {
    # x shape, w shape, strides, pads
    "odd_same_stride1": ((5, 7, 9, 3), (3, 3, 3, 4), (1, 1), (1, 1, 1, 1)),
    "odd_stride21_asymmetric": ((3, 8, 7, 2), (4, 2, 2, 5), (2, 1), (1, 2, 0, 1)),
    "lenet_like_5x5": ((4, 14, 14, 8), (5, 5, 8, 6), (1, 1), (2, 2, 2, 2)),
    "one_image_valid": ((1, 6, 5, 1), (2, 3, 1, 3), (1, 2), (0, 0, 0, 0)),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
@pytest.mark.parametrize("case", list(CONV_CASES))
def test_numba_conv2d_matches_the_reference_with_relu_bias_and_dx_choices(
        numba_ops, split_everything, monkeypatch, case, relu, dtype):
    x_shape, w_shape, (sh, sw), pads = CONV_CASES[case]
    rng = np.random.default_rng(7)
    X = rng.standard_normal(x_shape).astype(dtype)
    W = rng.standard_normal(w_shape).astype(dtype)
    for b in (rng.standard_normal(w_shape[-1]).astype(dtype), None):
        # One image per chunk: a part of several images runs several chunks.
        monkeypatch.setattr(numba_ops, "chunk_bytes", 1)
        Y = numba_ops.conv2d_forward(X, W, b, sh, sw, pads, relu)
        Y_ref = REF.conv2d_forward(X, W, b, sh, sw, pads, relu)
        assert Y.dtype == dtype
        assert_close(Y, Y_ref, dtype, "y")
        dY = rng.standard_normal(Y.shape).astype(dtype)
        for need_dx in (True, False):
            got = numba_ops.conv2d_backward(dY, X, W, Y_ref, sh, sw, pads, relu, need_dx)
            want = REF.conv2d_backward(dY, X, W, Y_ref, sh, sw, pads, relu, need_dx)
            if not need_dx:
                assert got[0] is None and want[0] is None
            _assert_gradients_match(got, want, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_fused_conv_relu_passes_no_gradient_at_ties(numba_ops, split_everything, dtype):
    rng = np.random.default_rng(8)
    X = rng.standard_normal((3, 6, 6, 2)).astype(dtype)
    X[:2] = 0  # two all-zero images: with no bias every output is exactly 0, a ReLU tie
    W = rng.standard_normal((3, 3, 2, 4)).astype(dtype)
    pads = (1, 1, 1, 1)
    Y = numba_ops.conv2d_forward(X, W, None, 1, 1, pads, True)
    assert np.all(Y[:2] == 0)
    dY = np.ones(Y.shape, dtype)
    dx, dw, db = numba_ops.conv2d_backward(dY, X, W, Y, 1, 1, pads, True, True)
    want = REF.conv2d_backward(dY, X, W, Y, 1, 1, pads, True, True)
    assert np.all(dx[:2] == 0), "a ReLU tie at 0 must pass no gradient"
    for g, w, name in zip((dx, dw, db), want, ("dx", "dw", "db")):
        assert_close(g, w, dtype, name)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_conv2d_op_with_a_fused_relu_equals_conv_then_relu(backend, dtype):
    rng = np.random.default_rng(9)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in ((2, 7, 6, 3), (3, 3, 3, 4), (4,)))
    dy = rng.standard_normal((2, 7, 6, 4)).astype(dtype)
    xb, wb, bb, dyb = to_backend(backend, x, w, b, dy)
    y, bp = sn.ops.conv2d(xb, wb, bb, padding="SAME", activation="relu")
    z, conv_bp = sn.ops.conv2d(xb, wb, bb, padding="SAME")
    r, relu_bp = sn.ops.relu(z)
    assert_close(sn.to_numpy(y), sn.to_numpy(r), dtype, "y")
    for got, want, name in zip(bp(dyb), conv_bp(relu_bp(dyb)), ("dx", "dw", "db")):
        assert_close(sn.to_numpy(got), sn.to_numpy(want), dtype, name)


def test_conv2d_need_dx_false_returns_no_dx_and_the_same_weight_gradients(backend):
    rng = np.random.default_rng(10)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((2, 5, 5, 2), (3, 3, 2, 3), (3,)))
    dy = rng.standard_normal((2, 5, 5, 3)).astype(np.float32)
    args = to_backend(backend, x, w, b)
    _, with_dx = sn.ops.conv2d(*args, padding="SAME")
    _, without = sn.ops.conv2d(*args, padding="SAME", need_dx=False)
    (_, dw, db), (dx, dw2, db2) = with_dx(to_backend(backend, dy)), without(to_backend(backend, dy))
    assert dx is None
    assert_close(sn.to_numpy(dw2), sn.to_numpy(dw), np.float32, "dw")
    assert_close(sn.to_numpy(db2), sn.to_numpy(db), np.float32, "db")


@pytest.mark.parametrize("op, args", [
    ("conv2d", lambda: (np.ones((1, 4, 4, 1), np.float32), np.ones((3, 3, 1, 2), np.float32))),
    ("dense", lambda: (np.ones((2, 3), np.float32), np.ones((3, 4), np.float32))),
])
def test_an_activation_that_cannot_be_fused_is_an_error_naming_the_op(op, args):
    with pytest.raises(ValueError, match=rf"^{op}: activation must be None or 'relu'.*'tanh'"):
        getattr(sn.ops, op)(*args(), activation="tanh")


# --- dense -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
@pytest.mark.parametrize("shape", [(7, 13, 5), (1, 3, 2), (33, 17, 65)], ids=["odd", "tiny", "wide"])
def test_numba_dense_matches_the_reference(numba_ops, split_everything, shape, relu, dtype):
    N, C, K = shape
    rng = np.random.default_rng(11)
    x = rng.standard_normal((N, C)).astype(dtype)
    w = rng.standard_normal((C, K)).astype(dtype)
    for b in (rng.standard_normal(K).astype(dtype), None):
        y = numba_ops.dense_forward(x, w, b, relu)
        y_ref = REF.dense_forward(x, w, b, relu)
        assert y.dtype == dtype
        assert_close(y, y_ref, dtype, "y")
        dy = rng.standard_normal((N, K)).astype(dtype)
        for need_dx in (True, False):
            got = numba_ops.dense_backward(dy, x, w, y_ref, relu, need_dx)
            want = REF.dense_backward(dy, x, w, y_ref, relu, need_dx)
            assert (got[0] is None) == (not need_dx)
            _assert_gradients_match(got, want, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_fused_dense_relu_passes_no_gradient_at_ties(numba_ops, split_everything, dtype):
    rng = np.random.default_rng(12)
    x = rng.standard_normal((6, 4)).astype(dtype)
    x[:3] = 0  # with a zero bias, those rows' outputs are exactly 0
    w = rng.standard_normal((4, 5)).astype(dtype)
    b = np.zeros(5, dtype)
    y = numba_ops.dense_forward(x, w, b, True)
    dy = np.ones_like(y)
    dx, dw, db = numba_ops.dense_backward(dy, x, w, y, True, True)
    assert np.all(dx[:3] == 0)
    for g, r, name in zip((dx, dw, db), REF.dense_backward(dy, x, w, y, True, True), ("dx", "dw", "db")):
        assert_close(g, r, dtype, name)


def test_dense_op_with_a_fused_relu_equals_dense_then_relu(backend):
    rng = np.random.default_rng(13)
    x, w, b, dy = (rng.standard_normal(s).astype(np.float32) for s in ((5, 6), (6, 4), (4,), (5, 4)))
    xb, wb, bb, dyb = to_backend(backend, x, w, b, dy)
    y, bp = sn.ops.dense(xb, wb, bb, activation="relu")
    z, dense_bp = sn.ops.dense(xb, wb, bb)
    r, relu_bp = sn.ops.relu(z)
    assert_close(sn.to_numpy(y), sn.to_numpy(r), np.float32, "y")
    for got, want, name in zip(bp(dyb), dense_bp(relu_bp(dyb)), ("dx", "dw", "db")):
        assert_close(sn.to_numpy(got), sn.to_numpy(want), np.float32, name)


# --- LSTM split between threads ----------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("split", [False, True], ids=["one_part", "split"])
def test_numba_lstm_matches_the_reference(numba_ops, request, monkeypatch, split, dtype):
    if split:  # the batch cut into one part per thread, however small
        request.getfixturevalue("split_everything")
        monkeypatch.setattr(numba_ops, "min_rows", 1)
    rng = np.random.default_rng(14)
    T, N, D, H = 5, 7, 3, 6
    X = rng.standard_normal((T, N, D)).astype(dtype)
    kernel = rng.standard_normal((D, 4 * H)).astype(dtype)
    recurrent_kernel = (0.5 * rng.standard_normal((H, 4 * H))).astype(dtype)
    bias = rng.standard_normal(4 * H).astype(dtype)
    # Large pre-activations check the overflow-free sigmoid and tanh.
    bias[:4] = [-1e4, 1e4, -800, 800]
    bias[2 * H : 2 * H + 2] = [-1e4, 1e4]
    h0, c0, dh, dc = (rng.standard_normal((N, H)).astype(dtype) for _ in range(4))
    dys = rng.standard_normal((T, N, H)).astype(dtype)
    got = numba_ops.lstm_forward(X, kernel, recurrent_kernel, bias, h0, c0)
    want = REF.lstm_forward(X, kernel, recurrent_kernel, bias, h0, c0)
    for g, w, name in zip(got, want, ("h_seq", "c_seq", "gates_seq")):
        assert g.dtype == dtype and np.all(np.isfinite(g)), name
        assert_close(g, w, dtype, name)
    for dy in (dys, None):
        for need_dx in (True, False):
            got_b = numba_ops.lstm_backward(dy, dh, dc, X, kernel, recurrent_kernel, *want, need_dx)
            want_b = REF.lstm_backward(dy, dh, dc, X, kernel, recurrent_kernel, *want, need_dx)
            assert (got_b[0] is None) == (not need_dx)
            for g, w, name in zip(got_b, want_b, ("dx", "dkernel", "drecurrent_kernel", "dbias", "dh0", "dc0")):
                if w is not None:
                    assert g.dtype == dtype, name
                    assert_close(g, w, dtype, name)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("layout", ["contiguous", "strided"])
def test_numba_lstm_recurrences_match_the_reference_and_leave_the_caller_s_state(numba_ops, split_everything,
                                                                               monkeypatch, layout, dtype):
    # The recurrences alone (the embedded LSTM's path); a z_seq that is a strided view takes the reference's loop.
    monkeypatch.setattr(numba_ops, "min_rows", 1)
    rng = np.random.default_rng(16)
    T, N, H = 4, 5, 6
    z = rng.standard_normal((T, N, 4 * H)).astype(dtype)
    recurrent_kernel = (0.5 * rng.standard_normal((H, 4 * H))).astype(dtype)
    bias = rng.standard_normal(4 * H).astype(dtype)
    h0, c0, dh, dc = (rng.standard_normal((N, H)).astype(dtype) for _ in range(4))
    dys = rng.standard_normal((T, N, H)).astype(dtype)

    def handed_over():  # a fresh z_seq each call: the kernel may overwrite it
        if layout == "contiguous":
            return z.copy()
        wide = np.zeros((T, N, 8 * H), dtype)
        wide[:, :, ::2] = z
        return wide[:, :, ::2]

    got = numba_ops.lstm_recurrence(handed_over(), recurrent_kernel, bias, h0, c0)
    want = REF.lstm_recurrence(handed_over(), recurrent_kernel, bias, h0, c0)
    for g, w, name in zip(got, want, ("h_seq", "c_seq", "gates_seq")):
        assert g.dtype == dtype, name
        assert_close(g, w, dtype, name)
    before = [a.copy() for a in (dh, dc)]
    got_b = numba_ops.lstm_backward_recurrence(dys, dh, dc, recurrent_kernel, *want)
    want_b = REF.lstm_backward_recurrence(dys, dh, dc, recurrent_kernel, *want)
    for g, w, name in zip(got_b, want_b, ("dz_seq", "drecurrent_kernel", "dbias", "dh0", "dc0")):
        assert g.dtype == dtype, name
        assert_close(g, w, dtype, name)
    for a, b in zip((dh, dc), before):
        np.testing.assert_array_equal(a, b)


# --- the in-place updates -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("shape", [(7, 5), (1,), (3, 4, 5)], ids=["matrix", "one", "rank3"])
def test_numba_updates_match_the_reference(numba_ops, monkeypatch, shape, dtype):
    from scratchnet.kernels.numba import updates as updates_numba

    monkeypatch.setattr(updates_numba, "MIN_PART_ELEMENTS", 1)  # every update split between the threads
    rng = np.random.default_rng(15)

    def fresh():
        w, g, m = (rng.standard_normal(shape).astype(dtype) for _ in range(3))
        return w, g, m, np.abs(rng.standard_normal(shape)).astype(dtype)

    w, g, m, v = fresh()
    for kernel, args in (
        ("scaled_add", lambda a: (a[0], a[1], -0.3)),
        ("moving_average_update", lambda a: (a[0], a[1], 0.9)),
        ("adam_update", lambda a: (*a, 0.01, 0.9, 0.999, 1e-7)),
    ):
        mine, ref = [a.copy() for a in (w, g, m, v)], [a.copy() for a in (w, g, m, v)]
        assert getattr(numba_ops, kernel)(*args(mine)) is None
        getattr(REF, kernel)(*args(ref))
        for got, want, name in zip(mine, ref, ("w", "g", "m", "v")):
            assert got.dtype == dtype
            assert_close(got, want, dtype, f"{kernel}: {name}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_numba_sum_of_squares_matches_a_float64_sum(numba_ops, dtype):
    x = np.random.default_rng(21).standard_normal((301, 7)).astype(dtype)
    want = float((x.astype(np.float64) ** 2).sum())
    assert numba_ops.sum_of_squares(x) == pytest.approx(want, rel=1e-12)
    assert REF.sum_of_squares(x) == pytest.approx(want, rel=1e-6 if dtype == np.float32 else 1e-12)
    assert numba_ops.sum_of_squares(x.T) == pytest.approx(want, rel=1e-6)  # not contiguous: the reference


def test_numba_updates_of_fortran_ordered_parameters_match_the_reference(numba_ops):
    # An orthogonal recurrent kernel is F-ordered, and so are the slots made with zeros_like; its gradient is not.
    rng = np.random.default_rng(22)
    w, m = (np.asfortranarray(rng.standard_normal((6, 8)).astype(np.float32)) for _ in range(2))
    v = np.asfortranarray(np.abs(rng.standard_normal((6, 8))).astype(np.float32))
    g = rng.standard_normal((6, 8)).astype(np.float32)
    mine, ref = [a.copy(order="K") for a in (w, g, m, v)], [a.copy(order="K") for a in (w, g, m, v)]
    numba_ops.adam_update(*mine, 0.01, 0.9, 0.999, 1e-7)
    REF.adam_update(*ref, 0.01, 0.9, 0.999, 1e-7)
    for got, want, name in zip(mine, ref, "wgmv"):
        assert_close(got, want, np.float32, name)
    numba_ops.scaled_add(mine[0], g, -0.5)
    REF.scaled_add(ref[0], g, -0.5)
    assert_close(mine[0], ref[0], np.float32, "scaled_add")
    assert numba_ops.sum_of_squares(w) == pytest.approx(float((w.astype(np.float64) ** 2).sum()), rel=1e-12)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("shape", [(7, 5), (1,), (3, 4, 5), (9001,)], ids=["matrix", "one", "rank3", "blocks"])
@pytest.mark.parametrize("with_shadow", [True, False], ids=["shadow", "no_shadow"])
@pytest.mark.parametrize("order", ["C", "F"])
def test_numba_fused_sgd_l2_ema_update_equals_the_three_updates_bit_for_bit(numba_ops, monkeypatch, shape, dtype,
                                                                              with_shadow, order):
    from scratchnet.kernels.numba import updates as updates_numba

    monkeypatch.setattr(updates_numba, "MIN_PART_ELEMENTS", 1)  # split between the threads
    monkeypatch.setattr(updates_numba, "BLOCK", 7)  # several blocks per part, and a ragged last one
    rng = np.random.default_rng(23)
    w, g, shadow = (np.asarray(rng.standard_normal(shape).astype(dtype), order=order) for _ in range(3))
    mine = [a.copy(order="K") for a in (w, g, shadow)]
    # The reference's definition: the three updates one after the other, as the unfused step runs them.
    ref = [a.copy(order="K") for a in (w, g, shadow)]
    want_sum = REF.sum_of_squares(ref[0])
    REF.scaled_add(ref[1], ref[0], 2 * 3e-2)
    REF.scaled_add(ref[0], ref[1], -0.1)
    if with_shadow:
        REF.moving_average_update(ref[2], ref[0], 0.9)
    got_sum = numba_ops.sgd_l2_ema_update(mine[0], mine[1], 0.1, 3e-2, mine[2] if with_shadow else None, 0.9)
    assert got_sum == pytest.approx(want_sum, rel=1e-12)
    for got, want, name in zip(mine, ref, ("w", "g", "shadow")):
        assert got.dtype == dtype and got.flags.f_contiguous == want.flags.f_contiguous
        np.testing.assert_array_equal(got, want, err_msg=f"sgd_l2_ema_update: {name}")
    ref_fused = [a.copy(order="K") for a in (w, g, shadow)]
    assert REF.sgd_l2_ema_update(ref_fused[0], ref_fused[1], 0.1, 3e-2, ref_fused[2] if with_shadow else None,
                                 0.9) == pytest.approx(want_sum, rel=1e-12)
    for got, want in zip(ref_fused, ref):
        np.testing.assert_array_equal(got, want)


def test_numba_fused_update_of_mixed_layouts_falls_back_to_the_reference(numba_ops):
    rng = np.random.default_rng(24)
    w = np.asfortranarray(rng.standard_normal((6, 8)).astype(np.float32))  # F-ordered, its gradient C-ordered
    g, shadow = rng.standard_normal((6, 8)).astype(np.float32), w.copy(order="K")
    mine, ref = [a.copy(order="K") for a in (w, g, shadow)], [a.copy(order="K") for a in (w, g, shadow)]
    assert numba_ops.sgd_l2_ema_update(*mine[:2], 0.5, 0.1, mine[2], 0.99) == pytest.approx(
        REF.sgd_l2_ema_update(*ref[:2], 0.5, 0.1, ref[2], 0.99), rel=1e-12)
    for got, want in zip(mine, ref):
        np.testing.assert_array_equal(got, want)


def test_numba_updates_of_non_contiguous_arrays_fall_back_to_the_reference(numba_ops):
    rng = np.random.default_rng(16)
    w = rng.standard_normal((6, 8)).astype(np.float32)
    x = rng.standard_normal((8, 6)).astype(np.float32).T  # a transposed view
    want = w.copy()
    REF.scaled_add(want, x, 0.5)
    numba_ops.scaled_add(w, x, 0.5)
    assert_close(w, want, np.float32, "scaled_add")


# --- the threads ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("shape", [(7, 3, 5), (40, 9, 3), (3, 9, 40), (4, 60, 5), (2, 300, 3)],
                         ids=["small", "tall", "wide", "long-K", "longer-K"])
def test_threads_matmul_matches_numpy_whichever_axis_it_cuts(split_everything, shape, dtype):
    """Rows (M >= N), columns (M < N), or the sum itself (K >= 2 (M + N)): the same product, into ``out`` too."""
    M, K, N = shape
    rng = np.random.default_rng(40)
    a, b = rng.standard_normal((M, K)).astype(dtype), rng.standard_normal((K, N)).astype(dtype)
    for A in (a, np.ascontiguousarray(a.T).T):  # and a transposed view, as the LSTM's h_seq.T
        want = A.astype(np.float64) @ b.astype(np.float64)
        got = split_everything.matmul(A, b)
        assert got.dtype == dtype and got.shape == (M, N)
        assert_close(got, want, dtype, "a @ b")
        out = np.full((M, N), np.nan, dtype=dtype)
        assert split_everything.matmul(A, b, out=out) is out
        assert_close(out, want, dtype, "a @ b into out")


def test_three_parts_add_their_partial_products_in_order(numba_ops, split_everything, monkeypatch):
    """With a third core, the dense forward's and threads.matmul's middle partial products are added too."""
    monkeypatch.setattr(split_everything, "_CORES", 3)
    rng = np.random.default_rng(41)
    x, w, b = (rng.standard_normal(s) for s in ((5, 30), (30, 40), (40,)))
    assert len(split_everything.parts(30)) == 3
    assert_close(numba_ops.dense_forward(x, w, b, True), REF.dense_forward(x, w, b, True), np.float64, "y")
    a, c = rng.standard_normal((3, 90)), rng.standard_normal((90, 4))
    assert_close(split_everything.matmul(a, c), a @ c, np.float64, "a @ c")


def test_parts_cover_the_range_once_in_order():
    from scratchnet.kernels.runtime import threads

    for n in (1, 2, 7, 100):
        for min_rows in (1, 3, 50, 1000):
            ranges = threads.parts(n, min_rows)
            assert ranges[0][0] == 0 and ranges[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
            assert len(ranges) <= threads.cores()
            assert len(ranges) == 1 or all(hi - lo >= min_rows for lo, hi in ranges)


def test_split_returns_each_parts_result_in_order_and_restores_the_blas_threads():
    from scratchnet.kernels.runtime import threads

    from scratchnet.kernels.runtime import blas

    before = blas.thread_count()
    assert threads.split(lambda lo, hi: (lo, hi), 10) == threads.parts(10)
    # A split inside a split runs its parts one after the other, on the calling thread.
    nested = threads.split(lambda lo, hi: threads.split(lambda a, b: b - a, hi - lo), 10)
    assert [sum(r) for r in nested] == [hi - lo for lo, hi in threads.parts(10)]
    assert blas.thread_count() == before


def test_an_error_in_a_part_propagates_and_the_blas_threads_come_back():
    from scratchnet.kernels.runtime import threads

    from scratchnet.kernels.runtime import blas

    before = blas.thread_count()

    def fail(lo, hi):
        raise RuntimeError(f"part {lo}:{hi}")

    with pytest.raises(RuntimeError, match="part"):
        threads.split(fail, 10)
    assert blas.thread_count() == before
    assert threads.split(lambda lo, hi: hi - lo, 4) == [hi - lo for lo, hi in threads.parts(4)]


@pytest.mark.parametrize("shape", [(37, 11, 5), (5, 11, 37)], ids=["split_rows", "split_columns"])
def test_threaded_matmul_matches_numpy(split_everything, shape):
    M, K, N = shape
    rng = np.random.default_rng(17)
    a, b = rng.standard_normal((M, K)), rng.standard_normal((K, N))
    np.testing.assert_allclose(split_everything.matmul(a, b), a @ b, rtol=1e-12)
    np.testing.assert_allclose(split_everything.matmul(b.T, a.T), b.T @ a.T, rtol=1e-12)


# --- need_dx through a model ----------------------------------------------------------------------


def _lenet_like(dtype="float32"):
    return sn.Sequential([
        sn.layers.Reshape((8, 8, 1)),
        sn.layers.Conv2D(3, 3, padding="same", activation="relu"),
        sn.layers.MaxPool2D(2),
        sn.layers.Flatten(),
        sn.layers.Dense(5, activation="relu"),
        sn.layers.Dense(2),
    ], dtype=dtype)


def test_a_model_told_need_dx_false_returns_none_and_the_same_weight_gradients(backend):
    rng = np.random.default_rng(18)
    x = rng.standard_normal((4, 64)).astype(np.float32)
    dy = to_backend(backend, rng.standard_normal((4, 2)).astype(np.float32))
    sn.random.seed(0)
    model = _lenet_like()
    grads = []
    for need_dx in (True, False):
        model.zero_grad()
        _, bp = model.forward(to_backend(backend, x), training=True, need_dx=need_dx)
        dx = bp(dy)
        assert (dx is None) == (not need_dx)
        grads.append([sn.to_numpy(p.grad) for p in model.parameters()])
    for g, h in zip(*grads):
        assert_close(h, g, np.float32)


def test_the_first_trainable_layer_is_told_to_skip_dx_and_the_layers_before_it_are_not_backpropagated():
    calls = []

    class Spy(sn.Layer):
        takes_need_dx = True

        def call(self, x, training=False, need_dx=True):
            calls.append((self.name, need_dx))

            def backprop(dy):
                calls.append((self.name, "backprop"))
                return dy

            return x, backprop

    model = sn.Sequential([Spy(name="before"), sn.layers.Dense(3, name="first"), Spy(name="after"), sn.layers.Dense(2)])
    _, bp = model.forward(np.ones((2, 4), np.float32), need_dx=False)
    bp(np.ones((2, 2), np.float32))
    assert calls == [("before", False), ("after", True), ("after", "backprop")]


# --- max pooling split between threads ---------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("shape, k, s, pads", [((5, 7, 9, 3), 2, 2, (0, 1, 0, 1)), ((3, 6, 6, 4), 3, 1, (1, 1, 1, 1))],
                         ids=["same_odd", "overlapping"])
def test_numba_max_pool2d_split_between_threads_matches_the_reference_with_ties(numba_ops, split_everything, shape, k, s,
                                                                             pads, dtype):
    rng = np.random.default_rng(19)
    X = np.maximum(rng.standard_normal(shape), 0).astype(dtype)  # after a ReLU: many tied zeros
    Y, argmax = numba_ops.max_pool2d_forward(X, k, k, s, s, pads)
    Y_ref, argmax_ref = REF.max_pool2d_forward(X, k, k, s, s, pads)
    np.testing.assert_array_equal(Y, Y_ref)
    np.testing.assert_array_equal(argmax, argmax_ref)
    dY = rng.standard_normal(Y.shape).astype(dtype)
    assert_close(numba_ops.max_pool2d_backward(dY, argmax, shape), REF.max_pool2d_backward(dY, argmax_ref, shape), dtype,
                 "dx")


# --- dropout: the reference's numbers, drawn and applied in one pass -----------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("seed", [None, 3])
def test_numba_dropout_draws_the_reference_mask_and_leaves_the_generator_where_the_reference_does(numba_ops, seed,
                                                                                                   dtype):
    x = np.random.default_rng(20).standard_normal((4, 7, 5)).astype(dtype)[:, ::2]  # not contiguous
    results = []
    for ops in (numba_ops, REF):
        sn.random.seed(11)
        y, mask = ops.dropout_forward(x, 0.3, seed)
        results.append((y, mask, ops.dropout_mask((3, 4), 0.3, seed, dtype), sn.random.generator().random()))
    (y, mask, mask2, after), (y_ref, mask_ref, mask2_ref, after_ref) = results
    assert y.dtype == dtype and mask.dtype == dtype and mask2.dtype == dtype
    np.testing.assert_array_equal(mask, mask_ref)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(mask2, mask2_ref)
    assert after == after_ref


# --- Winograd F(4x4, 5x5) ---------------------------------------------------------------------------------


def test_winograd_transform_loops_generated_from_the_matrices_compute_the_matrix_products():
    from scratchnet.kernels.numba import winograd_transforms as wt

    m, a = wt.M_OUT, wt.A_SIZE
    assert (m, a) == (4, 8)
    AT, G, BT = wt.transform_matrices(m, 5, wt.POINTS)
    np.testing.assert_array_equal(AT, wt.AT)
    np.testing.assert_array_equal(BT, wt.BT)
    rng = np.random.default_rng(23)
    C, L = 3, 5
    # Each generated loop, run as Python, against the matrix product along its axis (float64).
    x = rng.standard_normal((a, L))
    rows = np.empty((a, L))
    wt._bt_rows.py_func(x, 0, rows, L)
    np.testing.assert_allclose(rows, BT @ x, rtol=1e-13, atol=1e-13)
    df = rng.standard_normal((a, L))
    want = df + BT.T @ x
    wt._b_rows.py_func(x, df, 0, L)
    np.testing.assert_allclose(df, want, rtol=1e-13, atol=1e-13)
    w = rng.standard_normal(a * C)
    V = np.zeros((a * a, 2, C))
    wt._bt_columns.py_func(w, V, a, 1, C)
    np.testing.assert_allclose(V[a : 2 * a, 1], BT @ w.reshape(a, C), rtol=1e-13, atol=1e-13)
    out = rng.standard_normal(a * C)
    want = out.reshape(a, C) + BT.T @ w.reshape(a, C)
    wt._b_columns.py_func(w, out, C)
    np.testing.assert_allclose(out.reshape(a, C), want, rtol=1e-13, atol=1e-13)
    M = rng.standard_normal((a * a, 2, C))
    tmp = np.empty((m, a, C))
    wt._at_columns.py_func(M, 1, 3, tmp, C)
    np.testing.assert_allclose(tmp[:, 3], AT @ M[3::a, 1], rtol=1e-14, atol=1e-14)
    b, y = rng.standard_normal(C), np.full((1, 1, 6, C), np.nan)
    wt._at_rows.py_func(tmp, 2, b, False, y, 0, 0, 2, 5, C)  # columns 2, 3, 4 of 5: the last one dropped
    np.testing.assert_allclose(y[0, 0, 2:5], (AT @ tmp[2])[:3] + b, rtol=1e-14, atol=1e-14)
    assert np.isnan(y[0, 0, :2]).all() and np.isnan(y[0, 0, 5]).all()
    gt, tmp_a = rng.standard_normal((m, m, C)), np.empty((m, a, C))
    wt._a_rows.py_func(gt, 1, tmp_a, C)
    np.testing.assert_allclose(tmp_a[1], AT.T @ gt[1], rtol=1e-14, atol=1e-14)
    dM = np.empty((a * a, 2, C))
    wt._a_columns.py_func(tmp_a, 5, dM, 0, C)
    np.testing.assert_allclose(dM[5::a, 0], AT.T @ tmp_a[:, 5], rtol=1e-14, atol=1e-14)
    # Zeros are left out of the generated text, and every coefficient is exact in float32.
    assert "_k0 " not in wt._bt_columns.source and "* 0" not in wt._bt_columns.source
    # The 1-D algorithm: four outputs of a 5-tap correlation.
    d, g = rng.standard_normal(a), rng.standard_normal(5)
    np.testing.assert_allclose(AT @ ((G @ g) * (BT @ d)), [d[k : k + 5] @ g for k in range(m)], rtol=1e-12)


WINOGRAD_CASES = {
    # x shape, w shape, pads (stride 1, 5x5): even and odd outputs (partial tiles), asymmetric padding
    "lenet_14x14_same": ((4, 14, 14, 16), (5, 5, 16, 12), (2, 2, 2, 2)),
    "odd_7x9_same": ((3, 7, 9, 8), (5, 5, 8, 10), (2, 2, 2, 2)),
    "valid_9x8": ((2, 9, 8, 9), (5, 5, 9, 8), (0, 0, 0, 0)),
    "asymmetric_5x6": ((1, 5, 6, 8), (5, 5, 8, 8), (1, 3, 2, 2)),
}


def _counted(fn, calls):
    def wrapper(*args, **kwargs):
        calls.append(1)
        return fn(*args, **kwargs)
    return wrapper


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
@pytest.mark.parametrize("case", list(WINOGRAD_CASES))
def test_numba_conv2d_through_winograd_matches_the_reference(numba_ops, split_everything, monkeypatch, case, relu,
                                                              dtype):
    x_shape, w_shape, pads = WINOGRAD_CASES[case]
    rng = np.random.default_rng(24)
    X = rng.standard_normal(x_shape).astype(dtype)
    W = (0.2 * rng.standard_normal(w_shape)).astype(dtype)
    assert numba_ops.winograd.applies(X, W, 1, 1)
    monkeypatch.setattr(numba_ops.winograd, "chunk_bytes", 1)  # one image per chunk: several chunks per part
    calls = []
    monkeypatch.setattr(numba_ops.winograd, "forward", _counted(numba_ops.winograd.forward, calls))
    for b in (rng.standard_normal(w_shape[-1]).astype(dtype), None):
        with conv_algorithm("winograd"):  # float64 runs the exact sum unless Winograd is asked for
            Y = numba_ops.conv2d_forward(X, W, b, 1, 1, pads, relu)
        assert calls, "Winograd did not run"
        Y_ref = REF.conv2d_forward(X, W, b, 1, 1, pads, relu)
        assert Y.dtype == dtype
        assert_close(Y, Y_ref, dtype, "y")
        dY = rng.standard_normal(Y.shape).astype(dtype)
        for need_dx in (True, False):
            with conv_algorithm("winograd"):
                got = numba_ops.conv2d_backward(dY, X, W, Y_ref, 1, 1, pads, relu, need_dx)
            want = REF.conv2d_backward(dY, X, W, Y_ref, 1, 1, pads, relu, need_dx)
            assert (got[0] is None) == (not need_dx)
            for g, w, name in zip(got, want, ("dx", "dw", "db")):
                if w is not None:
                    assert g.dtype == dtype, name
                    assert_close(g, w, dtype, name)


def test_winograd_applies_only_to_stride_1_5x5_with_enough_channels(numba_ops):
    x = np.zeros((1, 8, 8, 8), np.float32)
    assert numba_ops.winograd.applies(x, np.zeros((5, 5, 8, 8), np.float32), 1, 1)
    assert not numba_ops.winograd.applies(x, np.zeros((5, 5, 8, 8), np.float32), 2, 1)
    assert not numba_ops.winograd.applies(x, np.zeros((3, 3, 8, 8), np.float32), 1, 1)
    assert not numba_ops.winograd.applies(x[..., :1], np.zeros((5, 5, 1, 32), np.float32), 1, 1)  # LeNet's first layer


# --- the packed GEMM and the LSTM's tanh -----------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("shape", [(50, 256, 1024), (7, 3, 64), (1, 1, 1), (13, 100, 96), (0, 5, 32), (5, 0, 32),
                                   (9, 6, 70), (3, 4, 7),
                                   (23, 600, 70), (50, 512, 128)]  # K in several blocks (K_BLOCK), with an edge panel
                                  + [(m, 9, 40) for m in range(11, 21)])  # every tile height
def test_packed_gemm_matches_numpy_for_any_shape_and_layout(shape, dtype):
    from scratchnet.kernels.runtime import gemm as gemm_numba

    M, K, N = shape
    rng = np.random.default_rng(25)
    a, b = rng.standard_normal((M, K)).astype(dtype), rng.standard_normal((K, N)).astype(dtype)
    bp = gemm_numba.pack(b)
    c = np.full((M, N), 7, dtype)
    gemm_numba.gemm_packed(a, bp, c, False)
    assert_close(c, a @ b, dtype, "c = a @ b")
    gemm_numba.gemm_packed(np.asfortranarray(a), bp, c, True)  # a of another layout, and accumulating
    assert_close(c, 2 * (a @ b), dtype, "c += a @ b")


def test_the_lstm_float32_tanh_is_within_4e_7_of_tanh_and_keeps_nan():
    from numba import njit

    from scratchnet.kernels.numba import lstm as lstm_numba

    @njit
    def apply(x, out):
        for i in range(x.size):
            out[i] = lstm_numba._tanh(x[i])

    x = np.concatenate([np.linspace(-12, 12, 200001), [0.0, -0.0, 1e-30, 100, -100, np.inf, -np.inf, np.nan]])
    for dtype, tol in ((np.float32, 4e-7), (np.float64, 1e-15)):
        out = np.empty(x.size, dtype)
        apply(x.astype(dtype), out)
        want = np.tanh(x.astype(dtype).astype(np.float64))
        assert np.isnan(out[-1])
        assert np.max(np.abs(out[:-1] - want[:-1])) <= tol


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_numba_softmax_cross_entropy_split_between_threads_matches_the_reference(numba_ops, monkeypatch, dtype):
    from scratchnet.kernels.numba import losses as losses_numba

    monkeypatch.setattr(losses_numba, "MIN_PART_ELEMENTS", 1)
    rng = np.random.default_rng(26)
    logits = (5 * rng.standard_normal((37, 11))).astype(dtype)
    logits[0] = 0  # a row of ties
    logits[1, 3] = 500  # a huge logit: log-sum-exp keeps it finite
    labels = rng.integers(0, 11, 37)
    losses, probs = numba_ops.softmax_cross_entropy_forward(logits, labels)
    want_losses, want_probs = REF.softmax_cross_entropy_forward(logits, labels)
    assert_close(losses, want_losses, dtype, "losses")
    assert_close(probs, want_probs, dtype, "probs")
    assert_close(numba_ops.softmax_cross_entropy_backward(probs, labels, 0.25), REF.softmax_cross_entropy_backward(want_probs, labels, 0.25),
                 dtype, "dlogits")


# --- weight gradients are new arrays: the layers keep them as .grad without a copy -------------------


def _assert_new(outputs, inputs, what):
    from scratchnet.backend import get_backend

    xp = get_backend().xp  # numpy, or cupy: its own shares_memory compares device memory
    for i, out in enumerate(outputs):
        if out is None:
            continue
        for a in inputs:
            assert not xp.shares_memory(out, a), f"{what}: output {i} shares an input's memory"


def test_every_backward_kernel_returns_new_arrays(backend):
    from scratchnet.backend import get_backend

    be, xp = get_backend(), get_backend().xp
    rng = np.random.default_rng(31)
    f = lambda *shape: xp.asarray(rng.standard_normal(shape).astype(np.float32))  # noqa: E731
    x, w, dy = f(6, 5), f(5, 4), f(6, 4)
    y = be.dense_forward(x, w, None, True)
    for relu in (False, True):
        _assert_new(be.dense_backward(dy, x, w, y, relu), [x, w, dy, y], "dense_backward")
    xi, wi = f(2, 6, 6, 3), f(5, 5, 3, 8)
    pads = (2, 2, 2, 2)
    yi = be.conv2d_forward(xi, wi, None, 1, 1, pads, True)
    _assert_new(be.conv2d_backward(f(*yi.shape), xi, wi, yi, 1, 1, pads, True, True), [xi, wi, yi], "conv2d_backward")
    xs, k, r, b = f(3, 2, 4), f(4, 12), f(3, 12), f(12)
    h0, c0 = f(2, 3), f(2, 3)
    hs, cs, gs = be.lstm_forward(xs, k, r, b, h0, c0)
    _assert_new(be.lstm_backward(f(3, 2, 3), h0, c0, xs, k, r, hs, cs, gs), [xs, k, r, b, hs, cs, gs, h0, c0],
                "lstm_backward")
    ids = xp.asarray(np.array([0, 2, 2, 1]))
    dye = f(4, 5)
    _assert_new([be.embedding_backward(ids, dye, 3)], [dye], "embedding_backward")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("shape", [(3, 5, 7), (1, 1, 1), (64, 33, 3)], ids=["odd", "one", "many_steps"])
def test_numba_swap_batch_time_is_the_transpose(numba_ops, split_everything, shape, dtype):
    a = np.random.default_rng(32).standard_normal(shape).astype(dtype)
    out = numba_ops.swap_batch_time(a)
    assert out.flags.c_contiguous and out.dtype == dtype
    np.testing.assert_array_equal(out, a.transpose(1, 0, 2))
    np.testing.assert_array_equal(numba_ops.swap_batch_time(out), a)  # its own inverse
    view = np.random.default_rng(33).standard_normal((shape[1], shape[0], shape[2])).astype(dtype).transpose(1, 0, 2)
    np.testing.assert_array_equal(numba_ops.swap_batch_time(view), REF.swap_batch_time(view))  # any layout
