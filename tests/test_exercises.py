"""The exercises' grader passes every kept solution and fails planted wrong answers, naming the wrong gradient."""
from __future__ import annotations

import numpy as np
import pytest

import scratchnet as sn
from helpers import load_tensorflow
from scratchnet.exercises import forward, solutions

E = sn.exercises


@pytest.mark.parametrize("name", E.NAMES)
def test_the_grader_passes_each_kept_solution(name):
    report = E.grade(name, getattr(solutions, f"{name}_backward"))
    assert report.passed, str(report)
    assert report.wrong == []
    assert "passed" in str(report)


@pytest.mark.parametrize("name", E.NAMES)
def test_an_unfilled_stub_is_reported_as_not_implemented(name):
    report = E.grade(name, E.stub(name))
    assert not report.passed
    assert report.status == "not implemented"
    assert f"{E.get_exercise(name).name}_backward(" in str(report)


def test_strict_grading_raises_an_exercise_error_with_the_report():
    def wrong(dy, cache):
        dx, dw, db = solutions.dense_backward(dy, cache)
        return dx, dw, -db

    with pytest.raises(E.ExerciseError, match="db is wrong") as info:
        E.grade("dense", wrong, strict=True)
    assert info.value.report.wrong == ["db"]
    assert isinstance(info.value, AssertionError)


def test_aliases_and_unknown_names():
    assert E.grade("max_pool2d", solutions.max_pool_backward).passed
    assert E.grade("lstm", solutions.lstm_step_backward).passed
    assert E.grade("gru", solutions.gru_step_backward).passed
    with pytest.raises(ValueError, match="unknown exercise 'softmax'"):
        E.grade("softmax", solutions.dense_backward)


def _fails(name, backward, wrong, *phrases):
    report = E.grade(name, backward)
    text = str(report)
    assert report.status == "failed", text
    assert report.wrong == wrong, text
    head = text.splitlines()[0]
    if report.broken_path:  # every gradient wrong along one incoming path: the head names the path instead
        assert f"the path from the incoming {report.broken_path} is broken" in head, text
    else:
        for g in wrong:
            assert g in head, text
    for phrase in phrases:
        assert phrase in text, text
    return report


# -- dense ----------------------------------------------------------------------------------------
def test_dense_sign_flip_in_dw_is_named():
    def backward(dy, cache):
        dx, dw, db = solutions.dense_backward(dy, cache)
        return dx, -dw, db

    _fails("dense", backward, ["dw"], "finite differences", "a sign is flipped", "dw[")


def test_dense_transposed_dw_is_named_by_its_shape():
    def backward(dy, cache):
        x, w, b = cache
        return dy @ w.T, dy.T @ x, dy.sum(axis=0)

    _fails("dense", backward, ["dw"], "dw has shape (3, 5) but w has shape (5, 3)", "transposed")


def test_dense_db_missing_the_sum_over_the_batch_is_named():
    def backward(dy, cache):
        x, w, b = cache
        return dy @ w.T, x.T @ dy, dy[0]

    report = _fails("dense", backward, ["db"], "for every example n", "hint=1")
    assert "sum_n dy[n, k]" not in str(report)  # the default hint is a nudge, never the formula
    assert "sum_n dy[n, k]" in str(E.grade("dense", backward, hint=2))


# -- conv2d ---------------------------------------------------------------------------------------
def test_conv2d_sign_flip_in_db_is_named():
    def backward(dy, cache):
        dx, dw, db = solutions.conv2d_backward(dy, cache)
        return dx, dw, -db

    _fails("conv2d", backward, ["db"], "a sign is flipped")


def test_conv2d_dx_with_the_kernel_turned_the_wrong_way_is_named():
    def backward(dy, cache):
        x, w, b, (sh, sw), pads = cache
        kh, kw, C, O = w.shape
        dx, dw, db = solutions.conv2d_backward(dy, cache)
        flipped = w[::-1, ::-1].reshape(kh * kw * C, O)  # the 180-degree turn applied where it does not belong
        dx = forward.col2im(dy.reshape(-1, O) @ flipped.T, x.shape, kh, kw, sh, sw, pads)
        return dx, dw, db

    _fails("conv2d", backward, ["dx"], "EVERY window that covers it")
    assert "transposed convolution" in str(E.grade("conv2d", backward, hint=2))


def test_conv2d_dx_that_drops_overlapping_windows_is_named():
    def col2im_overwriting(cols, x_shape, kh, kw, sh, sw, pads):
        # The missing term: "=" instead of "+=", so a pixel keeps only the last window that covered it.
        top, bottom, left, right = pads
        N, H, W, C = x_shape
        OH, OW = (H + top + bottom - kh) // sh + 1, (W + left + right - kw) // sw + 1
        cols = cols.reshape(N, OH, OW, kh, kw, C)
        dxpad = np.zeros((N, H + top + bottom, W + left + right, C))
        for i in range(kh):
            for j in range(kw):
                dxpad[:, i:i + sh * OH:sh, j:j + sw * OW:sw, :] = cols[:, :, :, i, j, :]
        return dxpad[:, top:top + H, left:left + W, :]

    def backward(dy, cache):
        x, w, b, (sh, sw), pads = cache
        kh, kw, C, O = w.shape
        dx, dw, db = solutions.conv2d_backward(dy, cache)
        dx = col2im_overwriting(dy.reshape(-1, O) @ w.reshape(-1, O).T, x.shape, kh, kw, sh, sw, pads)
        return dx, dw, db

    report = _fails("conv2d", backward, ["dx"])
    assert not any(ok for _, ok in report.cases)  # every case has windows that overlap


