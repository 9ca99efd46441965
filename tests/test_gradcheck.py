"""scratchnet.gradcheck: the built-in ops and layers pass, planted bugs are caught and named, kinks are reported."""
from __future__ import annotations

import functools
import subprocess
import sys

import numpy as np
import pytest

import scratchnet as sn
import scratchnet.gradcheck as gc

L = sn.layers
GradcheckError = gc.GradcheckError


@pytest.fixture(autouse=True)
def _reference_backend():
    """The NumPy backend unless a test asks for the ``backend`` fixture (entered after this one)."""
    with sn.use_backend("numpy"):
        yield


def normal(seed, *shape, scale=1.0):
    return scale * np.random.default_rng(seed).standard_normal(shape)


def tie_free(seed, shape):
    """Distinct values 1/size apart, shuffled: no max-pool window has a tie, even after a step of eps."""
    values = np.arange(np.prod(shape), dtype=np.float64) / np.prod(shape)
    return np.random.default_rng(seed).permutation(values).reshape(shape)


# -- user-written NumPy ops in the (y, backprop) form, each with a bug switch -----------------------------
def np_dense(x, w, b, bug=None):
    """``y = x @ w + b``; the bugs are planted in backprop."""
    y = x @ w + b

    def backprop(dy):
        dx, dw, db = dy @ w.T, x.T @ dy, dy.sum(axis=0)
        if bug == "sign":
            dx = -dx
        elif bug == "swap":  # square x and w: same shapes, swapped roles
            dx, dw = dw, dx
        elif bug == "transpose":
            dw = dw.T
        elif bug == "mean_bias":
            db = dy.mean(axis=0)
        elif bug == "double":
            dw = 2 * dw
        elif bug == "one_element":
            dw = dw.copy()
            dw[1, 2] += 0.5
        return dx, dw, db

    return y, backprop


def np_sigmoid(x, bug=None):
    y = 1 / (1 + np.exp(-x))

    def backprop(dy):
        return dy if bug == "chain" else dy * y * (1 - y)

    return y, backprop


def np_tanh(x, bug=None):
    y = np.tanh(x)

    def backprop(dy):
        return dy if bug == "chain" else dy * (1 - y * y)

    return y, backprop


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def np_lstm(x, kernel, recurrent_kernel, bias, h0, c0, bug=None):
    """A plain NumPy LSTM (Keras gate order i, f, c, o) over x (N, T, D).

    Returns ``(ys, h, c), backprop`` as ``sn.ops.lstm`` does. ``bug="dh"``: the
    backward ignores the gradient reaching ``h_t`` from step t+1; ``bug="dc"``:
    it drops the gradient reaching ``c_t`` from step t+1.
    """
    N, T, _ = x.shape
    H = h0.shape[1]
    hs, cs, gates = [h0], [c0], []
    for t in range(T):
        z = x[:, t] @ kernel + hs[-1] @ recurrent_kernel + bias
        i, f, g, o = _sigmoid(z[:, :H]), _sigmoid(z[:, H:2 * H]), np.tanh(z[:, 2 * H:3 * H]), _sigmoid(z[:, 3 * H:])
        cs.append(f * cs[-1] + i * g)
        hs.append(o * np.tanh(cs[-1]))
        gates.append((i, f, g, o))
    ys = np.stack(hs[1:], axis=1)

    def backprop(dys, dh=None, dc=None):
        dx = np.zeros_like(x)
        dkernel, drecurrent, dbias = np.zeros_like(kernel), np.zeros_like(recurrent_kernel), np.zeros_like(bias)
        dh_next = np.zeros((N, H)) if dh is None else dh
        dc_next = np.zeros((N, H)) if dc is None else dc
        for t in reversed(range(T)):
            i, f, g, o = gates[t]
            from_output = 0 if dys is None else dys[:, t]
            from_next_step = t < T - 1
            dh_t = from_output + (0 if bug == "dh" and from_next_step else dh_next)
            tanh_c = np.tanh(cs[t + 1])
            dc_t = (0 if bug == "dc" and from_next_step else dc_next) + dh_t * o * (1 - tanh_c ** 2)
            dz = np.concatenate([dc_t * g * i * (1 - i), dc_t * cs[t] * f * (1 - f), dc_t * i * (1 - g * g),
                                 dh_t * tanh_c * o * (1 - o)], axis=1)
            dx[:, t] = dz @ kernel.T
            dkernel += x[:, t].T @ dz
            drecurrent += hs[t].T @ dz
            dbias += dz.sum(axis=0)
            dh_next, dc_next = dz @ recurrent_kernel.T, dc_t * f
        return dx, dkernel, drecurrent, dbias, dh_next, dc_next

    return (ys, hs[-1], cs[-1]), backprop


