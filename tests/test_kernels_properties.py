"""Property tests: every fast kernel against the reference, on drawn shapes and memory layouts.

Each test draws a case from ``tests/strategies.py`` (sizes down to 1,
windows larger than the image under SAME, strides larger than the window,
float32 and float64) and inputs in any memory layout (transposed, Fortran,
sliced with a step, offset, reversed: the layouts a compiled kernel gets
wrong when it assumes a fresh C-contiguous array). It runs the public op on
the backend under test (``numba``; ``cupy`` where CuPy or its stand-in is)
with those views and on the ``numpy`` backend (the oracle, ``ReferenceOps``)
with contiguous copies, and asks for the same outputs and gradients: to
round-off in float64 (``rtol=1e-10``), to 1e-4 in float32. The inputs must
come back unchanged.

Hypothesis draws 25 examples a test, the same on every run (the profile in
``conftest.py``); ``HYPOTHESIS_PROFILE=explore`` draws 500 fresh ones. Run
one family with ``pytest -m conv tests/test_kernels_properties.py``.
"""
from __future__ import annotations

import contextlib
from unittest import mock

import numpy as np
import pytest

pytest.importorskip("hypothesis", reason="the property tests need hypothesis: install scratchnet[test]")

from hypothesis import assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import scratchnet as sn  # noqa: E402
from helpers import backend_params  # noqa: E402
from scratchnet.ops.shapes import tf_padding_2d  # noqa: E402
from strategies import (  # noqa: E402
    Laid,
    Layout,
    conv_cases,
    dense_cases,
    dtypes,
    laid,
    laid_ints,
    layouts,
    pool_cases,
    sequence_cases,
    shapes,
    winograd_cases,
)

# The backends with kernels of their own; each is compared with the reference. Skipped where they
# cannot run (cupy without CuPy), and as SCRATCHNET_BACKEND and SCRATCHNET_FAKE_CUPY=1 ask.
TARGETS = backend_params(("numba", "cupy"))

# (rtol, atol): atol is scaled by the largest magnitude of the reference's output (sums of many terms).
TOLERANCES = {np.dtype(np.float64): (1e-10, 1e-12), np.dtype(np.float32): (1e-4, 1e-5)}
CONTIGUOUS = Layout("contiguous")  # how the reference gets its inputs


def assert_same(got, want, dtype, name):
    """``got`` (backend under test) against ``want`` (reference): both None, or the same shape and dtype, close."""
    if want is None or got is None:
        assert got is None and want is None, f"{name}: one backend returned None, the other an array"
        return
    got, want = np.asarray(sn.to_numpy(got)), np.asarray(sn.to_numpy(want))
    assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
    assert got.dtype == want.dtype == dtype, f"{name}: dtype {got.dtype} (reference {want.dtype}, inputs {dtype})"
    rtol, atol = TOLERANCES[np.dtype(dtype)]
    scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol * scale, err_msg=name)


@contextlib.contextmanager
def split_between_threads(split):
    """When ``split``: every numba kernel splits its work between threads and chunks, however small its
    input (``threads.MIN_PART_MACS`` patched to 1, as ``split_everything`` in
    ``test_fast_kernels_match_reference.py`` does), so that the parts' bounds and sums are checked too."""
    if not split:
        yield
        return
    from scratchnet.kernels.runtime import threads

    with mock.patch.object(threads, "MIN_PART_MACS", 1), \
            mock.patch.object(threads, "rows_for", lambda macs_per_row, min_macs=1: 1):
        yield


def draw_split(data, backend):
    """Whether this example's numba kernels split their work between threads (drawn; False elsewhere)."""
    return backend == "numba" and data.draw(st.booleans(), label="split between threads")


def run_on(backend, run, inputs, check_unchanged=True, split=False):
    """``run(*arrays)`` on ``backend``, the :class:`Laid` ``inputs`` made there in their layouts (None kept)."""
    with sn.use_backend(backend) as be, split_between_threads(split):
        arrays = [None if a is None else a.on(be.xp) for a in inputs]
        out = run(*arrays)
    if check_unchanged:
        for a, laid_input in zip(arrays, inputs):
            if a is not None:
                np.testing.assert_array_equal(sn.to_numpy(a), laid_input.values,
                                              err_msg=f"the {backend} backend wrote into an input")
    return out, arrays