# -- max-pool -------------------------------------------------------------------------------------
def _route(dy, cache, pick):
    """A max-pool backward that sends each window's gradient to ``pick(window_values)`` (flat index)."""
    x, (kh, kw), (sh, sw), pads, y = cache
    top, _, left, _ = pads
    N, H, W, C = x.shape
    dx = np.zeros_like(x)
    for n in range(N):
        for c in range(C):
            for oh in range(dy.shape[1]):
                for ow in range(dy.shape[2]):
                    r0, c0 = oh * sh - top, ow * sw - left
                    r1, c1 = max(r0, 0), max(c0, 0)
                    window = x[n, r1:r0 + kh, c1:c0 + kw, c]
                    for k, share in pick(window.ravel()):
                        i, j = divmod(k, window.shape[1])
                        dx[n, r1 + i, c1 + j, c] += share * dy[n, oh, ow, c]
    return dx


def test_max_pool_last_maximum_tie_routing_fails_against_the_reference():
    def last_max(dy, cache):
        return _route(dy, cache, lambda v: [(len(v) - 1 - int(np.argmax(v[::-1])), 1.0)])

    report = _fails("max_pool", last_max, ["dx"], "tied windows", "FIRST maximum", "passes finite differences")
    assert [ok for _, ok in report.cases] == [True, True, False, False]
    assert {f.check for f in report.findings} == {"reference"}


def test_max_pool_first_maximum_by_loops_passes():
    def first_max(dy, cache):
        return _route(dy, cache, lambda v: [(int(np.argmax(v)), 1.0)])

    assert E.grade("max_pool", first_max).passed


def test_max_pool_split_ties_fail_finite_differences():
    def split(dy, cache):
        return _route(dy, cache, lambda v: [(int(k), 1.0 / np.sum(v == v.max())) for k in np.flatnonzero(v == v.max())])

    report = _fails("max_pool", split, ["dx"], "finite differences")
    assert report.cases[0][1] and not report.cases[2][1]


def test_max_pool_gradient_to_every_window_position_is_named():
    def everywhere(dy, cache):
        return _route(dy, cache, lambda v: [(k, 1.0) for k in range(len(v))])

    _fails("max_pool", everywhere, ["dx"], "dx is wrong at")


# -- one LSTM step --------------------------------------------------------------------------------
def test_lstm_step_that_drops_the_incoming_dc_names_the_dc_path():
    def backward(dh, dc, cache):
        return solutions.lstm_step_backward(dh, np.zeros_like(dc), cache)

    report = E.grade("lstm_step", backward)
    text = str(report)
    assert report.wrong == ["dx", "dh_prev", "dc_prev", "dkernel", "drecurrent_kernel", "dbias"]
    assert report.upstream == ["dc"] and report.broken_path == "dc"
    # The finding comes first, in the head, and names the path, not dx.
    assert text.splitlines()[0] == "lstm_step: FAILED: the path from the incoming dc is broken", text
    assert "not in any one gradient" in text.splitlines()[4], text
    assert "dx is wrong" not in text and "yours is zero everywhere" in text
    assert text.count("zero everywhere") == 1, text
    assert "dc = dc_next + dh * o" in str(E.grade("lstm_step", backward, hint=2))


def test_lstm_step_missing_the_tanh_term_of_dc_names_the_dh_path():
    def backward(dh, dc, cache):
        x, h_prev, c_prev, kernel, recurrent_kernel, i, f, g, o, c = cache
        grads = solutions.lstm_step_backward(dh, dc, cache)
        # What dh would have added to c through tanh, taken away again (the missing term).
        missing = solutions.lstm_step_backward(np.zeros_like(dh), dh * o * (1 - np.tanh(c) ** 2), cache)
        return tuple(a - b for a, b in zip(grads, missing))

    report = _fails("lstm_step", backward, ["dx", "dh_prev", "dc_prev", "dkernel", "drecurrent_kernel", "dbias"],
                    "the path from the incoming dh is broken")
    assert report.upstream == ["dh"]


def test_lstm_step_sign_flip_in_dbias_is_named():
    def backward(dh, dc, cache):
        *grads, dbias = solutions.lstm_step_backward(dh, dc, cache)
        return (*grads, -dbias)

    report = _fails("lstm_step", backward, ["dbias"], "a sign is flipped")
    assert set(report.upstream) == {"dh", "dc"}


def test_lstm_step_transposed_drecurrent_kernel_is_named_by_its_shape():
    def backward(dh, dc, cache):
        dx, dh_prev, dc_prev, dkernel, drecurrent_kernel, dbias = solutions.lstm_step_backward(dh, dc, cache)
        return dx, dh_prev, dc_prev, dkernel, drecurrent_kernel.T, dbias

    _fails("lstm_step", backward, ["drecurrent_kernel"], "looks transposed")


# -- one GRU step ---------------------------------------------------------------------------------
GRU_GRADIENTS = ["dx", "dh_prev", "dkernel", "drecurrent_kernel", "dbias"]
GRU_MISTAKES = [m.name for m in E.get_exercise("gru_step").mistakes]


def _gru_step(dh, cache, mistake=None):
    """The kept GRU step's backward, written out, with one ``mistake`` planted."""
    x, h_prev, kernel, recurrent_kernel, z, r, g, u_h = cache
    H = h_prev.shape[1]
    if mistake == "swapped update gate":  # (1 - z) where z belongs: h = (1 - z) * h_prev + z * g
        dg, dz, dh_prev = dh * z, dh * (g - h_prev), dh * (1 - z)
    else:
        dg, dz, dh_prev = dh * (1 - z), dh * (h_prev - g), dh * z
    if mistake == "no direct path":
        dh_prev = np.zeros_like(dh)
    dp_h = dg * (1 - g ** 2)
    dr = dp_h * u_h
    if mistake == "reset gate before the product":  # r on h_prev's side: g = tanh(a_h + (r * h_prev) @ U_h)
        dr = (dp_h @ recurrent_kernel[:, 2 * H:].T) * h_prev
    dp_z, dp_r = dz * z * (1 - z), dr * r * (1 - r)
    da = np.concatenate([dp_z, dp_r, dp_h], axis=1)
    du = np.concatenate([dp_z, dp_r, dp_h if mistake == "du_h without r" else dp_h * r], axis=1)
    return (da @ kernel.T, dh_prev + du @ recurrent_kernel.T, x.T @ da, h_prev.T @ du,
            np.stack([da.sum(axis=0), du.sum(axis=0)]))