def np_max_pool(x, route="first"):
    """2x2 stride-2 VALID max-pool of x (N, H, W, C); backprop routes a tie to the ``first``/``last`` maximum,
    or ``split``s it evenly."""
    N, H, W, C = x.shape
    windows = x.reshape(N, H // 2, 2, W // 2, 2, C).transpose(0, 1, 3, 5, 2, 4).reshape(N, H // 2, W // 2, C, 4)
    y = windows.max(axis=-1)
    if route == "first":
        mask = np.arange(4) == np.argmax(windows, axis=-1)[..., None]
    elif route == "last":
        mask = np.arange(4) == (3 - np.argmax(windows[..., ::-1], axis=-1))[..., None]
    else:
        mask = windows == y[..., None]
        mask = mask / mask.sum(axis=-1, keepdims=True)

    def backprop(dy):
        dwindows = mask * dy[..., None]
        return dwindows.reshape(N, H // 2, W // 2, C, 2, 2).transpose(0, 1, 4, 2, 5, 3).reshape(x.shape)

    return y, backprop


def lstm_inputs(N=2, T=3, D=3, H=4, seed=0):
    rng = np.random.default_rng(seed)
    # Weights of scale ~0.5 keep the gates away from saturation.
    return dict(x=rng.standard_normal((N, T, D)), kernel=0.5 * rng.standard_normal((D, 4 * H)),
                recurrent_kernel=0.5 * rng.standard_normal((H, 4 * H)), bias=0.5 * rng.standard_normal(4 * H),
                h0=0.5 * rng.standard_normal((N, H)), c0=0.5 * rng.standard_normal((N, H)))


def dense_inputs(n=4, seed=0):
    return normal(seed, n, n), normal(seed + 1, n, n), normal(seed + 2, n)


# -- the built-in ops pass -----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["directional", "full"])
def test_dense_and_conv2d_pass_in_both_modes(mode):
    report = gc.check_op(sn.ops.dense, normal(0, 5, 4), normal(1, 4, 3), normal(2, 3), mode=mode)
    assert [c.name for c in report] == ["x", "w", "b"] and report.passed
    assert all(c.mode == mode and c.max_rel_error < 1e-7 for c in report)
    conv = functools.partial(sn.ops.conv2d, strides=(2, 1), padding="SAME")
    report = gc.check_op(conv, normal(3, 2, 5, 4, 2), normal(4, 3, 2, 2, 3), normal(5, 3), mode=mode)
    assert [c.name for c in report] == ["x", "w", "b"] and report.n_nondiff == 0


def test_an_absent_bias_has_no_gradient_to_check():
    report = gc.check_op(sn.ops.dense, normal(0, 5, 4), normal(1, 4, 3), None)
    assert [c.name for c in report] == ["x", "w"]


def test_max_pool2d_passes_on_tie_free_input():
    x = tie_free(0, (2, 6, 5, 2))
    report = gc.check_op(lambda x: sn.ops.max_pool2d(x, 3, 2, "SAME"), x, mode="full")
    assert report.passed and report["x"].n_nondiff == 0


def test_lstm_passes_with_its_three_outputs():
    a = lstm_inputs()
    report = gc.check_op(sn.ops.lstm, *a.values())
    assert [c.name for c in report] == list(a)
    assert report.outputs == ["y[0]", "y[1]", "y[2]"]


def test_lstm_passes_with_outputs_left_out_of_dy():
    a = lstm_inputs(seed=1)
    dys = normal(2, 2, 3, 4)
    report = gc.check_op(sn.ops.lstm, *a.values(), dy=(dys, None, None))
    assert report.outputs == ["y[0]"] and report.passed
    report = gc.check_op(sn.ops.lstm, *a.values(), dy=(None, normal(3, 2, 4), None))
    assert report.outputs == ["y[1]"] and report.passed


def test_lstm_gradients_of_defaulted_initial_states_are_not_checked():
    a = lstm_inputs(seed=2)
    report = gc.check_op(sn.ops.lstm, a["x"], a["kernel"], a["recurrent_kernel"], a["bias"])
    assert [c.name for c in report] == ["x", "kernel", "recurrent_kernel", "bias"]


def test_embedding_integer_ids_are_never_perturbed():
    ids = np.array([[0, 2, 2], [5, 1, 2]])
    report = gc.check_op(sn.ops.embedding, ids, normal(0, 6, 4), mode="full")
    assert [c.name for c in report] == ["table"]


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "softmax", "relu"])
def test_activations_pass_away_from_kinks(name):
    x = normal(0, 3, 5)
    x = np.where(np.abs(x) < 0.1, 0.5, x)
    report = gc.check_op(getattr(sn.ops, name), x, mode="full")
    assert report.passed and report.n_nondiff == 0


