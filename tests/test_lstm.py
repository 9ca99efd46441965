"""lstm: outputs and every gradient against tf.keras.layers.LSTM, finite differences, Numba parity."""
from __future__ import annotations

import functools

import numpy as np
import pytest

import scratchnet as sn
from helpers import assert_close, load_tensorflow, to_backend
from scratchnet.gradcheck import check_op

DTYPES = [np.float32, np.float64]

# (N, T, D, H): a general case, a single step, a single sequence.
CASES = {
    "general": (3, 4, 5, 6),
    "one_step": (2, 1, 3, 4),
    "batch_of_one": (1, 5, 2, 3),
}


def make_inputs(case, dtype, seed=0):
    N, T, D, H = CASES[case]
    rng = np.random.default_rng(seed)
    # Weights of scale ~0.5 keep the gates away from saturation, where every
    # gradient would be ~0 and the comparison would prove nothing.
    arrays = dict(
        x=rng.standard_normal((N, T, D)),
        kernel=0.5 * rng.standard_normal((D, 4 * H)),
        recurrent_kernel=0.5 * rng.standard_normal((H, 4 * H)),
        bias=0.5 * rng.standard_normal(4 * H),
        h0=0.5 * rng.standard_normal((N, H)),
        c0=0.5 * rng.standard_normal((N, H)),
        dys=rng.standard_normal((N, T, H)),
        dh=rng.standard_normal((N, H)),
        dc=rng.standard_normal((N, H)),
    )
    return {k: v.astype(dtype) for k, v in arrays.items()}


@functools.lru_cache(maxsize=None)
def keras_reference(case, dtype_name):
    """Outputs and gradients of ``sum(ys*dys) + sum(h*dh) + sum(c*dc)`` from Keras's LSTM."""
    tf_ = load_tensorflow()
    a = make_inputs(case, np.dtype(dtype_name))
    N, T, D, H = CASES[case]
    layer = tf_.keras.layers.LSTM(H, return_sequences=True, return_state=True, dtype=dtype_name)
    layer.build((N, T, D))
    layer.set_weights([a["kernel"], a["recurrent_kernel"], a["bias"]])
    x, h0, c0 = (tf_.constant(a[k]) for k in ("x", "h0", "c0"))
    with tf_.GradientTape() as tape:
        tape.watch([x, h0, c0])
        ys, h, c = layer(x, initial_state=[h0, c0])
        loss = tf_.reduce_sum(ys * a["dys"]) + tf_.reduce_sum(h * a["dh"]) + tf_.reduce_sum(c * a["dc"])
    weights = layer.trainable_weights  # kernel, recurrent_kernel, bias
    grads = tape.gradient(loss, [x, *weights, h0, c0])
    outs = [t.numpy() for t in (ys, h, c)]
    return outs, [tf_.convert_to_tensor(g).numpy() for g in grads]


GRAD_NAMES = ("dx", "dkernel", "drecurrent_kernel", "dbias", "dh0", "dc0")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("case", list(CASES))
def test_lstm_matches_keras_outputs_and_every_gradient(backend, case, dtype):
    a = make_inputs(case, dtype)
    (ys, h, c), bp = sn.ops.lstm(
        *to_backend(backend, a["x"], a["kernel"], a["recurrent_kernel"], a["bias"]),
        h0=to_backend(backend, a["h0"]),
        c0=to_backend(backend, a["c0"]),
    )
    grads = bp(*to_backend(backend, a["dys"], a["dh"], a["dc"]))
    (e_ys, e_h, e_c), e_grads = keras_reference(case, np.dtype(dtype).name)
    for name, got, want in zip(("ys", "h", "c"), (ys, h, c), (e_ys, e_h, e_c)):
        assert got.dtype == dtype
        assert_close(sn.to_numpy(got), want, dtype, name)
    for name, got, want in zip(GRAD_NAMES, grads, e_grads):
        assert got.dtype == dtype, name
        assert_close(sn.to_numpy(got), want, dtype, name)


def test_lstm_without_initial_state_starts_from_zeros(backend):
    a = make_inputs("general", np.float64)
    N, T, D, H = CASES["general"]
    args = to_backend(backend, a["x"], a["kernel"], a["recurrent_kernel"], a["bias"])
    zeros = to_backend(backend, np.zeros((N, H)))
    (ys, h, c), bp = sn.ops.lstm(*args)
    (e_ys, e_h, e_c), e_bp = sn.ops.lstm(*args, h0=zeros, c0=zeros)
    for got, want in zip((ys, h, c), (e_ys, e_h, e_c)):
        assert_close(sn.to_numpy(got), sn.to_numpy(want), np.float64)
    dys = to_backend(backend, a["dys"])
    for got, want in zip(bp(dys), e_bp(dys)):
        assert_close(sn.to_numpy(got), sn.to_numpy(want), np.float64)


def test_lstm_last_output_is_the_final_hidden_state(backend):
    a = make_inputs("general", np.float32)
    (ys, h, c), _ = sn.ops.lstm(*to_backend(backend, a["x"], a["kernel"], a["recurrent_kernel"], a["bias"]))
    np.testing.assert_array_equal(sn.to_numpy(ys[:, -1]), sn.to_numpy(h))