def _planted_gru(mistake):
    return lambda dh, cache: _gru_step(dh, cache, mistake)


def _names_only(report, mistakes, expected):
    """The report names the ``expected`` mistake (by its name, first in its finding) and no other."""
    text = str(report)
    named = [m for m in mistakes if f"the likely mistake: {m}" in text]
    assert named == [expected], text
    first = report.findings[0].message.splitlines()
    assert first[1] == f"the likely mistake: {expected}", text  # before the gradients it shows
    return text


def test_the_gru_step_written_out_passes():
    assert E.grade("gru_step", _planted_gru(None)).passed


def test_gru_step_without_the_direct_path_names_dh_prev_and_the_path():
    report = _fails("gru_step", _planted_gru("no direct path"), ["dh_prev"], "finite differences")
    text = _names_only(report, GRU_MISTAKES, "the direct path h = z * h_prev is missing from dh_prev")
    assert "also uses h_prev itself, directly" in text and "dh_prev = dh * z" not in text
    assert "dh_prev = dh * z + du @ recurrent_kernel.T" in str(E.grade("gru_step", _planted_gru("no direct path"),
                                                                       hint=2))


def test_gru_step_with_du_h_not_multiplied_by_r_names_the_reset_gate():
    report = _fails("gru_step", _planted_gru("du_h without r"), ["dh_prev", "drecurrent_kernel", "dbias"])
    text = _names_only(report, GRU_MISTAKES,
                       "the reset gate is on the wrong side: du_h lacks its factor r (drecurrent_kernel, dbias)")
    assert "r scales the recurrent part u_h" in text
    assert "du = [dp_z, dp_r, dp_h * r]" in str(E.grade("gru_step", _planted_gru("du_h without r"), hint=2))


def test_gru_step_with_dr_not_from_u_h_names_the_reset_gate():
    report = _fails("gru_step", _planted_gru("reset gate before the product"), GRU_GRADIENTS)
    text = _names_only(report, GRU_MISTAKES,
                       "the reset gate is on the wrong side: dr is not computed from u_h (dkernel's r block)")
    assert "dkernel is wrong in its r block only" in text and "reset_after=True" in text
    assert "dr = dp_h * u_h" in str(E.grade("gru_step", _planted_gru("reset gate before the product"), hint=2))


def test_gru_step_with_the_update_gate_swapped_names_it():
    report = _fails("gru_step", _planted_gru("swapped update gate"), GRU_GRADIENTS)
    text = _names_only(report, GRU_MISTAKES,
                       "the update gate is swapped: (1 - z) where z belongs (dh_prev, dkernel's z and h blocks)")
    assert "z weighs the OLD state" in text
    assert "dg = dh * (1 - z)" in str(E.grade("gru_step", _planted_gru("swapped update gate"), hint=2))


def test_gru_step_transposed_dkernel_and_a_one_row_dbias_are_named_by_their_shape():
    def transposed(dh, cache):
        dx, dh_prev, dkernel, drecurrent_kernel, dbias = solutions.gru_step_backward(dh, cache)
        return dx, dh_prev, dkernel.T, drecurrent_kernel, dbias

    def one_row(dh, cache):
        dx, dh_prev, dkernel, drecurrent_kernel, dbias = solutions.gru_step_backward(dh, cache)
        return dx, dh_prev, dkernel, drecurrent_kernel, dbias.sum(axis=0)

    _fails("gru_step", transposed, ["dkernel"], "looks transposed")
    _fails("gru_step", one_row, ["dbias"], "dbias has shape (15,) but bias has shape (2, 15)")


# -- attention ------------------------------------------------------------------------------------
ATTENTION_MISTAKES = [m.name for m in E.get_exercise("attention").mistakes]


def _attention(dy, cache, mistake=None):
    """The kept attention backward, written out, with one ``mistake`` planted."""
    q, k, v, mask, p = cache
    scale = 1.0 if mistake == "no scale" else 1 / np.sqrt(q.shape[-1])
    dv = np.swapaxes(p, -1, -2) @ dy
    dp = dy @ np.swapaxes(v, -1, -2)
    if mistake == "no diagonal":  # only the rank-one part of diag(p) - p p^T
        ds = -p * (dp * p).sum(axis=-1, keepdims=True)
    elif mistake == "mask after the softmax":  # weights recomputed over every key, the mask applied to ds after
        everywhere = forward.softmax(scale * q @ np.swapaxes(k, -1, -2))
        ds = everywhere * (dp - (dp * everywhere).sum(axis=-1, keepdims=True))
        if mask is not None:
            ds = ds * mask
    else:
        ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True))
    return scale * ds @ k, scale * np.swapaxes(ds, -1, -2) @ q, dv


def _planted_attention(mistake):
    return lambda dy, cache: _attention(dy, cache, mistake)


def test_the_attention_written_out_passes():
    assert E.grade("attention", _planted_attention(None)).passed


def test_attention_without_the_scale_names_dq_and_dk():
    report = _fails("attention", _planted_attention("no scale"), ["dq", "dk"],
                    f"yours is the right one times {np.sqrt(3):.6g} everywhere")
    text = _names_only(report, ATTENTION_MISTAKES, "the scale 1/sqrt(d) is missing from dq and dk")
    assert "dq and dk are sqrt(d) times too large" in text


def test_attention_with_the_softmax_jacobian_without_its_diagonal_names_dq_and_dk():
    report = _fails("attention", _planted_attention("no diagonal"), ["dq", "dk"])
    text = _names_only(report, ATTENTION_MISTAKES, "the softmax's Jacobian lacks its diagonal (dq, dk)")
    assert "dq and dk are wrong but dv is right" in text
    assert "ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True))" in str(
        E.grade("attention", _planted_attention("no diagonal"), hint=2))