def test_softmax_along_another_axis_passes():
    assert gc.check_op(lambda z: sn.ops.softmax(z, axis=0), normal(0, 4, 3)).passed


@pytest.mark.parametrize("mode", ["directional", "full"])
def test_relu_at_zero_reports_non_differentiable_points_instead_of_failing(mode):
    x = normal(0, 3, 5)
    x[0, :3] = 0.0
    x[2, 4] = -0.0
    report = gc.check_op(sn.ops.relu, x, mode=mode)
    assert report.passed
    assert report["x"].n_nondiff == 4
    assert report["x"].nondiff_indices == [(0, 0), (0, 1), (0, 2), (2, 4)]
    assert "non-differentiable at (0, 0), (0, 1), (0, 2), (2, 4)" in str(report)


def test_a_large_input_at_kinks_is_bisected_until_the_kinks_are_isolated():
    x = normal(0, 8, 8)
    x[[1, 4, 6], [2, 7, 0]] = 0.0
    report = gc.check_op(sn.ops.relu, x, max_full=16)
    assert report.passed and "bisect" in report["x"].mode
    assert sorted(report["x"].nondiff_indices) == [(1, 2), (4, 7), (6, 0)]


@pytest.mark.parametrize("kind", ["ids", "distribution"])
def test_softmax_cross_entropy_passes(kind):
    logits = normal(0, 3, 2, 5)
    if kind == "ids":
        labels = np.random.default_rng(1).integers(0, 5, (3, 2))
    else:
        labels = np.random.default_rng(1).dirichlet(np.ones(5), (3, 2))
    report = gc.check_op(lambda logits: sn.ops.softmax_cross_entropy(logits, labels), logits, dy=1.0, mode="full")
    assert report.passed
    # With integer labels as an input, its one gradient belongs to the one float input.
    if kind == "ids":
        assert [c.name for c in gc.check_op(sn.ops.softmax_cross_entropy, logits, labels)] == ["logits"]