def compare_with_reference(data, target, run, dtype, *inputs):
    """``run`` on ``target`` (the drawn layouts) and on the reference (contiguous copies): the same results.

    ``run`` returns a dict of named arrays (None where an op returns None).
    """
    got, _ = run_on(target, run, inputs, split=draw_split(data, target))
    contiguous = [None if a is None else Laid(a.values, CONTIGUOUS) for a in inputs]
    want, _ = run_on("numpy", run, contiguous)
    assert got.keys() == want.keys()
    for name in want:
        assert_same(got[name], want[name], dtype, name)
    return got, want


def draw(data, shape, dtype, label, kinds=("normal",)):
    """A :class:`Laid` array, labelled in a failure's report (its values, then its layout)."""
    return data.draw(laid(shape, dtype, kinds), label=label)


# Each test runs once per backend under test (its parameter ``target``).
on_each_target = pytest.mark.parametrize("target", TARGETS)


# --- dense ----------------------------------------------------------------------------------------

@pytest.mark.dense
@on_each_target
@given(case=dense_cases(), dtype=dtypes(), bias=st.booleans(), relu=st.booleans(), need_dx=st.booleans(),
       data=st.data())
def test_dense_forward_and_backward_match_the_reference(target, case, dtype, bias, relu, need_dx, data):
    # "ties": small integers, so that y = x @ w + b is exactly 0 somewhere and the fused ReLU meets its kink.
    x = draw(data, (case.N, case.C), dtype, "x", ("normal", "ties"))
    w = draw(data, (case.C, case.K), dtype, "w", ("normal", "ties"))
    b = draw(data, (case.K,), dtype, "b", ("normal", "ties")) if bias else None
    dy = draw(data, (case.N, case.K), dtype, "dy")

    def run(x, w, b, dy):
        y, backprop = sn.ops.dense(x, w, b, activation="relu" if relu else None, need_dx=need_dx)
        dx, dw, db = backprop(dy)
        return {"y": y, "dx": dx, "dw": dw, "db": db}

    compare_with_reference(data, target, run, dtype, x, w, b, dy)


@pytest.mark.dense
@on_each_target
@given(P=st.integers(1, 9), Q=st.integers(1, 9), R=st.integers(1, 9), trans_a=st.booleans(),
       trans_b=st.booleans(), dtype=dtypes(), data=st.data())
def test_gemm_kernel_matches_the_reference_for_any_layout(target, P, Q, R, trans_a, trans_b, dtype, data):
    A = draw(data, (Q, P) if trans_a else (P, Q), dtype, "A")
    B = draw(data, (R, Q) if trans_b else (Q, R), dtype, "B")

    def run(A, B):
        return {"out": sn.get_backend().gemm(A, B, trans_a, trans_b)}

    compare_with_reference(data, target, run, dtype, A, B)


# --- conv2d ---------------------------------------------------------------------------------------

def _output_shape(case, channels):
    """(N, OH, OW, channels) of a WindowCase, by TensorFlow's rule (``scratchnet.ops.shapes``)."""
    OH, OW, _ = tf_padding_2d("conv2d", case.x_shape, case.window, case.strides, case.padding)
    return case.N, OH, OW, channels


def _conv_run(case, relu, need_dx, algorithm="direct"):
    """conv2d forward and backward; ``algorithm`` on the backend under test, the reference's direct sum."""
    def run(x, w, b, dy):
        with sn.conv_algorithm("direct" if sn.get_backend().name == "numpy" else algorithm):
            y, backprop = sn.ops.conv2d(x, w, b, case.strides, case.padding,
                                        activation="relu" if relu else None, need_dx=need_dx)
            dx, dw, db = backprop(dy)
        return {"y": y, "dx": dx, "dw": dw, "db": db}

    return run


@pytest.mark.conv
@on_each_target
@given(case=conv_cases(), dtype=dtypes(), bias=st.booleans(), relu=st.booleans(), need_dx=st.booleans(),
       data=st.data())