def test_attention_with_the_mask_applied_after_the_softmax_fails_the_masked_cases_only():
    report = _fails("attention", _planted_attention("mask after the softmax"), ["dq", "dk"])
    text = _names_only(report, ATTENTION_MISTAKES, "the mask is applied after the softmax (dq, dk)")
    assert [ok for _, ok in report.cases] == [True, True, False, False], text
    assert "-inf BEFORE it" in text
    assert "with the cache's p, and no multiplication by the mask" in str(
        E.grade("attention", _planted_attention("mask after the softmax"), hint=2))


def test_attention_transposed_dk_is_named_by_its_shape():
    def backward(dy, cache):
        dq, dk, dv = solutions.attention_backward(dy, cache)
        return dq, np.swapaxes(dk, -1, -2), dv

    _fails("attention", backward, ["dk"], "dk has shape")


def test_no_known_mistake_fits_a_far_off_answer():
    def zeros(dy, cache):
        q, k, v, mask, p = cache
        return np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)

    assert "the likely mistake" not in str(E.grade("attention", zeros))


def test_a_backward_that_raises_is_reported_with_its_line():
    def backward(dy, cache):
        x, w, b = cache
        return dy @ w, x.T @ dy, dy.sum(axis=0)  # dy @ w: (4, 3) @ (5, 3) fails

    report = E.grade("dense", backward)
    assert report.status == "error"
    assert "ValueError" in str(report) and "dy @ w" in str(report)


def test_returning_too_few_gradients_is_named():
    def backward(dy, cache):
        x, w, b = cache
        return dy @ w.T, x.T @ dy

    report = E.grade("dense", backward)
    assert report.status == "failed"
    assert "returned 2 value(s); it must return 3: (dx, dw, db)" in str(report)


# -- messages that point to the mistake ----------------------------------------------------------
def test_a_backward_without_return_is_named_as_a_missing_return():
    def backward(dy, cache):
        x, w, b = cache
        dx, dw, db = dy @ w.T, x.T @ dy, dy.sum(axis=0)  # noqa: F841 (the forgotten return)

    report = E.grade("dense", backward)
    text = str(report)
    assert text.splitlines()[0] == "dense: FAILED: dense_backward returned None", text
    assert "its `return` line is missing" in text and "end it with `return dx, dw, db`" in text
    assert "returned 1 value(s)" not in text


def test_a_single_gradient_backward_without_return_is_named_too():
    def backward(dy, cache):
        dx = np.zeros_like(cache[0])  # noqa: F841

    assert "end it with `return dx`" in str(E.grade("max_pool", backward))


def test_hints_go_from_a_nudge_to_the_formula_only_when_asked():
    def backward(dy, cache):
        x, w, b = cache
        return dy @ w.T, 2 * (x.T @ dy), dy.sum(axis=0)

    nudge, closer, formula = (str(E.grade("dense", backward, hint=h)) for h in (0, 1, 2))
    assert "used by every example in the batch" in nudge and "hint=1" in nudge
    assert "the slope of y[n, k] with respect to w[c, k] is x[n, c]" in closer and "hint=2" in closer
    assert "dw[c, k] = sum_n x[n, c] dy[n, k]" in formula and "more help" not in formula
    assert "dw[c, k] = sum_n" not in nudge + closer
    with pytest.raises(ValueError, match="hint must be 0"):
        E.grade("dense", backward, hint=3)


def test_no_default_hint_states_a_formula():
    """The level-0 hints are nudges: none of them is an equation for a gradient."""
    for ex in E.EXERCISES.values():
        for name, levels in ex.hints.items():
            assert len(levels) == 3, (ex.name, name)
            assert f"{name} =" not in levels[0] and f"{name}[" not in levels[0], (ex.name, name, levels[0])
        for mistake in ex.mistakes:  # the known mistakes' nudges too
            assert len(mistake.hints) == 3, (ex.name, mistake.name)
            for name in ex.gradients + ("ds", "dr", "dg", "dz", "da", "du"):
                assert f"{name} =" not in mistake.hints[0], (ex.name, mistake.name, mistake.hints[0])


def test_a_forward_of_your_own_is_graded_against_the_op():
    def dense_forward(x, w, b):
        return x @ w, (x, w, b)  # the bias forgotten

    report = E.grade("dense", solutions.dense_backward, forward=dense_forward)
    assert not report.passed and "y" in report.wrong, str(report)
    assert E.grade("dense", solutions.dense_backward, forward=forward.dense_forward).passed


# -- the layer exercise ---------------------------------------------------------------------------
class _Planted(solutions.RMSNormalization):
    """The kept layer with one mistake planted in its backprop (``mistake``)."""

    mistake = None

    def call(self, x, training=False):
        y, right = super().call(x, training)
        s = 1 / np.sqrt((x ** 2).mean(axis=-1, keepdims=True) + self.epsilon)
        lead = tuple(range(x.ndim - 1))

        def backprop(dy):
            if self.mistake == "constant statistics":  # s treated as a constant: dx = dy * gamma * s
                self.gamma.accumulate((dy * x * s).sum(axis=lead))
                return dy * self.gamma.value * s
            if self.mistake == "dgamma without x_hat":  # dgamma = sum of dy
                dx = right(dy)
                self.gamma.grad -= (dy * x * s).sum(axis=lead) - dy.sum(axis=lead)
                return dx
            if self.mistake == "assigned grad":
                gamma_grad = self.gamma.grad
                dx = right(dy)
                if gamma_grad is not None:  # p.grad = g: what came before is lost
                    self.gamma.grad = self.gamma.grad - gamma_grad
                return dx
            return right(dy)

        if self.mistake == "returns y only":
            return y
        return y, backprop


def _planted(mistake):
    return type(f"RMSNorm_{mistake.replace(' ', '_')}", (_Planted,), {"mistake": mistake})


def test_the_layer_exercise_passes_the_kept_layer_and_reports_the_stub():
    assert E.grade("rms_norm", solutions.RMSNormalization).passed
    report = E.grade("rms_norm", E.stub("rms_norm"))
    assert report.status == "not implemented"
    assert "class RMSNormalization(sn.Layer)" in str(report)