def test_dropout_with_a_fixed_seed_and_without_one_passes():
    x = normal(0, 6, 5)
    assert gc.check_op(lambda x: sn.ops.dropout(x, 0.4, seed=3), x).passed
    # Unseeded, it draws from scratchnet.random, whose state every evaluation starts from.
    sn.random.seed(0)
    state = sn.random.get_state()
    assert gc.check_op(lambda x: sn.ops.dropout(x, 0.4), x).passed
    assert sn.random.get_state() == state


def test_built_in_ops_pass_on_every_backend(backend):
    assert gc.check_op(sn.ops.dense, normal(0, 5, 4), normal(1, 4, 3), normal(2, 3)).passed
    assert gc.check_op(lambda x: sn.ops.max_pool2d(x, 2, 2), tie_free(3, (1, 4, 4, 2))).passed
    assert gc.check_op(sn.ops.lstm, *lstm_inputs().values()).passed


def test_user_numpy_ops_pass():
    assert gc.check_op(np_dense, *dense_inputs(), mode="full").passed
    assert gc.check_op(np_sigmoid, normal(0, 3, 4)).passed
    assert gc.check_op(np_tanh, normal(0, 3, 4)).passed
    assert gc.check_op(np_lstm, *lstm_inputs().values()).passed
    assert gc.check_op(np_max_pool, tie_free(0, (2, 4, 4, 3)), mode="full").passed


def test_the_numpy_references_agree_with_the_built_in_ops():
    gc.check_against(np_lstm, sn.ops.lstm, *lstm_inputs().values())
    gc.check_against(np_max_pool, lambda x: sn.ops.max_pool2d(x, 2, 2), tie_free(1, (2, 4, 6, 2)))


# -- planted bugs are caught, and the error names the culprit ----------------------------------------------
@pytest.mark.parametrize("bug, culprits", [
    ("sign", ["x"]),
    ("swap", ["x", "w"]),
    ("transpose", ["w"]),
    ("mean_bias", ["b"]),
    ("double", ["w"]),
])
@pytest.mark.parametrize("mode", ["directional", "full"])
def test_a_dense_backward_bug_names_the_wrong_gradient(bug, culprits, mode):
    with pytest.raises(GradcheckError) as e:
        gc.check_op(functools.partial(np_dense, bug=bug), *dense_inputs(), mode=mode)
    assert e.value.names == culprits
    message = str(e.value)
    for name in "xwb":
        assert (f"input '{name}'" in message) == (name in culprits)
    assert "analytic" in message and "numeric" in message and "rel error" in message
    assert "outputs used: y" in message


def test_the_gradcheck_error_is_an_assertion_error():
    assert issubclass(GradcheckError, AssertionError)


@pytest.mark.parametrize("mode", ["directional", "full"])
def test_a_single_wrong_element_is_located(mode):
    with pytest.raises(GradcheckError) as e:
        gc.check_op(functools.partial(np_dense, bug="one_element"), *dense_inputs(), mode=mode)
    assert e.value.names == ["w"]
    assert "worst element w[1, 2]" in str(e.value) and "1 of 16 comparisons beyond tolerance" in str(e.value)


def test_a_failing_large_input_is_reported_along_its_direction():
    with pytest.raises(GradcheckError, match="along a random direction") as e:
        gc.check_op(functools.partial(np_dense, bug="double"), *dense_inputs(), max_full=8)
    assert e.value.names == ["w"]


@pytest.mark.parametrize("op", [np_sigmoid, np_tanh])
def test_a_missing_chain_rule_factor_is_caught(op):
    with pytest.raises(GradcheckError, match="input 'x'") as e:
        gc.check_op(functools.partial(op, bug="chain"), normal(0, 3, 4))
    assert e.value.names == ["x"]