def test_conv2d_forward_and_backward_match_the_reference(target, case, dtype, bias, relu, need_dx, data):
    x = draw(data, case.x_shape, dtype, "x", ("normal", "ties"))
    w = draw(data, case.w_shape, dtype, "w", ("normal", "ties"))
    b = draw(data, (case.O,), dtype, "b", ("normal", "ties")) if bias else None
    dy = draw(data, _output_shape(case, case.O), dtype, "dy")
    compare_with_reference(data, target, _conv_run(case, relu, need_dx), dtype, x, w, b, dy)


@pytest.mark.conv
@pytest.mark.parametrize("target", backend_params(("numba",)))  # the one backend with a Winograd
@settings(max_examples=10)  # Winograd's transforms are the slowest kernels here; its cases are few
@given(case=winograd_cases(), bias=st.booleans(), data=st.data())
def test_conv2d_winograd_matches_the_reference_in_float32(target, case, bias, data):
    # No ReLU: Winograd's round-off turns the reference's exact zeros into
    # tiny nonzeros, which a ReLU passes with their whole gradient (tests/test_conv_algorithm.py).
    dtype = np.float32
    x = draw(data, case.x_shape, dtype, "x")
    w = draw(data, case.w_shape, dtype, "w")
    b = draw(data, (case.O,), dtype, "b") if bias else None
    dy = draw(data, _output_shape(case, case.O), dtype, "dy")
    compare_with_reference(data, target, _conv_run(case, relu=False, need_dx=True, algorithm="winograd"), dtype,
                           x, w, b, dy)


@pytest.mark.conv
@on_each_target
@given(case=conv_cases(), dtype=dtypes(), data=st.data())
def test_im2col_and_col2im_kernels_match_the_reference_and_are_adjoint(target, case, dtype, data):
    (kh, kw), (sh, sw) = case.window, case.strides
    OH, OW, pads = tf_padding_2d("conv2d", case.x_shape, case.window, case.strides, case.padding)
    x = draw(data, case.x_shape, dtype, "x")
    d = draw(data, (case.N * OH * OW, kh * kw * case.C), dtype, "cols")

    def run(x, d):
        be = sn.get_backend()
        return {"cols": be.im2col(x, kh, kw, sh, sw, pads), "dx": be.col2im(d, case.x_shape, kh, kw, sh, sw, pads)}

    got, _ = compare_with_reference(data, target, run, dtype, x, d)
    # <im2col(x), d> == <x, col2im(d)>: col2im is im2col's transpose.
    rtol, atol = TOLERANCES[np.dtype(dtype)]
    cols, dx = sn.to_numpy(got["cols"]), sn.to_numpy(got["dx"])
    np.testing.assert_allclose(np.vdot(cols, d.values), np.vdot(x.values, dx), rtol=rtol,
                               atol=atol * max(1.0, float(np.abs(d.values).sum())))


# --- pooling --------------------------------------------------------------------------------------

@pytest.mark.pool
@on_each_target
@given(case=pool_cases(), dtype=dtypes(), data=st.data())
def test_max_pool2d_forward_and_backward_match_the_reference_ties_included(target, case, dtype, data):
    # "ties": windows holding their maximum more than once, which must route as TensorFlow does (first).
    x = draw(data, case.x_shape, dtype, "x", ("normal", "ties"))
    dy = draw(data, _output_shape(case, case.C), dtype, "dy")

    def run(x, dy):
        y, backprop = sn.ops.max_pool2d(x, case.window, case.strides, case.padding)
        return {"y": y, "dx": backprop(dy)}

    compare_with_reference(data, target, run, dtype, x, dy)


@pytest.mark.pool
@on_each_target
@given(case=pool_cases(), dtype=dtypes(), data=st.data())
def test_avg_pool2d_forward_and_backward_match_the_reference(target, case, dtype, data):
    x = draw(data, case.x_shape, dtype, "x")
    dy = draw(data, _output_shape(case, case.C), dtype, "dy")

    def run(x, dy):
        y, backprop = sn.ops.avg_pool2d(x, case.window, case.strides, case.padding)
        return {"y": y, "dx": backprop(dy)}

    compare_with_reference(data, target, run, dtype, x, dy)


# --- LSTM -----------------------------------------------------------------------------------------