def test_the_kept_rms_norm_matches_keras():
    load_tensorflow()  # the referee: skipped outside CI when it is not installed
    import keras

    x = np.random.default_rng(0).normal(size=(2, 3, 5))
    ours = solutions.RMSNormalization(dtype="float64")
    ours.forward(x)  # builds it
    ours.gamma.value[...] = np.linspace(0.5, 2.0, 5)
    theirs = keras.layers.RMSNormalization(dtype="float64")
    theirs.build(x.shape)
    theirs.scale.assign(ours.gamma.value)
    assert ours.epsilon == theirs.epsilon  # Keras's default, 1e-6
    np.testing.assert_allclose(ours.forward(x)[0], np.asarray(theirs(x)), rtol=1e-12, atol=1e-12)


def test_a_built_in_layer_norm_does_not_pass_the_rms_norm_exercise():
    assert not E.grade("rms_norm", sn.layers.LayerNormalization).passed


def test_rms_norm_with_constant_statistics_names_dx():
    report = E.grade("rms_norm", _planted("constant statistics"))
    assert report.wrong == ["dx"], str(report)
    assert "the root mean square depends on x too" in str(report)


def test_rms_norm_dgamma_without_x_hat_names_dgamma():
    report = E.grade("rms_norm", _planted("dgamma without x_hat"))
    assert report.wrong == ["dgamma"], str(report)
    assert "dgamma is wrong at" in str(report)


def test_rms_norm_that_assigns_its_gradient_is_told_to_accumulate():
    report = E.grade("rms_norm", _planted("assigned grad"))
    assert report.wrong == ["dgamma"], str(report)
    assert "backprop must ADD to p.grad (p.accumulate(g))" in str(report)


def test_a_layer_whose_call_returns_only_y_is_told_to_return_y_and_backprop():
    report = E.grade("rms_norm", _planted("returns y only"))
    assert report.status == "error"
    assert "call must return (y, backprop)" in str(report) and "ndarray of shape (4, 6)" in str(report)


def test_the_layer_hints_come_in_three_levels_and_the_nudge_gives_no_formula():
    for ex in E.LAYER_EXERCISES.values():
        assert set(ex.hints) == {"y"} | {f"d{p}" for p in ("x",) + ex.parameters}, ex.name
        for name, levels in ex.hints.items():
            assert len(levels) == 3, (ex.name, name)
            assert f"{name} =" not in levels[0] and f"{name}[" not in levels[0], (ex.name, name, levels[0])
            assert f"{name} =" in levels[2], (ex.name, name, levels[2])


def test_layer_forward_says_call_must_return_y_and_backprop_even_for_a_batch_of_two():
    class OnlyY(sn.Layer):
        def call(self, x, training=False):
            return x * 2

    for batch in (2, 3):
        with pytest.raises(TypeError, match=r"OnlyY 'only_y': call must return \(y, backprop\).*it returned "
                                            rf"ndarray of shape \({batch}, 4\)"):
            OnlyY().forward(np.ones((batch, 4)))

    class NoReturn(sn.Layer):
        def call(self, x, training=False):
            y = x  # noqa: F841

    with pytest.raises(TypeError, match=r"it returned None \(is its `return` missing\?\)"):
        NoReturn().forward(np.ones((2, 4)))


# -- use: the student's op in the engine ----------------------------------------------------------
def test_use_refuses_a_backward_that_fails_the_grader_and_restores_nothing():
    def wrong(dy, cache):
        return -solutions.max_pool_backward(dy, cache)

    original = sn.ops.max_pool2d
    with pytest.raises(E.ExerciseError, match="max_pool: FAILED"):
        E.use("max_pool", backward=wrong)
    assert sn.ops.max_pool2d is original
    with pytest.warns(UserWarning, match="does not pass the grader"):
        with E.use("max_pool", backward=wrong, check=False):
            assert sn.ops.max_pool2d is not original
    assert sn.ops.max_pool2d is original


@pytest.mark.parametrize("name", [n for n in E.NAMES if n in E.swap.OPS])
def test_use_swaps_each_op_and_gives_the_built_in_results(name, rng):
    """The swapped op, called as the layers call it, returns what the built-in returns (float64, numpy)."""
    op = {"dense": "dense", "conv2d": "conv2d", "max_pool": "max_pool2d", "avg_pool": "avg_pool2d",
          "batch_norm": "batch_norm", "lstm_step": "lstm", "gru_step": "gru", "attention": "attention"}[name]
    args, kwargs = {
        "dense": ((rng.normal(size=(4, 5)), rng.normal(size=(5, 3)), rng.normal(size=3)), {"activation": "relu"}),
        "conv2d": ((rng.normal(size=(2, 6, 6, 2)), rng.normal(size=(3, 3, 2, 4)), rng.normal(size=4), 1, "SAME"),
                   {"activation": "relu"}),
        "max_pool": ((rng.normal(size=(2, 6, 6, 3)), 2, 2, "SAME"), {}),
        "avg_pool": ((rng.normal(size=(2, 7, 6, 3)), 3, 2, "SAME"), {}),
        # (y, mean, variance), as BatchNormalization calls it in training
        "batch_norm": ((rng.normal(size=(2, 3, 4, 3)), rng.normal(size=3), rng.normal(size=3), 1e-3), {}),
        "lstm_step": ((rng.normal(size=(2, 3, 4)), rng.normal(size=(4, 20)), rng.normal(size=(5, 20)),
                       rng.normal(size=20)), {}),
        "gru_step": ((rng.normal(size=(2, 3, 4)), rng.normal(size=(4, 15)), rng.normal(size=(5, 15)),
                      rng.normal(size=(2, 15)), rng.normal(size=(2, 5))), {}),
        # (N, heads, T, d) as MultiHeadAttention calls it, a causal mask and a padding mask at once
        "attention": ((rng.normal(size=(2, 2, 4, 3)), rng.normal(size=(2, 2, 4, 3)), rng.normal(size=(2, 2, 4, 5))),
                      {"mask": (np.arange(4) < np.array([4, 2])[:, None])[:, None, None, :], "causal": True,
                       "scale": 1 / np.sqrt(3)}),
    }[name]
    with sn.use_backend("numpy"):
        y_right, backprop_right = getattr(sn.ops, op)(*args, **kwargs)
        with E.use(name, backward=getattr(solutions, f"{name}_backward")) as swap:
            assert swap.active and swap.report.passed
            y_yours, backprop_yours = getattr(sn.ops, op)(*args, **kwargs)
        assert not swap.active
    y_right, y_yours = (y if isinstance(y, tuple) else (y,) for y in (y_right, y_yours))
    for a, b in zip(y_right, y_yours):
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12)
    dys = [rng.normal(size=y.shape) for y in y_right]
    if name == "batch_norm":  # the statistics are not differentiated
        dys = dys[:1]
    g_right, g_yours = backprop_right(*dys), backprop_yours(*dys)
    g_right, g_yours = (g if isinstance(g, tuple) else (g,) for g in (g_right, g_yours))
    for a, b in zip(g_right, g_yours):
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-10)