def test_an_lstm_backward_that_ignores_dh_from_the_next_step_is_caught():
    a = lstm_inputs()
    assert gc.check_op(np_lstm, *a.values()).passed
    with pytest.raises(GradcheckError) as e:
        gc.check_op(functools.partial(np_lstm, bug="dh"), *a.values())
    # Every gradient flows through the missing term except those of the last step alone.
    assert {"x", "kernel", "recurrent_kernel", "bias", "h0", "c0"} == set(e.value.names)
    # Only the last step's outputs: the bug still shows, through dh0 of the earlier steps.
    with pytest.raises(GradcheckError) as e:
        gc.check_op(functools.partial(np_lstm, bug="dh"), *a.values(), dy=(normal(1, 2, 3, 4), None, None))
    assert {"x", "recurrent_kernel", "h0"} <= set(e.value.names)


def test_an_lstm_backward_that_drops_dc_is_caught():
    a = lstm_inputs()
    with pytest.raises(GradcheckError) as e:
        gc.check_op(functools.partial(np_lstm, bug="dc"), *a.values())
    assert {"x", "c0"} <= set(e.value.names)
    assert "input 'c0'" in str(e.value) and "outputs used: y[0], y[1], y[2]" in str(e.value)


def tied(seed):
    """A ReLU-like input: many exact zeros, so most 2x2 windows are ties (four-way at 0, and two-way)."""
    x = np.maximum(tie_free(seed, (1, 4, 4, 2)) - 0.5, 0.0)
    x[0, 0, 0, 0] = x[0, 1, 1, 0] = 0.9  # a two-way tie at a positive value
    return x


def test_a_max_pool_routed_to_the_last_maximum_is_invisible_away_from_ties():
    x = tie_free(2, (1, 4, 4, 2))
    assert gc.check_op(functools.partial(np_max_pool, route="last"), x, mode="full").passed
    gc.check_against(functools.partial(np_max_pool, route="last"), lambda x: sn.ops.max_pool2d(x, 2, 2), x)


def test_a_max_pool_routed_to_the_last_maximum_is_caught_at_ties():
    x = tied(0)
    last = functools.partial(np_max_pool, route="last")
    # Finite differences see that the tied elements have no derivative: the report
    # lists them, since either side of a tie is a one-sided derivative ...
    report = gc.check_op(last, x, mode="full")
    assert report.passed and (0, 0, 0, 0) in report["x"].nondiff_indices and (0, 1, 1, 0) in report["x"].nondiff_indices
    assert gc.check_op(np_max_pool, x).passed
    # ... and the comparison with the reference pins down TensorFlow's rule, the first maximum.
    with pytest.raises(GradcheckError) as e:
        gc.check_against(last, lambda x: sn.ops.max_pool2d(x, 2, 2), x)
    assert e.value.names == ["x"]
    assert "gradient 'x' (float64) differs at x[0, 1, 1, 0]: got" in str(e.value)
    gc.check_against(np_max_pool, lambda x: sn.ops.max_pool2d(x, 2, 2), x)


def test_a_backend_that_routes_ties_differently_is_caught_by_check_backends():
    def pool(x):  # the Numba path of this op routes ties to the last maximum
        return np_max_pool(x, route="last" if sn.get_backend().name == "numba" else "first")

    gc.check_backends(pool, tie_free(0, (1, 4, 4, 2)))
    with pytest.raises(GradcheckError, match=r"numba: gradient 'x' \(float64\) differs at x\[0, ") as e:
        gc.check_backends(pool, tied(0))
    assert e.value.names == ["x"]


def test_a_max_pool_that_splits_ties_fails_at_the_ties():
    with pytest.raises(GradcheckError, match="non-differentiable point") as e:
        gc.check_op(functools.partial(np_max_pool, route="split"), tied(1))
    assert e.value.names == ["x"]


# -- malformed gradients -------------------------------------------------------------------------------
def op_returning(grads):
    def fn(x, w):
        return x * w, lambda dy: grads(dy, x, w)

    return fn


