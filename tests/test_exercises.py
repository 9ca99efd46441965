"""The exercises' grader passes every kept solution and fails planted wrong answers, naming the wrong gradient."""
from __future__ import annotations

import numpy as np
import pytest

import scratchnet as sn
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


def test_a_forward_of_your_own_is_graded_against_the_op():
    def dense_forward(x, w, b):
        return x @ w, (x, w, b)  # the bias forgotten

    report = E.grade("dense", solutions.dense_backward, forward=dense_forward)
    assert not report.passed and "y" in report.wrong, str(report)
    assert E.grade("dense", solutions.dense_backward, forward=forward.dense_forward).passed


# -- the layer exercise ---------------------------------------------------------------------------
class _Planted(solutions.LayerNormalization):
    """The kept layer with one mistake planted in its backprop (``mistake``)."""

    mistake = None

    def call(self, x, training=False):
        y, right = super().call(x, training)
        mean = x.mean(axis=-1, keepdims=True)
        std = np.sqrt(((x - mean) ** 2).mean(axis=-1, keepdims=True) + self.epsilon)
        lead = tuple(range(x.ndim - 1))

        def backprop(dy):
            if self.mistake == "constant statistics":  # mean and std treated as constants
                self.gamma.accumulate((dy * (x - mean) / std).sum(axis=lead))
                self.beta.accumulate(dy.sum(axis=lead))
                return dy * self.gamma.value / std
            if self.mistake == "dgamma without x_hat":
                dx = right(dy)
                self.gamma.grad -= (dy * (x - mean) / std).sum(axis=lead) - dy.sum(axis=lead)
                return dx
            if self.mistake == "assigned grad":
                gamma_grad, beta_grad = self.gamma.grad, self.beta.grad
                dx = right(dy)
                if gamma_grad is not None:  # p.grad = g: what came before is lost
                    self.gamma.grad = self.gamma.grad - gamma_grad
                    self.beta.grad = self.beta.grad - beta_grad
                return dx
            return right(dy)

        if self.mistake == "returns y only":
            return y
        return y, backprop


def _planted(mistake):
    return type(f"LayerNorm_{mistake.replace(' ', '_')}", (_Planted,), {"mistake": mistake})


def test_the_layer_exercise_passes_the_kept_layer_and_reports_the_stub():
    assert E.grade("layer_norm", solutions.LayerNormalization).passed
    report = E.grade("layer_norm", E.stub("layer_norm"))
    assert report.status == "not implemented"
    assert "class LayerNormalization(sn.Layer)" in str(report)


def test_layer_norm_with_constant_statistics_names_dx():
    report = E.grade("layer_norm", _planted("constant statistics"))
    assert report.wrong == ["dx"], str(report)
    assert "mean and var depend on x too" in str(report)


def test_layer_norm_dgamma_without_x_hat_names_dgamma():
    report = E.grade("layer_norm", _planted("dgamma without x_hat"))
    assert report.wrong == ["dgamma"], str(report)
    assert "dgamma is wrong at" in str(report)


def test_layer_norm_that_assigns_its_gradients_is_told_to_accumulate():
    report = E.grade("layer_norm", _planted("assigned grad"))
    assert report.wrong == ["dgamma", "dbeta"], str(report)
    assert "backprop must ADD to p.grad (p.accumulate(g))" in str(report)


def test_a_layer_whose_call_returns_only_y_is_told_to_return_y_and_backprop():
    report = E.grade("layer_norm", _planted("returns y only"))
    assert report.status == "error"
    assert "call must return (y, backprop)" in str(report) and "ndarray of shape (4, 6)" in str(report)


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


@pytest.mark.parametrize("name", E.NAMES)
def test_use_swaps_each_op_and_gives_the_built_in_results(name, rng):
    """The swapped op, called as the layers call it, returns what the built-in returns (float64, numpy)."""
    op = {"dense": "dense", "conv2d": "conv2d", "max_pool": "max_pool2d", "lstm_step": "lstm"}[name]
    args, kwargs = {
        "dense": ((rng.normal(size=(4, 5)), rng.normal(size=(5, 3)), rng.normal(size=3)), {"activation": "relu"}),
        "conv2d": ((rng.normal(size=(2, 6, 6, 2)), rng.normal(size=(3, 3, 2, 4)), rng.normal(size=4), 1, "SAME"),
                   {"activation": "relu"}),
        "max_pool": ((rng.normal(size=(2, 6, 6, 3)), 2, 2, "SAME"), {}),
        "lstm_step": ((rng.normal(size=(2, 3, 4)), rng.normal(size=(4, 20)), rng.normal(size=(5, 20)),
                       rng.normal(size=20)), {}),
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
    g_right, g_yours = backprop_right(*dys), backprop_yours(*dys)
    g_right, g_yours = (g if isinstance(g, tuple) else (g,) for g in (g_right, g_yours))
    for a, b in zip(g_right, g_yours):
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-10)


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