def test_use_gru_step_reaches_the_gru_layer_and_gives_it_back():
    """The GRU layer looks its op up in sn.ops at each call: the swap reaches it, and restores the built-in."""
    builtin = sn.ops.gru
    x = np.random.default_rng(0).normal(size=(3, 4, 2))

    def run():
        sn.random.seed(0)
        layer = sn.layers.GRU(5, dtype="float64")
        y, backprop = layer.forward(x)
        return y, backprop(np.ones_like(y)), layer.kernel.grad

    with sn.use_backend("numpy"):
        y_right, dx_right, dk_right = run()
        with E.use("gru_step", backward=solutions.gru_step_backward):
            swapped = sn.ops.gru
            assert swapped.__module__ == "scratchnet.exercises.swap"
            calls = []
            sn.ops.gru = lambda *a, **k: (calls.append(1), swapped(*a, **k))[1]
            try:
                y_yours, dx_yours, dk_yours = run()
            finally:
                sn.ops.gru = swapped
            assert calls, "the GRU layer did not call the swapped op"
    assert sn.ops.gru is builtin
    np.testing.assert_allclose(y_yours, y_right, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx_yours, dx_right, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(dk_yours, dk_right, rtol=1e-9, atol=1e-10)


def test_use_attention_refuses_dropout_and_another_scale():
    q = np.random.default_rng(0).normal(size=(1, 3, 4))
    with sn.use_backend("numpy"), E.use("attention", backward=solutions.attention_backward):
        with pytest.raises(ValueError, match="your attention has no dropout"):
            sn.ops.attention(q, q, q, dropout_rate=0.1)
        with pytest.raises(ValueError, match="scales the scores by 1/sqrt"):
            sn.ops.attention(q, q, q, scale=1.0)


# -- scratchnet exercises NAME --------------------------------------------------------------------
def _exercises_cli(argv):
    import argparse

    from scratchnet.cli import exercises as cli

    parser = argparse.ArgumentParser(prog="scratchnet")
    cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["exercises", *argv])
    return args.func(args)


def test_the_exercises_command_copies_the_notebook_and_never_overwrites_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert _exercises_cli(["max_pool", "--no-open"]) == 0
    path = tmp_path / "max_pool.ipynb"
    assert path.read_text(encoding="utf-8") == (E.notebook.FOLDER / "max_pool.ipynb").read_text(encoding="utf-8")
    path.write_text("my work", encoding="utf-8")
    assert _exercises_cli(["max_pool", "--no-open"]) == 0
    assert path.read_text(encoding="utf-8") == "my work"
    out = capsys.readouterr().out
    assert "wrote max_pool.ipynb" in out and "is here already" in out


def test_the_exercises_command_without_jupyter_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    from scratchnet.cli import exercises as cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "jupyter_command", lambda: None)
    assert _exercises_cli(["lstm_step"]) == 0
    assert "Jupyter is not installed here: pip install 'scratchnet[learn]'" in capsys.readouterr().out


def test_the_exercises_command_opens_the_notebook_with_jupyter(tmp_path, monkeypatch):
    from scratchnet.cli import exercises as cli

    calls = []
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "jupyter_command", lambda: ["jupyter", "lab"])
    monkeypatch.setattr(cli.subprocess, "call", lambda command: calls.append(command) or 0)
    assert _exercises_cli(["dense"]) == 0
    assert calls == [["jupyter", "lab", "dense.ipynb"]]


def test_the_exercises_command_lists_them_and_refuses_an_unknown_one(tmp_path, monkeypatch, capsys):
    from scratchnet.cli.checks import UsageError

    monkeypatch.chdir(tmp_path)
    assert _exercises_cli([]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in E.NAMES + E.LAYER_NAMES)
    with pytest.raises(UsageError, match="unknown exercise 'softmax'; choose one of dense, conv2d"):
        _exercises_cli(["softmax"])
    assert list(tmp_path.iterdir()) == []


# -- avg_pool and batch_norm: the planted mistakes of issue 26 --------------------------------------
def _avg_pool_by_windows(dy, cache, divisor=None, assign=False, one_cell=False):
    """A loop-by-window avg-pool backward with one mistake planted, as a student writes it."""
    x, (kh, kw), (sh, sw), (top, _, left, _) = cache
    _, H, W, _ = x.shape
    dx = np.zeros_like(x)
    for oh in range(dy.shape[1]):
        for ow in range(dy.shape[2]):
            r0, c0 = oh * sh - top, ow * sw - left
            r1, c1, r2, c2 = max(r0, 0), max(c0, 0), min(r0 + kh, H), min(c0 + kw, W)
            g = dy[:, oh:oh + 1, ow:ow + 1, :]
            if one_cell:  # max-pool style: the whole gradient to the window's first cell
                dx[:, r1, c1, :] += g[:, 0, 0, :]
            elif assign:
                dx[:, r1:r2, c1:c2, :] = g / ((r2 - r1) * (c2 - c1))
            else:
                dx[:, r1:r2, c1:c2, :] += g / (divisor or (r2 - r1) * (c2 - c1))
    return dx