def _lstm_weights(data, case, dtype):
    return (draw(data, (case.D, 4 * case.H), dtype, "kernel"),
            draw(data, (case.H, 4 * case.H), dtype, "recurrent_kernel"),
            draw(data, (4 * case.H,), dtype, "bias"))


def _lstm_state_and_gradients(data, case, dtype, with_state, with_dys, with_final):
    """h0, c0 (or None: zeros), the outputs' gradient dys (or None: only the final state is used), dh, dc."""
    state = (case.N, case.H)
    return (draw(data, state, dtype, "h0") if with_state else None,
            draw(data, state, dtype, "c0") if with_state else None,
            draw(data, (case.N, case.T, case.H), dtype, "dys") if with_dys else None,
            draw(data, state, dtype, "dh") if with_final else None,
            draw(data, state, dtype, "dc") if with_final else None)


@pytest.mark.lstm
@on_each_target
@given(case=sequence_cases(), dtype=dtypes(), with_state=st.booleans(), with_dys=st.booleans(),
       with_final=st.booleans(), need_dx=st.booleans(), data=st.data())
def test_lstm_sequence_forward_and_backward_match_the_reference(target, case, dtype, with_state, with_dys,
                                                                with_final, need_dx, data):
    x = draw(data, (case.N, case.T, case.D), dtype, "x")
    weights = _lstm_weights(data, case, dtype)
    # Some gradient always: dys, or the final state's, or both.
    rest = _lstm_state_and_gradients(data, case, dtype, with_state, with_dys or not with_final, with_final)

    def run(x, kernel, recurrent_kernel, bias, h0, c0, dys, dh, dc):
        (ys, h, c), backprop = sn.ops.lstm(x, kernel, recurrent_kernel, bias, h0, c0, need_dx=need_dx)
        names = ("dx", "dkernel", "drecurrent_kernel", "dbias", "dh0", "dc0")
        return {"ys": ys, "h": h, "c": c, **dict(zip(names, backprop(dys, dh, dc)))}

    compare_with_reference(data, target, run, dtype, x, *weights, *rest)


@pytest.mark.lstm
@pytest.mark.embedding
@on_each_target
@given(case=sequence_cases(), dtype=dtypes(), with_state=st.booleans(), need_dtable=st.booleans(),
       data=st.data())
def test_embedding_lstm_forward_and_backward_match_the_reference(target, case, dtype, with_state, need_dtable,
                                                                 data):
    ids = data.draw(laid_ints((case.N, case.T), case.V), label="ids")
    table = draw(data, (case.V, case.D), dtype, "table")
    weights = _lstm_weights(data, case, dtype)
    rest = _lstm_state_and_gradients(data, case, dtype, with_state, True, True)

    def run(ids, table, kernel, recurrent_kernel, bias, h0, c0, dys, dh, dc):
        (ys, h, c), backprop = sn.ops.embedding_lstm(ids, table, kernel, recurrent_kernel, bias, h0, c0,
                                                     need_dtable=need_dtable)
        names = ("dtable", "dkernel", "drecurrent_kernel", "dbias", "dh0", "dc0")
        return {"ys": ys, "h": h, "c": c, **dict(zip(names, backprop(dys, dh, dc)))}

    compare_with_reference(data, target, run, dtype, ids, table, *weights, *rest)


# --- GRU, SimpleRNN ------------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["gru", "simple_rnn"])
@on_each_target
@given(case=sequence_cases(), dtype=dtypes(), with_state=st.booleans(), with_dys=st.booleans(),
       with_final=st.booleans(), masked=st.booleans(), data=st.data())