@pytest.mark.parametrize("grads, match", [
    (lambda dy, x, w: (dy * w, (dy * x)[:1]), r"'w' has shape \(1, 3\), but the input has shape \(2, 3\)"),
    (lambda dy, x, w: (dy * w, (dy * x).astype(np.float32)), "'w' is float32, but the input is float64"),
    (lambda dy, x, w: (dy * w, None), r"no gradient \(None\) for float input 'w'"),
    (lambda dy, x, w: (dy * w, (dy * x).tolist()), "'w' is list"),
])
def test_a_malformed_gradient_names_its_input(grads, match):
    with pytest.raises(GradcheckError, match=match) as e:
        gc.check_op(op_returning(grads), normal(0, 2, 3), normal(1, 2, 3))
    assert e.value.names == ["w"]


def test_a_wrong_number_of_gradients_is_an_error():
    with pytest.raises(GradcheckError, match="backprop returned 3 gradients for 2 inputs"):
        gc.check_op(op_returning(lambda dy, x, w: (dy, dy, dy)), normal(0, 2, 3), normal(1, 2, 3))
    with pytest.raises(GradcheckError, match="one gradient for 2 float inputs"):
        gc.check_op(op_returning(lambda dy, x, w: dy * w), normal(0, 2, 3), normal(1, 2, 3))


def test_inputs_are_named_by_position_past_the_signature():
    def fn(x, *rest):
        y = x * rest[0] * rest[1]
        return y, lambda dy: (dy * rest[0] * rest[1], dy * x * rest[1], 2 * dy * x * rest[0])

    with pytest.raises(GradcheckError, match=r"input 'inputs\[2\]'") as e:
        gc.check_op(fn, normal(0, 3), normal(1, 3), normal(2, 3))
    assert e.value.names == ["inputs[2]"]


def test_a_float32_input_is_upcast_with_a_warning():
    with pytest.warns(gc.GradcheckWarning, match=r"upcasting x \(float32\)"):
        report = gc.check_op(sn.ops.tanh, normal(0, 3, 4).astype(np.float32))
    assert report.passed


def test_a_function_with_float32_constants_is_told_so():
    w32 = normal(1, 4, 3).astype(np.float32)
    with pytest.warns(gc.GradcheckWarning), pytest.raises(GradcheckError, match="float32 constants"):
        gc.check_op(lambda x: sn.ops.dense(x, w32), normal(0, 2, 4).astype(np.float32))
    with pytest.raises(GradcheckError, match="output y is float32"):
        gc.check_op(lambda x: np_tanh(x.astype(np.float32)), normal(0, 2, 4))


def test_a_non_deterministic_function_is_reported():
    def noisy(x):
        y = x * np.random.default_rng().random(x.shape)
        return y, lambda dy: dy

    with pytest.raises(GradcheckError, match="not deterministic"):
        gc.check_op(noisy, normal(0, 3))


def test_dy_must_match_the_outputs():
    with pytest.raises(ValueError, match=r"dy for output y must have its shape \(2, 3\)"):
        gc.check_op(sn.ops.tanh, normal(0, 2, 3), dy=np.ones((3, 2)))
    with pytest.raises(ValueError, match="dy must be a tuple of 3"):
        gc.check_op(sn.ops.lstm, *lstm_inputs().values(), dy=np.ones(3))


def test_the_report_reads_as_a_table():
    report = gc.check_op(sn.ops.dense, normal(0, 5, 4), normal(1, 4, 3), normal(2, 3))
    text = str(report)
    assert text.startswith("check_op(dense): passed") and repr(report) == text
    assert "max rel err" in text and "(3,)" in text
    assert report["w"].shape == (4, 3) and report["w"].n_checks == 1
    with pytest.raises(KeyError, match="'x', 'w', 'b'"):
        report["kernel"]


# -- layers ----------------------------------------------------------------------------------------
def corrupt(layer, name, how):
    """Wrap ``layer.forward`` so that its backprop corrupts the accumulated gradient of parameter ``name``."""
    forward = layer.forward

    def wrapped(x, training=False, **kwargs):
        y, backprop = forward(x, training, **kwargs)

        def corrupted(dy):
            dx = backprop(dy)
            for p in layer.parameters():
                if p.name == name:
                    p.grad = how(p.grad)
            return dx

        return y, corrupted

    layer.forward = wrapped
    return layer