def test_avg_pool_written_out_by_windows_passes():
    assert E.grade("avg_pool", _avg_pool_by_windows).passed


def test_avg_pool_dividing_by_the_full_window_names_the_padding():
    def backward(dy, cache):
        (kh, kw) = cache[1]
        return _avg_pool_by_windows(dy, cache, divisor=kh * kw)

    report = _fails("avg_pool", backward, ["dx"], "the likely mistake: the padded cells are counted")
    assert [ok for _, ok in report.cases] == [True, False, False, False]  # VALID has no padding: right there


def test_avg_pool_assigning_instead_of_adding_names_the_overlaps():
    report = _fails("avg_pool", lambda dy, cache: _avg_pool_by_windows(dy, cache, assign=True), ["dx"],
                    "the likely mistake: overlapping windows are not summed")
    assert report.cases[0][1]  # the 2x2 stride-2 windows do not overlap


def test_avg_pool_assigning_offset_by_offset_names_the_overlaps_too():
    def backward(dy, cache):
        x, (kh, kw), (sh, sw), (top, bottom, left, right) = cache
        N, H, W, C = x.shape
        ones = np.pad(np.ones((1, H, W, 1)), ((0, 0), (top, bottom), (left, right), (0, 0)))
        OH, OW = dy.shape[1:3]
        count = sum(ones[:, i:i + sh * OH:sh, j:j + sw * OW:sw, :] for i in range(kh) for j in range(kw))
        dxpad = np.zeros((N, H + top + bottom, W + left + right, C))
        for i in range(kh):
            for j in range(kw):
                dxpad[:, i:i + sh * OH:sh, j:j + sw * OW:sw, :] = dy / count
        return dxpad[:, top:top + H, left:left + W, :]

    _fails("avg_pool", backward, ["dx"], "the likely mistake: overlapping windows are not summed")


def test_avg_pool_routing_to_one_cell_names_the_max_pool_style():
    _fails("avg_pool", lambda dy, cache: _avg_pool_by_windows(dy, cache, one_cell=True), ["dx"],
           "the likely mistake: the whole gradient goes to one cell of each window")


def _batch_norm(dy, cache, dx=None, dgamma=None, axes=None):
    """The kept solution with one of its gradients replaced by ``dx(g, xhat, s, axes)`` or ``dgamma(...)``."""
    x, xhat, s, gamma = cache
    right = solutions.batch_norm_backward(dy, cache)
    axes = tuple(range(dy.ndim - 1)) if axes is None else axes
    g = dy * gamma
    return (right[0] if dx is None else dx(g, xhat, s, axes), right[1] if dgamma is None else dgamma(dy, xhat, axes),
            right[2])


def test_batch_norm_with_constant_statistics_names_them():
    report = _fails("batch_norm", lambda dy, cache: _batch_norm(dy, cache, dx=lambda g, xhat, s, axes: g * s), ["dx"],
                    "the likely mistake: the mean and the variance are treated as constants")
    assert "mean(g * xhat)" not in str(report)  # the nudge gives no formula
    assert "dx = s * (g - mean(g) - xhat * mean(g * xhat))" in str(
        E.grade("batch_norm", lambda dy, cache: _batch_norm(dy, cache, dx=lambda g, xhat, s, axes: g * s), hint=2))


def test_batch_norm_without_the_variance_path_names_it():
    _fails("batch_norm", lambda dy, cache: _batch_norm(
        dy, cache, dx=lambda g, xhat, s, axes: s * (g - g.mean(axis=axes))), ["dx"],
        "the likely mistake: the variance path is missing")


def test_batch_norm_dgamma_without_xhat_names_it():
    _fails("batch_norm", lambda dy, cache: _batch_norm(
        dy, cache, dgamma=lambda dy, xhat, axes: dy.sum(axis=axes)), ["dgamma"],
        "the likely mistake: dgamma is summed without xhat")


def test_batch_norm_statistics_over_axis_0_alone_fail_the_spatial_cases_only():
    def dx(g, xhat, s, axes):
        return s * (g - g.mean(axis=0) - xhat * (g * xhat).mean(axis=0))

    report = _fails("batch_norm", lambda dy, cache: _batch_norm(dy, cache, dx=dx), ["dx"],
                    "the likely mistake: the statistics are taken over axis 0 alone")
    assert [ok for _, ok in report.cases] == [True, True, False, False]


def test_batch_norm_dgamma_summed_over_axis_0_alone_is_named_by_its_shape():
    _fails("batch_norm", lambda dy, cache: _batch_norm(dy, cache, dgamma=lambda dy, xhat, axes: (dy * xhat).sum(0)),
           ["dgamma"], "dgamma has shape (3, 3, 2) but gamma has shape (2,)")


@pytest.mark.parametrize("center, scale", [(True, True), (False, False)])
def test_use_batch_norm_reaches_the_layer_in_training_with_its_moving_averages(center, scale):
    x = np.random.default_rng(0).normal(size=(4, 3, 3, 2))

    def run():
        sn.random.seed(0)
        layer = sn.layers.BatchNormalization(center=center, scale=scale, dtype="float64")
        y, backprop = layer.forward(x, training=True)
        return y, backprop(np.cos(y)), layer.moving_mean.value.copy(), layer.moving_variance.value.copy(), layer

    with sn.use_backend("numpy"):
        right = run()
        with E.use("batch_norm", backward=solutions.batch_norm_backward):
            yours = run()
    assert sn.ops.batch_norm.__module__ == "scratchnet.ops.normalization"
    for a, b in zip(right[:4], yours[:4]):
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-10)
    for a, b in zip(right[4].trainable_parameters, yours[4].trainable_parameters):
        np.testing.assert_allclose(b.grad, a.grad, rtol=1e-9, atol=1e-10)


