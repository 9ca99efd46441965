"""The exercises' grader passes every kept solution and fails planted wrong answers, naming the wrong gradient."""
from __future__ import annotations

import numpy as np
import pytest

import scratchnet as sn
from scratchnet.exercises import forward, solutions

E = sn.exercises


@pytest.mark.parametrize("name", E.NAMES)
def test_the_grader_passes_each_kept_solution(name):
    report = E.grade(name, E.solution(name))
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
    with pytest.raises(ValueError, match="unknown exercise 'softmax'"):
        E.grade("softmax", solutions.dense_backward)


def _fails(name, backward, wrong, *phrases):
    report = E.grade(name, backward)
    text = str(report)
    assert report.status == "failed", text
    assert report.wrong == wrong, text
    head = text.splitlines()[0]
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

    _fails("dense", backward, ["db"], "sum_n dy[n, k]")


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

    _fails("conv2d", backward, ["dx"], "transposed convolution")


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

    report = _fails("lstm_step", backward, ["dx", "dh_prev", "dc_prev", "dkernel", "drecurrent_kernel", "dbias"],
                    "the path from the incoming dc is broken", "dc = dc_next + dh * o")
    assert report.upstream == ["dc"]


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
