"""GRU, SimpleRNN and Bidirectional against Keras's with the same weights (outputs, input, state and weight gradients,
float32 and float64), the ops by finite differences in float64, and their argument errors."""
from __future__ import annotations

from functools import reduce

import numpy as np
import pytest

import scratchnet as sn
from helpers import assert_close, load_tensorflow, to_backend
from scratchnet.gradcheck import check_op
from scratchnet.ops.reference import ReferenceOps

DTYPES = [np.float32, np.float64]
DTYPE_IDS = ["float32", "float64"]
L = sn.layers

OPTIONS = {
    "last": dict(),
    "sequences": dict(return_sequences=True),
    "state": dict(return_state=True),
    "backwards": dict(go_backwards=True, return_sequences=True),
    "initial state": dict(return_sequences=True),
}


def _random_weights(weights, rng, dtype):
    return [(0.5 * rng.standard_normal(w.shape)).astype(dtype) for w in weights]


def keras_run(kind, kwargs, dtype, x, h0, dys):
    """Keras's outputs and the gradients of sum(outputs * dys) for x, h0 and each weight; and its weights."""
    tf = load_tensorflow()
    layer = getattr(tf.keras.layers, kind)(4, dtype="float64" if dtype == np.float64 else "float32", **kwargs)
    xt = tf.constant(x)
    layer(xt)
    weights = _random_weights(layer.get_weights(), np.random.default_rng(9), dtype)
    layer.set_weights(weights)
    ht = None if h0 is None else tf.constant(h0)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(xt)
        if ht is not None:
            tape.watch(ht)
        out = layer(xt, initial_state=None if ht is None else [ht])
        outs = out if isinstance(out, (list, tuple)) else [out]
        loss = sum(tf.reduce_sum(o * d) for o, d in zip(outs, dys))
    grads = {"x": tape.gradient(loss, xt).numpy()}
    if ht is not None:
        grads["h0"] = tape.gradient(loss, ht).numpy()
    grads["weights"] = [g.numpy() for g in tape.gradient(loss, layer.trainable_weights)]
    return [o.numpy() for o in outs], grads, weights


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("kind", ["GRU", "SimpleRNN"])
def test_recurrent_layer_matches_keras(backend, kind, option, dtype):
    rng = np.random.default_rng(0)
    kwargs = OPTIONS[option]
    x = rng.standard_normal((3, 5, 6)).astype(dtype)
    h0 = rng.standard_normal((3, 4)).astype(dtype) if option == "initial state" else None
    sequences = kwargs.get("return_sequences", False)
    dys = [rng.standard_normal((3, 5, 4) if sequences else (3, 4)).astype(dtype)]
    if kwargs.get("return_state"):
        dys.append(rng.standard_normal((3, 4)).astype(dtype))
    outs_k, grads_k, weights = keras_run(kind, kwargs, dtype, x, h0, dys)

    layer = getattr(L, kind)(4, dtype=dtype, **kwargs)
    layer.forward(to_backend(backend, x))
    layer.set_weights(weights)
    extra = {} if h0 is None else {"initial_state": [to_backend(backend, h0)]}
    out, backprop = layer.forward(to_backend(backend, x), **extra)
    outs = out if isinstance(out, list) else [out]
    for o, o_k in zip(outs, outs_k):
        assert_close(sn.to_numpy(o), o_k, dtype, "output")
    layer.zero_grad()
    dY = [to_backend(backend, d) for d in dys] if len(dys) > 1 else to_backend(backend, dys[0])
    grads = backprop(dY)
    dx, dh0 = (grads[0], grads[1]) if h0 is not None else (grads, None)
    assert_close(sn.to_numpy(dx), grads_k["x"], dtype, "dx")
    if h0 is not None:
        assert_close(sn.to_numpy(dh0), grads_k["h0"], dtype, "dh0")
    for p, g_k in zip(layer.parameters(), grads_k["weights"]):
        assert_close(sn.to_numpy(p.grad), g_k, dtype, p.name)


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "ave", "mul"])
@pytest.mark.parametrize("inner, sequences", [("GRU", True), ("GRU", False), ("SimpleRNN", True), ("LSTM", True),
                                               ("LSTM", False)])