# -- residual: the gradient through a skip connection adds (issue 26) --------------------------------
def _residual(dy, cache, skip="add", final=None, inner=None, skip_masked=True):
    """A residual backward written out step by step, with one mistake planted (as a student writes it)."""
    x, w1, w2, a, h, s = cache
    ds = dy * ((s if final is None else final(cache)) > 0)  # 5b
    da = (ds @ w2.T) * ((a if inner is None else inner(cache)) > 0)  # 3b, 2b
    branch = da @ w1.T  # 1b
    down_the_skip = ds if skip_masked else dy
    dx = {"add": branch + down_the_skip, "none": branch, "replace": down_the_skip}[skip]
    return dx, x.T @ da, da.sum(axis=0), h.T @ ds, ds.sum(axis=0)


def test_residual_written_out_step_by_step_passes():
    report = E.grade("residual", _residual)
    assert report.passed, str(report)
    assert E.grade("residual_block", solutions.residual_backward).passed  # an alias


def test_residual_forward_is_the_block_of_sn_ops():
    rng = np.random.default_rng(7)
    x, w1, b1, w2, b2 = (rng.normal(size=s) for s in ((4, 3), (3, 5), (5,), (5, 3), (3,)))
    y, (_, _, _, a, h, s) = forward.residual_forward(x, w1, b1, w2, b2)
    with sn.use_backend("numpy"):
        block = sn.Sequential([sn.layers.Dense(5, activation="relu"), sn.layers.Dense(3)], dtype="float64")
        block.build((None, 3))
        block.set_weights([w1, b1, w2, b2])
        np.testing.assert_allclose(y, np.maximum(x + sn.to_numpy(block(x)), 0), rtol=1e-12)
    np.testing.assert_allclose(h, np.maximum(a, 0))


def test_residual_without_the_skip_gradient_names_it():
    report = _fails("residual", lambda dy, cache: _residual(dy, cache, skip="none"), ["dx"],
                    "the likely mistake: the skip's gradient is forgotten: dx flows through the branch only")
    assert [ok for _, ok in report.cases] == [False, False, False]
    assert "replaces" not in str(report) and "dx = da @ w1.T + ds" not in str(report)  # the nudge gives no formula
    assert "dx = da @ w1.T + ds" in str(E.grade("residual", lambda dy, cache: _residual(dy, cache, skip="none"),
                                                  hint=2))


def test_residual_with_the_skip_replacing_the_branch_names_it():
    _fails("residual", lambda dy, cache: _residual(dy, cache, skip="replace"), ["dx"],
           "the likely mistake: the skip's gradient replaces the branch's instead of adding to it")


def test_residual_with_dy_sent_down_the_skip_unmasked_names_the_missing_mask():
    report = _fails("residual", lambda dy, cache: _residual(dy, cache, skip_masked=False), ["dx"],
                    "the likely mistake: the block's ReLU mask is not applied on the skip path")
    assert "forgotten" not in str(report)


@pytest.mark.parametrize("source", ["z", "x"])
def test_residual_with_the_block_mask_from_the_wrong_pre_activation_names_it(source):
    mask = {"z": lambda c: c[5] - c[0], "x": lambda c: c[0]}[source]  # the branch's output z = s - x, or x
    report = _fails("residual", lambda dy, cache: _residual(dy, cache, final=mask), ["dx", "dw1", "db1", "dw2", "db2"],
                    "the likely mistake: the block's ReLU mask is taken from the wrong pre-activation")
    assert "the inner ReLU's mask" not in str(report)


def test_residual_with_the_two_masks_swapped_names_both_then_shows_the_error_where_the_widths_differ():
    report = E.grade("residual", lambda dy, cache: _residual(dy, cache, final=lambda c: c[3], inner=lambda c: c[5]))
    text = str(report)
    assert report.status == "error", text
    assert [ok for _, ok in report.cases] == [False, False, False]  # C = K on the first two: graded, and wrong
    assert "the likely mistake: the block's ReLU mask is taken from the wrong pre-activation" in text
    assert "the likely mistake: the inner ReLU's mask is taken from the wrong pre-activation" in text
    assert "ValueError" in text and "test_exercises.py" in text  # the student's line, on the K = 6 case


def test_residual_transposed_dw1_is_named_by_its_shape():
    def backward(dy, cache):
        dx, dw1, db1, dw2, db2 = solutions.residual_backward(dy, cache)
        return dx, dw1.T, db1, dw2, db2

    report = E.grade("residual", backward)
    assert report.wrong == ["dw1"], str(report)
    assert "dw1 has shape (6, 3) but w1 has shape (3, 6): it looks transposed" in str(report)


def test_residual_has_no_op_to_swap_and_use_says_so():
    original = {name: getattr(sn.ops, op) for name, op in E.swap.OPS.items()}
    with pytest.raises(ValueError, match="exercise 'residual' has no op to replace"):
        E.use("residual", backward=solutions.residual_backward)
    assert {name: getattr(sn.ops, op) for name, op in E.swap.OPS.items()} == original


def test_the_residual_notebook_runs_with_the_teachers_answer_and_the_skip_carries_the_gradient():
    import inspect
    import json

    cells = E.notebook.code_cells(json.loads((E.notebook.FOLDER / "residual.ipynb").read_text(encoding="utf-8")))
    stub = inspect.getsource(E.stub("residual")).strip()
    assert sum(cell.strip() == stub for cell in cells) == 1
    namespace = {"__name__": "__main__"}
    with sn.use_backend("numpy"):
        for cell in cells:
            source = inspect.getsource(solutions.residual_backward) if cell.strip() == stub else cell
            exec(compile(source, "<residual.ipynb>", "exec"), namespace)
    assert namespace["report"].passed
    with_skip, without = namespace["with_skip"], namespace["without"]
    assert with_skip[0] > with_skip[-1] and without[0] < 1e-6 * without[-1]