def layer_cases():
    return {
        "dense": (lambda: L.Dense(3, activation="tanh", name="dense", dtype="float64"), normal(0, 4, 5)),
        "conv": (lambda: L.Conv2D(2, 2, padding="same", activation="sigmoid", name="conv", dtype="float64"),
                 normal(1, 2, 4, 3, 2)),
        "lstm": (lambda: L.LSTM(3, return_sequences=True, name="lstm", dtype="float64"), normal(2, 2, 3, 2)),
    }


@pytest.mark.parametrize("case", ["dense", "conv", "lstm"])
def test_layers_pass_for_their_input_and_every_parameter(case):
    make, x = layer_cases()[case]
    layer = make()
    report = gc.check_layer(layer, x)
    names = [p.name for p in layer.parameters()]
    assert [c.name for c in report] == ["x", *names] and all(n.startswith(case + "/") for n in names)
    assert [c.kind for c in report] == ["input"] + ["parameter"] * len(names)


def test_check_layer_restores_values_and_gradients_exactly():
    make, x = layer_cases()["dense"]
    layer = make()
    layer.forward(x)
    values = [sn.to_numpy(p.value) for p in layer.parameters()]
    grads = [p.grad for p in layer.parameters()]
    gc.check_layer(layer, x, mode="full")
    for p, v, g in zip(layer.parameters(), values, grads):
        np.testing.assert_array_equal(sn.to_numpy(p.value), v)
        assert p.grad is g


@pytest.mark.parametrize("case, param, how", [
    ("dense", "dense/bias", lambda g: 2 * g),
    ("dense", "dense/kernel", lambda g: -g),
    ("conv", "conv/kernel", lambda g: g + 0.1),
    ("lstm", "lstm/recurrent_kernel", lambda g: np.zeros_like(g)),
    ("lstm", "lstm/bias", lambda g: g[::-1].copy()),
])
def test_a_corrupted_parameter_gradient_names_the_parameter(case, param, how):
    make, x = layer_cases()[case]
    layer = corrupt(make(), param, how)
    with pytest.raises(GradcheckError, match=f"parameter '{param}'") as e:
        gc.check_layer(layer, x)
    assert e.value.names == [param]


def test_a_parameter_left_without_gradient_is_named():
    make, x = layer_cases()["dense"]
    layer = corrupt(make(), "dense/kernel", lambda g: None)
    with pytest.raises(GradcheckError, match="no gradient into parameter 'dense/kernel'"):
        gc.check_layer(layer, x)


def test_an_lstm_returning_its_state_takes_a_list_of_dy():
    layer = L.LSTM(3, return_state=True, name="lstm", dtype="float64")
    x = normal(0, 2, 4, 2)
    report = gc.check_layer(layer, x, dy=[normal(1, 2, 3), None, normal(2, 2, 3)])
    assert report.outputs == ["y[0]", "y[2]"] and report.passed


def test_an_embedding_layer_checks_its_table_only():
    layer = L.Embedding(7, 3, name="embedding", dtype="float64")
    report = gc.check_layer(layer, np.array([[1, 2, 2], [6, 0, 1]]))
    assert [c.name for c in report] == ["embedding/embeddings"]


def test_a_model_with_dropout_in_training_mode_passes_since_every_call_redraws_the_same_mask():
    model = sn.Sequential([L.Dense(4, activation="relu", dtype="float64"), L.Dropout(0.5, dtype="float64"),
                           L.Dense(2, dtype="float64")])
    x = normal(0, 3, 5)
    report = gc.check_layer(model, x, training=True)
    assert len(report) == 5 and report.passed


