"""The layer exercise: write a whole layer (``build`` and ``call``), graded with ``check_layer``.

``RMSNormalization`` divides each example by its root mean square over its
last axis, then scales it (Keras's ``RMSNormalization(axis=-1)``, whose
scale is called ``gamma`` here; LLaMA's RMSNorm). Unlike layer
normalization, no mean is subtracted and there is no shift::

    ms[n]   = (1/C) sum_c x[n, c]^2
    y[n, c] = gamma[c] x[n, c] / sqrt(ms[n] + epsilon)

with Keras's ``epsilon=1e-6``. The learner writes the layer as every
scratchnet layer is written (``scratchnet/layers/base.py``): ``build``
creates ``gamma`` (ones) with ``add_weight``; ``call(x, training)`` returns
``(y, backprop)``, and ``backprop(dy)`` ADDS the parameter's gradient to it
(``p.accumulate(g)``) and returns ``dx``.

:func:`grade_layer` checks, on each case:

1. the call: the class can be built with ``dtype="float64"``, ``call``
   returns ``(y, backprop)`` (``Layer.forward`` says so when it does not), and
   the layer has a ``gamma`` of shape ``(C,)``;
2. the output, against the formula above (with a random ``gamma``, so that a
   missing scale shows);
3. every gradient, with :func:`scratchnet.gradcheck.check_layer` (finite
   differences); a failure is diagnosed gradient by gradient (``dx``,
   ``dgamma``: the worst element, yours against the numeric value,
   and a pattern when one fits);
4. accumulation: two forward and backward passes without ``zero_grad`` (a
   layer used twice, as weight sharing does) must leave the sum of both
   gradients in ``p.grad``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..backend import use_backend
from ..gradcheck import GradcheckError, check_layer
from .checks import _hint, _pattern
from .report import ExerciseError, Finding, GradeReport, where
from .stubs import RMSNormalization as _RMSNormalizationStub


@dataclass(frozen=True)
class LayerExercise:
    """A layer to write: its stub class, its parameters, the cases it is graded on and its forward formula."""

    name: str
    title: str
    stub: type
    parameters: tuple  # the names of its trainable parameters, each of shape (C,)
    cases: tuple  # (description, input shape)
    forward: object  # (x, layer) -> y, the formula the output is graded against
    hints: dict = field(default_factory=dict)  # "y" or a gradient name -> (nudge, closer, formula)

    @property
    def signature(self):
        return f"class {self.stub.__name__}(sn.Layer): build(input_shape), call(x, training) -> (y, backprop)"


def _rms_norm_formula(x, layer):
    epsilon = getattr(layer, "epsilon", 1e-6)
    return _value(layer, "gamma") * x / np.sqrt((x ** 2).mean(axis=-1, keepdims=True) + epsilon)


RMS_NORM = LayerExercise(
    name="rms_norm", title="Write a layer: RMSNormalization",
    stub=_RMSNormalizationStub, parameters=("gamma",),
    cases=(("N=4, C=6", (4, 6)), ("N=2, T=3, C=5 (normalized over the last axis only)", (2, 3, 5))),
    forward=_rms_norm_formula,
    hints={
        "y": ("divide each example by the root mean square of its LAST axis, then scale by gamma: no mean is "
              "subtracted, nothing is added",
              "the mean of x**2 over axis=-1 with keepdims=True; epsilon inside the square root",
              "y = gamma * x / sqrt(mean(x**2) + epsilon), the mean over the last axis"),
        "dx": ("the root mean square depends on x too: every x[n, c] moves every y[n, c'] of its example",
               "write s = 1 / sqrt(mean(x**2) + epsilon), x_hat = x * s and g = dy * gamma; dx has two terms: g * s "
               "(x directly), and one through s, which every x[n, c] of the row moves: ds/dx[n, c] = -s**3 x[n, c] / C",
               "dx = s * (g - x_hat * mean(g * x_hat)), with s = 1 / sqrt(mean(x**2) + epsilon), x_hat = x * s, "
               "g = dy * gamma and the mean over the last axis"),
        "dgamma": ("gamma[c] scales the normalized x of every example (and every position)",
                   "dy times what gamma multiplies in y (not x itself), summed over every axis but the last",
                   "dgamma = sum of dy * x_hat over every axis but the last, with x_hat = x / sqrt(mean(x**2) + "
                   "epsilon)"),
    },
)

#: The layer exercises by name.
LAYER_EXERCISES = {RMS_NORM.name: RMS_NORM}


def _value(layer, name):
    p = getattr(layer, name, None)
    return np.asarray(getattr(p, "value", p))


def _parameter(layer, name):
    """The layer's parameter called ``name`` (``layer.gamma``, or the one whose store name ends in ``/gamma``)."""
    for p in layer.parameters():
        if p.name.split("/")[-1] == name:
            return p
    return None


def _numeric_gradients(layer, x, dy, params, eps=1e-6):
    """Central differences of ``sum(y * dy)``, element by element: for the diagnosis of small cases only."""
    def loss():
        return float(np.sum(layer.forward(x)[0] * dy))

    grads = {}
    for name, array in [("dx", x)] + [(f"d{n}", p.value) for n, p in params.items()]:
        g = np.zeros(array.shape)
        for k in np.ndindex(array.shape):
            saved = array[k]
            array[k] = saved + eps
            up = loss()
            array[k] = saved - eps
            down = loss()
            array[k] = saved
            g[k] = (up - down) / (2 * eps)
        grads[name] = g
    return grads