def test_gru_and_simple_rnn_forward_and_backward_match_the_reference(target, op, case, dtype, with_state, with_dys,
                                                                     with_final, masked, data):
    gates = 3 if op == "gru" else 1
    x = draw(data, (case.N, case.T, case.D), dtype, "x")
    kernel = draw(data, (case.D, gates * case.H), dtype, "kernel")
    recurrent_kernel = draw(data, (case.H, gates * case.H), dtype, "recurrent_kernel")
    bias = draw(data, (2, 3 * case.H) if op == "gru" else (case.H,), dtype, "bias")
    h0 = draw(data, (case.N, case.H), dtype, "h0") if with_state else None
    dys = draw(data, (case.N, case.T, case.H), dtype, "dys") if with_dys or not with_final else None
    dh = draw(data, (case.N, case.H), dtype, "dh") if with_final else None
    # A mask with holes anywhere (whole rows masked included): the state carried over masked steps.
    mask = (np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="mask seed")).random((case.N, case.T))
            > 0.4) if masked else None

    def run(x, kernel, recurrent_kernel, bias, h0, dys, dh):
        m = None if mask is None else sn.get_backend().xp.asarray(mask)
        (ys, h), backprop = getattr(sn.ops, op)(x, kernel, recurrent_kernel, bias, h0, mask=m)
        names = ("dx", "dkernel", "drecurrent_kernel", "dbias", "dh0")
        return {"ys": ys, "h": h, **dict(zip(names, backprop(dys, dh)))}

    compare_with_reference(data, target, run, dtype, x, kernel, recurrent_kernel, bias, h0, dys, dh)


# --- embedding, dropout ---------------------------------------------------------------------------

@pytest.mark.embedding
@on_each_target
@given(ids_shape=shapes(1, 3, max_side=5), V=st.integers(1, 8), D=st.integers(1, 6), dtype=dtypes(),
       data=st.data())
def test_embedding_lookup_and_scatter_add_match_the_reference(target, ids_shape, V, D, dtype, data):
    ids = data.draw(laid_ints(ids_shape, V), label="ids")
    table = draw(data, (V, D), dtype, "table")
    dy = draw(data, ids_shape + (D,), dtype, "dy")

    def run(ids, table, dy):
        y, backprop = sn.ops.embedding(ids, table)
        return {"y": y, "dtable": backprop(dy)}

    compare_with_reference(data, target, run, dtype, ids, table, dy)


@pytest.mark.dropout
@on_each_target
@given(shape=shapes(1, 4), rate=st.sampled_from([0.0, 0.1, 0.5, 0.9]), seed=st.integers(0, 2**31 - 1),
       dtype=dtypes(), data=st.data())
def test_dropout_applies_one_mask_forward_and_backward(target, shape, rate, seed, dtype, data):
    # y = x * mask and dx = dy * mask for one mask of 0 and 1 / (1 - rate); the numba backend draws the
    # reference's mask for a seed, the cupy backend a mask of its own (a hash on the device).
    x = draw(data, shape, dtype, "x")
    dy = draw(data, shape, dtype, "dy")

    def run(x, dy):
        y, backprop = sn.ops.dropout(x, rate, seed=seed)
        return {"y": y, "dx": backprop(dy), "mask": backprop(sn.get_backend().xp.ones(shape, dtype))}

    got, _ = run_on(target, run, (x, dy), split=draw_split(data, target))
    want, _ = run_on("numpy", run, (Laid(x.values, CONTIGUOUS), dy))
    mask = sn.to_numpy(got["mask"])
    assert set(np.unique(mask)) <= {dtype(0), dtype(1) / dtype(1 - rate)}
    assert_same(got["y"], x.values * mask, dtype, "y")
    assert_same(got["dx"], dy.values * mask, dtype, "dx")
    if target != "cupy":
        for name in want:
            assert_same(got[name], want[name], dtype, name)


# --- losses, activations --------------------------------------------------------------------------

@pytest.mark.losses
@on_each_target
@given(lead=shapes(1, 2, max_side=6), K=st.integers(1, 9), distributions=st.booleans(),
       dloss=st.floats(-3, 3, allow_nan=False), dtype=dtypes(), data=st.data())
def test_softmax_cross_entropy_matches_the_reference(target, lead, K, distributions, dloss, dtype, data):
    logits = draw(data, lead + (K,), dtype, "logits")
    if distributions:
        raw = np.abs(draw(data, lead + (K,), dtype, "weights").values) + np.asarray(0.1, dtype)
        labels = Laid(raw / raw.sum(axis=-1, keepdims=True), data.draw(layouts(len(lead) + 1), label="labels"))
    else:
        labels = data.draw(laid_ints(lead, K), label="labels")

    def run(logits, labels):
        loss, backprop = sn.ops.softmax_cross_entropy(logits, labels)
        return {"loss": loss, "dlogits": backprop(dloss)}

    compare_with_reference(data, target, run, dtype, logits, labels)