def test_bidirectional_matches_keras(backend, inner, sequences, merge_mode):
    tf = load_tensorflow()
    dtype = np.float64
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 5, 3))
    keras_layer = tf.keras.layers.Bidirectional(getattr(tf.keras.layers, inner)(4, return_sequences=sequences,
                                                                                dtype="float64"),
                                                merge_mode=merge_mode, dtype="float64")
    xt = tf.constant(x)
    keras_layer(xt)
    weights = _random_weights(keras_layer.get_weights(), rng, dtype)
    keras_layer.set_weights(weights)
    ours = L.Bidirectional(getattr(L, inner)(4, return_sequences=sequences, dtype="float64"), merge_mode=merge_mode)
    ours.forward(to_backend(backend, x))
    ours.set_weights(weights)
    y, backprop = ours.forward(to_backend(backend, x))
    dy = rng.standard_normal(tuple(y.shape))
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y_k = keras_layer(xt)
        loss = tf.reduce_sum(y_k * dy)
    dx_k, *wgrads_k = tape.gradient(loss, [xt, *keras_layer.trainable_weights])
    assert_close(sn.to_numpy(y), y_k.numpy(), dtype, "y")
    ours.zero_grad()
    dx = backprop(to_backend(backend, dy))
    assert_close(sn.to_numpy(dx), dx_k.numpy(), dtype, "dx")
    for p, g_k in zip(ours.parameters(), wgrads_k):
        assert_close(sn.to_numpy(p.grad), g_k.numpy(), dtype, p.name)


@pytest.mark.parametrize("op", ["gru", "simple_rnn"])
def test_ops_float64_finite_differences(op):
    rng = np.random.default_rng(2)
    H, D = 3, 2
    gates = 3 if op == "gru" else 1
    x = rng.standard_normal((2, 4, D))
    kernel, recurrent = rng.standard_normal((D, gates * H)), rng.standard_normal((H, gates * H))
    bias = rng.standard_normal((2, 3 * H) if op == "gru" else (H,))
    h0 = rng.standard_normal((2, H))
    fn = getattr(sn.ops, op)
    with sn.use_backend("numpy"):
        assert check_op(fn, x, kernel, recurrent, bias, h0, mode="full").passed