def test_a_dropout_with_its_own_seed_fails_clearly_in_training_mode():
    model = sn.Sequential([L.Dense(4, dtype="float64"), L.Dropout(0.5, seed=1, dtype="float64")])
    with pytest.raises(GradcheckError, match="not deterministic"):
        gc.check_layer(model, normal(0, 3, 5), training=True)
    assert gc.check_layer(model, normal(0, 3, 5), training=False).passed


def test_a_float32_layer_is_refused():
    with pytest.raises(ValueError, match="dtype='float64'"):
        gc.check_layer(L.Dense(3, dtype="float32"), normal(0, 4, 5))


# -- backends ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_check_backends_compares_every_output_and_gradient(dtype):
    report = gc.check_backends(sn.ops.dense, normal(0, 5, 4).astype(dtype), normal(1, 4, 3).astype(dtype))
    others = [b for b in sn.available_backends() if b != "numpy"]
    assert report.backends == others and report.passed
    assert {(r.kind, r.name) for r in report} == ({("output", "y"), ("gradient", "x"), ("gradient", "w")}
                                                    if others else set())
    assert all(r.dtype == np.dtype(dtype).name for r in report)
    assert all(r.rtol == (1e-9 if dtype == np.float64 else 1e-4) for r in report)
    assert "check_backends(dense): passed" in str(report)


def test_check_backends_covers_tuple_outputs_and_integer_inputs():
    gc.check_backends(sn.ops.lstm, *lstm_inputs().values())
    gc.check_backends(sn.ops.embedding, np.array([[0, 2], [2, 5]]), normal(0, 6, 4))


def test_check_against_reports_a_wrong_output():
    def shifted(x):
        y, backprop = np_tanh(x)
        return y + 1e-6, backprop

    with pytest.raises(GradcheckError, match="output 'y'") as e:
        gc.check_against(shifted, sn.ops.tanh, normal(0, 3, 4))
    assert e.value.names == ["y"]


# -- packaging -----------------------------------------------------------------------------------------
def test_the_module_imports_without_pytest():
    code = "import sys; sys.modules['pytest'] = None; import scratchnet.gradcheck"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_check_op_accepts_the_trailing_none_of_an_optional_input_not_given(rng):
    """``conv2d(x, w)`` without a bias: its backprop returns ``(dx, dw, None)`` for two inputs."""
    x, w = rng.normal(size=(2, 5, 5, 3)), rng.normal(size=(3, 3, 3, 4))
    with sn.use_backend("numpy"):
        report = sn.gradcheck.check_op(lambda x, w: sn.ops.conv2d(x, w, padding="SAME"), x, w)
    assert report["x"].max_rel_error < 1e-6 and report["w"].max_rel_error < 1e-6


def test_check_op_on_lstm_with_four_inputs_leaves_the_initial_state_out(rng):
    x, kernel = rng.normal(size=(2, 3, 4)), rng.normal(size=(4, 20), scale=0.5)
    recurrent_kernel, bias = rng.normal(size=(5, 20), scale=0.5), rng.normal(size=20)
    with sn.use_backend("numpy"):
        report = sn.gradcheck.check_op(sn.ops.lstm, x, kernel, recurrent_kernel, bias)
    assert report["recurrent_kernel"].max_rel_error < 1e-6


def test_check_op_names_gradients_past_the_inputs_that_are_not_none(rng):
    x, kernel = rng.normal(size=(2, 3, 4)), rng.normal(size=(4, 20), scale=0.5)
    recurrent_kernel, bias = rng.normal(size=(5, 20), scale=0.5), rng.normal(size=20)
    with sn.use_backend("numpy"), pytest.raises(sn.gradcheck.GradcheckError,
                                                match=r"returned 6 gradients for 4 inputs .* the 2 past the last "
                                                      r"input are not None"):
        sn.gradcheck.check_op(lambda x, k, r, b: sn.ops.lstm(x, k, r, b), x, kernel, recurrent_kernel, bias)