@pytest.mark.activations
@on_each_target
@given(op=st.sampled_from(["relu", "sigmoid", "tanh", "softmax", "log_softmax"]), shape=shapes(1, 4),
       dtype=dtypes(), data=st.data())
def test_activations_match_the_reference(target, op, shape, dtype, data):
    x = draw(data, shape, dtype, "x", ("normal", "ties"))
    x = Laid(x.values * dtype(4), x.layout)  # into sigmoid's and tanh's flat tails
    dy = draw(data, shape, dtype, "dy")
    axis = data.draw(st.integers(-len(shape), len(shape) - 1), label="axis")

    def run(x, dy):
        fn = getattr(sn.ops, op)
        y, backprop = fn(x, axis=axis) if op in ("softmax", "log_softmax") else fn(x)
        return {"y": y, "dx": backprop(dy)}

    compare_with_reference(data, target, run, dtype, x, dy)


# --- parameter updates (in place) -----------------------------------------------------------------

UPDATES = {
    # kernel: (its arrays, its scalars); sgd_l2_ema_update's shadow sits between them.
    "scaled_add": ("yx", (-0.1,)),
    "moving_average_update": ("sv", (0.9,)),
    "sum_of_squares": ("x", ()),
    "sgd_l2_ema_update": ("wgs", (0.1, 0.01, 0.99)),
    "adam_update": ("wgmv", (0.01, 0.9, 0.999, 1e-7)),
}


@pytest.mark.optimizers
@on_each_target
@given(shape=shapes(1, 3, max_side=7), dtype=dtypes(), kernel=st.sampled_from(list(UPDATES)), data=st.data())
def test_update_kernels_match_the_reference_in_place_for_any_layout(target, shape, dtype, kernel, data):
    names, scalars = UPDATES[kernel]
    operands = [draw(data, shape, dtype, name) for name in names]
    if kernel == "adam_update":
        operands[3] = Laid(np.abs(operands[3].values), operands[3].layout)  # v, a running mean of squares

    def run(*arrays):
        be = sn.get_backend()
        if kernel == "sgd_l2_ema_update":
            (w, g, shadow), (lr, l2, decay) = arrays, scalars
            return be.sgd_l2_ema_update(w, g, lr, l2, shadow, decay)
        return getattr(be, kernel)(*arrays, *scalars)

    got, got_arrays = run_on(target, run, operands, check_unchanged=False, split=draw_split(data, target))
    want, want_arrays = run_on("numpy", run, [Laid(a.values, CONTIGUOUS) for a in operands], check_unchanged=False)
    if want is not None:  # the sums
        np.testing.assert_allclose(float(got), float(want), rtol=TOLERANCES[np.dtype(dtype)][0],
                                   err_msg=f"{kernel}'s sum")
    for name, g, w in zip(names, got_arrays, want_arrays):
        assert_same(g, w, dtype, f"{kernel}: {name}")


@pytest.mark.properties
@on_each_target
@given(shape=shapes(min_dims=2, max_dims=4), dtype=dtypes(), op=st.sampled_from(["layer_norm", "batch_norm"]),
       affine=st.booleans(), data=st.data())
def test_normalization_forward_and_backward_match_the_reference(target, shape, dtype, op, affine, data):
    assume(op == "layer_norm" or int(np.prod(shape[:-1])) >= 2)
    C = shape[-1]
    x, dy = draw(data, shape, dtype, "x"), draw(data, shape, dtype, "dy")
    gamma = draw(data, (C,), dtype, "gamma") if affine else None
    beta = draw(data, (C,), dtype, "beta") if affine else None

    def run(x, gamma, beta, dy):
        out, backprop = getattr(sn.ops, op)(x, gamma, beta)
        y, mean, var = out if op == "batch_norm" else (out, None, None)
        dx, dgamma, dbeta = backprop(dy)
        return {"y": y, "mean": mean, "var": var, "dx": dx, "dgamma": dgamma, "dbeta": dbeta}

    compare_with_reference(data, target, run, dtype, x, gamma, beta, dy)