def test_a_gru_in_a_model_trains_and_round_trips_through_its_config():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((16, 6, 3))
    y = (x[:, :, 0].sum(axis=1) > 0).astype(np.int64)
    with sn.use_backend("numpy"):
        sn.random.seed(0)
        model = sn.Sequential([L.Bidirectional(L.GRU(8)), L.Dense(2)], dtype="float64")
        model.compile(optimizer=sn.optimizers.Adam(0.02), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        for _ in range(60):
            result = model.train_on_batch(x, y)
        assert result["accuracy"] > 0.9
        for layer in (model.layers[0], L.SimpleRNN(3, go_backwards=True), L.GRU(5, return_state=True)):
            config = layer.get_config()
            again = L.deserialize({"class_name": type(layer).__name__, "config": config})
            assert again.get_config() == config


@pytest.mark.parametrize("make, message", [
    (lambda: L.GRU(4, reset_after=False), "reset_after=False is not supported"),
    (lambda: L.GRU(4, activation="relu"), "activation='relu' is not supported"),
    (lambda: L.SimpleRNN(0), "units must be a positive int"),
    (lambda: L.Bidirectional(L.Dense(3)), "must be a GRU, SimpleRNN or LSTM"),
    (lambda: L.Bidirectional(L.GRU(3), merge_mode="max"), "merge_mode must be one of"),
    (lambda: L.Bidirectional(L.GRU(3, return_state=True)), "return_state or stateful is not supported"),
])
def test_bad_arguments_are_one_clear_error(make, message):
    with pytest.raises(ValueError) as info:
        make()
    assert message in str(info.value)


def test_bad_shapes_name_the_op_and_the_shapes():
    with sn.use_backend("numpy"):
        with pytest.raises(ValueError, match=r"gru: the weights must be kernel \(D, 3H\)"):
            sn.ops.gru(np.ones((2, 3, 4)), np.ones((4, 5)), np.ones((2, 6)), np.ones((2, 6)))
        with pytest.raises(ValueError, match=r"simple_rnn: h0 must have shape \(N, H\) = \(2, 3\)"):
            sn.ops.simple_rnn(np.ones((2, 3, 4)), np.ones((4, 3)), np.ones((3, 3)), np.ones(3), np.ones((3, 3)))


# --- the Numba backend's GRU loops (kernels/numba/gru.py) against the reference's ----------------------------

REF = ReferenceOps()


@pytest.fixture
def split_rows(numba_ops, monkeypatch):
    """Every batch split into one part per thread, however few its rows (each part runs its own time loop)."""
    from scratchnet.kernels.runtime import threads

    monkeypatch.setattr(threads, "MIN_PART_MACS", 1)
    monkeypatch.setattr(numba_ops, "min_rows", 1)
    return numba_ops


def _masks(kind, T, N, rng):
    """A (T, N) time-major mask: none, holes, whole rows masked (and one row never masked), or every step masked."""
    if kind == "none":
        return None
    if kind == "all_masked":
        return np.zeros((T, N), bool)
    mask = rng.random((T, N)) > 0.4
    if kind == "masked_rows":
        mask[:, ::2] = False
        mask[:, -1] = True
    return mask


def _gru_case(T, N, H, dtype, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((T, N, 3 * H)).astype(dtype)
    recurrent_kernel = (0.5 * rng.standard_normal((H, 3 * H))).astype(dtype)
    bias = rng.standard_normal((2, 3 * H)).astype(dtype)
    # Large pre-activations: the gates saturate, and the sigmoid and tanh must not overflow.
    bias[0, :2] = [-1e4, 1e4]
    bias[1, H : H + 1] = 800
    bias[0, 2 * H] = -800
    h0, dh = rng.standard_normal((N, H)).astype(dtype), rng.standard_normal((N, H)).astype(dtype)
    dys = rng.standard_normal((T, N, H)).astype(dtype)
    return rng, a, recurrent_kernel, bias, h0, dh, dys


GRU_SHAPES = {"odd": (5, 7, 6), "one_row": (4, 1, 5), "one_step": (1, 6, 4), "one_unit": (6, 5, 1),
              "all_ones": (1, 1, 1), "wide": (3, 23, 37)}


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("mask_kind", ["none", "holes", "masked_rows", "all_masked"])
@pytest.mark.parametrize("shape", list(GRU_SHAPES))
def test_numba_gru_recurrences_match_the_reference(split_rows, shape, mask_kind, dtype):
    numba_ops, ref = split_rows, REF
    T, N, H = GRU_SHAPES[shape]
    rng, a, recurrent_kernel, bias, h0, dh, dys = _gru_case(T, N, H, dtype, 40)
    mask_seq = _masks(mask_kind, T, N, rng)
    kept = [v.copy() for v in (recurrent_kernel, bias, h0, dh, dys)]
    got = numba_ops.gru_recurrence(a.copy(), recurrent_kernel, bias, h0, mask_seq)
    want = ref.gru_recurrence(a.copy(), recurrent_kernel, bias, h0, mask_seq)
    for g, w, name in zip(got, want, ("h_seq", "gates_seq", "uh_seq")):
        assert g.dtype == dtype and g.shape == w.shape and np.all(np.isfinite(g)), name
        assert_close(g, w, dtype, name)
    if mask_seq is not None:  # a masked row's state is its previous one, exactly
        for t in range(T):
            np.testing.assert_array_equal(got[0][t + 1][~mask_seq[t]], got[0][t][~mask_seq[t]])
    for dy_seq in (dys, None):
        got_b = numba_ops.gru_backward_recurrence(dy_seq, dh, recurrent_kernel, *want, mask_seq)
        want_b = ref.gru_backward_recurrence(dy_seq, dh, recurrent_kernel, *want, mask_seq)
        for g, w, name in zip(got_b, want_b, ("da_seq", "drecurrent_kernel", "dbias", "dh0")):
            assert g.dtype == dtype and g.shape == w.shape, name
            assert_close(g, w, dtype, name)
        if mask_seq is not None:
            assert not np.any(got_b[0][~mask_seq]), "a masked step has no da"
    if mask_kind == "all_masked":  # nothing reaches the weights; dh0 is dh plus every dy, h stays h0
        np.testing.assert_array_equal(got[0][T], h0)
        assert not np.any(got_b[1]) and not np.any(got_b[2])
    for v, before in zip((recurrent_kernel, bias, h0, dh, dys), kept):
        np.testing.assert_array_equal(v, before)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("mask_kind", ["none", "holes", "masked_rows", "all_masked"])
@pytest.mark.parametrize("shape", list(GRU_SHAPES) + ["two_k_blocks"])
def test_numba_simple_rnn_recurrences_match_the_reference(split_rows, shape, mask_kind, dtype):
    numba_ops = split_rows
    T, N, H = GRU_SHAPES.get(shape, (2, 3, 300))  # 300 units: the recurrent GEMM's K in two blocks
    rng = np.random.default_rng(43)
    a = rng.standard_normal((T, N, H)).astype(dtype)
    recurrent_kernel = (rng.standard_normal((H, H)) / np.sqrt(H)).astype(dtype)
    bias = rng.standard_normal(H).astype(dtype)
    bias[0], bias[-1] = -1e4, 800  # saturated units: tanh must not overflow
    h0, dh = rng.standard_normal((N, H)).astype(dtype), rng.standard_normal((N, H)).astype(dtype)
    dys = rng.standard_normal((T, N, H)).astype(dtype)
    mask_seq = _masks(mask_kind, T, N, rng)
    kept = [v.copy() for v in (a, recurrent_kernel, bias, h0, dh, dys)]
    got = numba_ops.simple_rnn_recurrence(a, recurrent_kernel, bias, h0, mask_seq)
    want = REF.simple_rnn_recurrence(a, recurrent_kernel, bias, h0, mask_seq)
    assert got.dtype == dtype and np.all(np.isfinite(got))
    assert_close(got, want, dtype, "h_seq")
    for dy_seq in (dys, None):
        got_b = numba_ops.simple_rnn_backward_recurrence(dy_seq, dh, recurrent_kernel, want, mask_seq)
        want_b = REF.simple_rnn_backward_recurrence(dy_seq, dh, recurrent_kernel, want, mask_seq)
        for g, w, name in zip(got_b, want_b, ("dp_seq", "drecurrent_kernel", "dbias", "dh0")):
            assert g.dtype == dtype and g.shape == w.shape, name
            assert_close(g, w, dtype, name)
        if mask_seq is not None:
            assert not np.any(got_b[0][~mask_seq]), "a masked step has no dp"
            if mask_kind == "all_masked":  # dh0 is dh plus every dy (from the last), exactly
                np.testing.assert_array_equal(got_b[3], reduce(np.add, dys[::-1], dh) if dy_seq is not None else dh)
    for v, before in zip((a, recurrent_kernel, bias, h0, dh, dys), kept):
        np.testing.assert_array_equal(v, before)


def test_numba_gru_kernels_run_without_the_reference(numba_ops, monkeypatch):
    # Contiguous inputs take the compiled loops: the reference's would raise here.
    def refuse(*args, **kwargs):
        raise AssertionError("the numba backend fell back to the reference's loop")

    for name in ("gru_recurrence", "gru_backward_recurrence", "simple_rnn_recurrence", "simple_rnn_backward_recurrence"):
        monkeypatch.setattr(ReferenceOps, name, refuse)
    T, N, H = 3, 4, 5
    rng, a, recurrent_kernel, bias, h0, dh, dys = _gru_case(T, N, H, np.float32, 41)
    mask_seq = _masks("holes", T, N, rng)
    outs = numba_ops.gru_recurrence(a, recurrent_kernel, bias, h0, mask_seq)
    numba_ops.gru_backward_recurrence(dys, dh, recurrent_kernel, *outs, mask_seq)
    h_seq = numba_ops.simple_rnn_recurrence(a[..., :H].copy(), recurrent_kernel[:, :H], bias[0, :H], h0, mask_seq)
    numba_ops.simple_rnn_backward_recurrence(dys, dh, recurrent_kernel[:, :H], h_seq, mask_seq)


def _strided(a, order):
    """``a``'s values in another memory layout: a transposed copy viewed back, or every other element of a wider
    buffer whose gaps hold NaN (a kernel that reads past its view poisons its output)."""
    if order == "F":
        return np.asfortranarray(a)
    wide = np.full(a.shape[:-1] + (2 * a.shape[-1],), np.nan, a.dtype)
    wide[..., ::2] = a
    return wide[..., ::2]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("layout", ["F", "strided"])
@pytest.mark.parametrize("mask_kind", ["none", "masked_rows"])
@pytest.mark.parametrize("op", ["gru", "simple_rnn"])
def test_numba_recurrent_ops_match_the_reference_on_any_layout(split_rows, op, layout, mask_kind, dtype):
    # The whole op (input GEMMs, layout swaps, the loops) on the numba backend against the numpy one.
    rng = np.random.default_rng(42)
    N, T, D, H = 6, 5, 4, 7
    G = 3 * H if op == "gru" else H
    arrays = dict(x=rng.standard_normal((N, T, D)), kernel=rng.standard_normal((D, G)),
                  recurrent_kernel=0.5 * rng.standard_normal((H, G)),
                  bias=rng.standard_normal((2, G) if op == "gru" else (G,)),
                  h0=rng.standard_normal((N, H)), dys=rng.standard_normal((N, T, H)), dh=rng.standard_normal((N, H)))
    arrays = {k: v.astype(dtype) for k, v in arrays.items()}
    mask = _masks(mask_kind, T, N, rng)
    mask = None if mask is None else np.asfortranarray(mask.T)  # (N, T), not C-contiguous
    laid = {k: _strided(v, layout) for k, v in arrays.items()}
    results = {}
    for name, inputs in (("numba", laid), ("numpy", arrays)):
        with sn.use_backend(name):
            (ys, h), backprop = getattr(sn.ops, op)(inputs["x"], inputs["kernel"], inputs["recurrent_kernel"],
                                                    inputs["bias"], inputs["h0"], mask=mask)
            results[name] = (ys, h, *backprop(inputs["dys"], inputs["dh"]))
    names = ("ys", "h", "dx", "dkernel", "drecurrent_kernel", "dbias", "dh0")
    for g, w, name in zip(results["numba"], results["numpy"], names):
        assert g.dtype == dtype and np.all(np.isfinite(g)), name
        assert_close(g, w, dtype, name)
    for k in arrays:  # the inputs come back unchanged
        np.testing.assert_array_equal(laid[k], arrays[k], err_msg=k)