def test_lstm_backprop_with_only_final_state_gradients_matches_zero_dys(backend):
    a = make_inputs("general", np.float64)
    _, bp = sn.ops.lstm(*to_backend(backend, a["x"], a["kernel"], a["recurrent_kernel"], a["bias"]))
    dh, dc = to_backend(backend, a["dh"], a["dc"])
    got = bp(None, dh, dc)
    want = bp(to_backend(backend, np.zeros_like(a["dys"])), dh, dc)
    for name, g, w in zip(GRAD_NAMES, got, want):
        assert_close(sn.to_numpy(g), sn.to_numpy(w), np.float64, name)
    # dh alone: dc defaults to zeros.
    got = bp(None, dh)
    want = bp(None, dh, to_backend(backend, np.zeros_like(a["dc"])))
    for name, g, w in zip(GRAD_NAMES, got, want):
        assert_close(sn.to_numpy(g), sn.to_numpy(w), np.float64, name)


@pytest.mark.parametrize("case", list(CASES))
def test_lstm_gradients_match_finite_differences(case):
    a = make_inputs(case, np.float64, seed=1)
    names = ("x", "kernel", "recurrent_kernel", "bias", "h0", "c0")
    with sn.use_backend("numpy"):
        report = check_op(sn.ops.lstm, *[a[k] for k in names], dy=(a["dys"], a["dh"], a["dc"]))
        assert [c.name for c in report] == list(names)


# The Numba sequence kernels against the reference (large pre-activations, one part or split between
# the threads, every need_dx): tests/test_fast_kernels_match_reference.py::test_numba_lstm_matches_the_reference.


def test_lstm_backprop_does_not_mutate_its_gradients(backend):
    a = make_inputs("general", np.float32)
    _, bp = sn.ops.lstm(*to_backend(backend, a["x"], a["kernel"], a["recurrent_kernel"], a["bias"]))
    dys, dh, dc = to_backend(backend, a["dys"], a["dh"], a["dc"])
    before = [sn.to_numpy(g) for g in (dys, dh, dc)]
    bp(dys, dh, dc)
    for b, g in zip(before, (dys, dh, dc)):
        np.testing.assert_array_equal(sn.to_numpy(g), b)


def _bad(a, **changes):
    args = dict(x=a["x"], kernel=a["kernel"], recurrent_kernel=a["recurrent_kernel"], bias=a["bias"])
    args.update(changes)
    return args


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: _bad(a, x=a["x"][0]), r"lstm: x must have rank 3"),
        (lambda a: _bad(a, kernel=a["kernel"][:-1]), r"lstm: kernel must have shape \(D, 4H\)"),
        (lambda a: _bad(a, recurrent_kernel=a["recurrent_kernel"][:, :-1]), r"lstm: recurrent_kernel must have shape"),
        (lambda a: _bad(a, bias=a["bias"][:-1]), r"lstm: bias must have shape \(24,\)"),
        (lambda a: _bad(a, h0=a["h0"][:, :-1]), r"lstm: h0 must have shape \(N, H\) = \(3, 6\)"),
        (lambda a: _bad(a, c0=a["c0"][:-1]), r"lstm: c0 must have shape"),
        (lambda a: _bad(a, kernel=a["kernel"].astype(np.float64)), r"lstm: kernel is float64 but x is float32"),
        (lambda a: _bad(a, x=a["x"].astype(np.int64)), r"lstm: x must be float32 or float64"),
        (lambda a: _bad(a, x=a["x"][:, :0]), r"lstm: x must have at least one time step"),
    ],
)
def test_lstm_rejects_bad_input_naming_the_op(backend, change, message):
    a = make_inputs("general", np.float32)
    args = {k: to_backend(backend, v) for k, v in change(a).items()}
    with pytest.raises(ValueError, match=message):
        sn.ops.lstm(**args)


def test_lstm_backprop_rejects_gradients_of_the_wrong_shape(backend):
    a = make_inputs("general", np.float32)
    _, bp = sn.ops.lstm(*to_backend(backend, a["x"], a["kernel"], a["recurrent_kernel"], a["bias"]))
    with pytest.raises(ValueError, match=r"lstm: dys must have the output's shape \(3, 4, 6\)"):
        bp(to_backend(backend, a["dys"][:, :-1]))
    with pytest.raises(ValueError, match=r"lstm: dh must have the output's shape \(3, 6\)"):
        bp(None, to_backend(backend, a["dh"][:-1]))


@pytest.mark.parametrize("return_sequences", [False, True])
def test_lstm_go_backwards_without_a_mask_matches_keras(backend, return_sequences):
    """Keras's go_backwards: the sequence read from its end, the outputs in that order; dx back in time order."""
    tf = load_tensorflow()
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 5, 4))
    keras_layer = tf.keras.layers.LSTM(6, go_backwards=True, return_sequences=return_sequences, dtype="float64")
    keras_layer(tf.constant(x))
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y_k = keras_layer(xt)
    dy = rng.standard_normal(tuple(y_k.shape))
    dx_k = tape.gradient(y_k, xt, output_gradients=tf.constant(dy))
    ours = sn.layers.LSTM(6, go_backwards=True, return_sequences=return_sequences, dtype="float64")
    ours(to_backend(backend, x))
    ours.set_weights(keras_layer.get_weights())
    y, backprop = ours.forward(to_backend(backend, x))
    np.testing.assert_allclose(sn.to_numpy(y), y_k.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sn.to_numpy(backprop(to_backend(backend, dy))), dx_k.numpy(), rtol=1e-10, atol=1e-12)