def _wrong_lines(name, got, want, hints, hint):
    """``name is wrong at k of n elements; worst ...`` and its hint, or ``[]`` when ``got`` is right."""
    got = np.asarray(got, dtype=np.float64)
    diff = np.abs(got - want)
    bad = diff > 1e-6 * np.abs(want) + 1e-7 * max(1.0, float(np.abs(want).max()))
    if not bad.any():
        return []
    worst = np.unravel_index(int(np.argmax(diff)), want.shape)
    where = f"{name}[{', '.join(str(int(k)) for k in worst)}]"
    line = (f"{name} is wrong at {int(bad.sum())} of {want.size} elements; worst {where}: yours {float(got[worst]):.6g}, "
            f"right {float(want[worst]):.6g}")
    pattern = _pattern(got, want)
    if pattern:
        line += f" ({pattern})"
    lines = [line]
    if hints.get(name):
        lines.append(f"  hint: {_hint(hints[name], hint)}")
    return lines


def _grade_case(ex, layer_class, case, shape, rng, hint):
    """The findings of one case (an empty list when it passes)."""
    layer = layer_class(dtype="float64")
    x = rng.normal(size=shape)
    y, _ = layer.forward(x)  # builds it; Layer.forward says so when call does not return (y, backprop)
    params = {name: _parameter(layer, name) for name in ex.parameters}
    C = shape[-1]
    for name, p in params.items():
        if p is None:
            return [Finding(case, "call", [f"d{name}"], f"the layer has no parameter {name!r}: create it in build with "
                                                         f"self.{name} = self.add_weight({name!r}, input_shape[-1:], ...)")]
        if tuple(p.shape) != (C,):
            return [Finding(case, "shape", [f"d{name}"], f"{name} has shape {tuple(p.shape)}; it must be (C,) = {(C,)}")]
    for p in params.values():  # away from ones and zeros, so that a missing scale or shift shows
        p.value[...] = rng.normal(size=p.shape)
    y = np.asarray(layer.forward(x)[0])
    want = ex.forward(x, layer)
    if y.shape != want.shape:
        return [Finding(case, "shape", ["y"], f"y has shape {y.shape}; it must have x's, {want.shape}")]
    lines = _wrong_lines("y", y, want, ex.hints, hint)
    if lines:
        return [Finding(case, "output", ["y"], "\n".join(lines))]
    dy = rng.normal(size=shape)
    try:
        check_layer(layer, x, dy, mode="full", seed=int(rng.integers(1 << 30)))
    except GradcheckError as e:
        if "accumulated no gradient" in str(e):
            name = e.names[0].split("/")[-1]
            return [Finding(case, "call", [f"d{name}"], f"backprop left {name}.grad empty: add its gradient with "
                                                         f"self.{name}.accumulate(g)", details=str(e))]
        layer.zero_grad()
        dx = layer.forward(x)[1](dy)
        yours = {"dx": dx, **{f"d{n}": p.grad for n, p in params.items()}}
        right = _numeric_gradients(layer, x, dy, params)
        wrong = [g for g in right if yours[g] is not None and _wrong_lines(g, yours[g], right[g], {}, 0)]
        lines = [f"{', '.join(wrong) or 'a gradient'} {'is' if len(wrong) == 1 else 'are'} wrong: "
                 f"finite differences (sn.gradcheck.check_layer) disagree"]
        for g in wrong:
            lines += _wrong_lines(g, yours[g], right[g], ex.hints, hint)
        return [Finding(case, "finite differences", wrong, "\n".join(lines), details=str(e))]
    # Used twice before one update (weight sharing): the gradients must add up.
    layer.zero_grad()
    for _ in range(2):
        layer.forward(x)[1](dy)
    once = {n: p.grad.copy() for n, p in params.items()}
    layer.zero_grad()
    layer.forward(x)[1](dy)
    overwritten = [f"d{n}" for n, p in params.items() if not np.allclose(once[n], 2 * p.grad, rtol=1e-9, atol=1e-12)]
    if overwritten:
        names = ", ".join(n[1:] for n in overwritten)
        return [Finding(case, "accumulation", overwritten,
                        f"after two backprops without zero_grad, {names}.grad holds one gradient, not the sum of both: "
                        f"backprop must ADD to p.grad (p.accumulate(g)), never assign it (a layer used twice, as "
                        f"weight sharing does, needs both)")]
    return []


def grade_layer(name, layer_class, *, hint=0, strict=False, seed=0):
    """Grade your layer for layer exercise ``name`` (``"rms_norm"``).

    Parameters
    ----------
    name : {"rms_norm"}
    layer_class : type
        Your ``sn.Layer`` subclass; it is created as ``layer_class(dtype="float64")``.
    hint : {0, 1, 2}
        A nudge, closer, or the formula.
    strict : bool
        Raise :class:`ExerciseError` when it fails.
    seed : int

    Returns
    -------
    GradeReport
        ``report.wrong`` names ``y`` (the output) or the gradients ``dx``
        and ``dgamma``.
    """
    if name not in LAYER_EXERCISES:
        raise ValueError(f"grade: unknown layer exercise {name!r}; choose one of {', '.join(LAYER_EXERCISES)}")
    ex = LAYER_EXERCISES[name]
    report = GradeReport(ex.name, ex.signature, hint=hint)
    with use_backend("numpy"):
        for k, (case, shape) in enumerate(ex.cases):
            rng = np.random.default_rng([seed, k])
            try:
                found = _grade_case(ex, layer_class, case, shape, rng, hint)
            except NotImplementedError:
                report.status = "not implemented"
                report.cases, report.findings = [], []
                break
            except Exception as e:  # the learner's code failed: show where, and stop
                report.status = "error"
                report.findings.append(Finding(case, "call", [], f"{type(e).__name__}: {e}\n{where(e)}"))
                report.cases.append((case, False))
                break
            report.cases.append((case, not found))
            report.findings += found
            if found:
                report.status = "failed"
    if strict and not report.passed:
        raise ExerciseError(report)
    return report
