"""The grader: a learner's backward against finite differences and against the reference op.

For each case of the exercise (:mod:`scratchnet.exercises.problems`), in float64
on the NumPy backend:

1. the backward is called once: it must return one gradient per input, each
   an array of its input's shape (a transposed gradient is caught here);
2. :func:`scratchnet.gradcheck.check_op` checks every gradient against
   central finite differences, each input on its own, so that the gradients
   it names are wrong whatever the reference says; for a step with several
   outputs (the LSTM's ``h`` and ``c``) a failure is re-checked with one
   incoming gradient at a time, to say which path is broken;
3. :func:`scratchnet.gradcheck.check_against` compares outputs and gradients
   with the reference op, which pins down what finite differences cannot: the
   maximum a tied max-pool window sends its gradient to.

Every wrong gradient is reported with its worst element: yours, the right
value (the reference op's, which finite differences confirm) and a pattern
when one fits (the opposite sign, zero, a constant factor), and the known
mistake it looks like, when the exercise lists one that fits (the GRU's
forgotten direct path, attention's missing scale). Hints come in
three levels: ``hint=0`` (the default) a nudge, ``hint=1`` closer, ``hint=2``
the formula.

This module runs the cases (:func:`grade`); the checks and the diagnosis are
in :mod:`scratchnet.exercises.checks`, the report they fill
(:class:`GradeReport`, :class:`Finding`) in :mod:`scratchnet.exercises.report`.
"""
from __future__ import annotations

import numpy as np

from ..backend import use_backend
from .checks import _against_reference, _call_once, _finite_differences, _forward_outputs
from .problems import ALIASES, EXERCISES
from .report import ExerciseError, Finding, GradeReport, where

__all__ = ["ExerciseError", "Finding", "GradeReport", "get_exercise", "grade", "where"]


def get_exercise(name):
    """The :class:`~scratchnet.exercises.problems.Exercise` called ``name`` (or one of its aliases)."""
    key = ALIASES.get(name, name)
    if key not in EXERCISES:
        raise ValueError(f"grade: unknown exercise {name!r}; choose one of {', '.join(EXERCISES)}")
    return EXERCISES[key]


def grade(name, backward, forward=None, *, hint=0, strict=False, seed=0):
    """Grade your backward pass (and, if you wrote one, your forward) for exercise ``name``.

    Parameters
    ----------
    name : {"dense", "conv2d", "max_pool", "avg_pool", "batch_norm", "residual", "lstm_step", "gru_step", "attention",
            "rms_norm"}
        The exercise (``"max_pool2d"``, ``"avg_pool2d"``, ``"batchnorm"``, ``"lstm"`` and ``"gru"`` are accepted too).
    backward : callable
        Your ``<name>_backward``, with the stub's signature
        (:mod:`scratchnet.exercises.stubs`): ``backward(dy, cache)``, or
        ``backward(dh, dc, cache)`` for the LSTM step (``backward(dh, cache)``
        for the GRU step, ``backward(dy, cache)`` for attention). For the layer exercise
        ``"rms_norm"``, your layer class
        (:func:`~scratchnet.exercises.layer.grade_layer`).
    forward : callable, optional
        Your ``<name>_forward``, with the signature of the given one
        (:mod:`scratchnet.exercises.forward`); its outputs are graded against
        ``sn.ops``. Default: the given forward.
    hint : {0, 1, 2}
        How much help a failure report gives: 0 a nudge (the default), 1
        closer, 2 the formula.
    strict : bool
        Raise :class:`ExerciseError` (an ``AssertionError``) when it fails,
        instead of returning the report.
    seed : int
        Seeds the inputs and the incoming gradients.

    Returns
    -------
    GradeReport
        ``report.passed``; ``report.wrong``, the wrong gradients
        (``["dw"]``); ``print(report)`` says what is wrong and where.

    Examples
    --------
    >>> import scratchnet as sn
    >>> print(sn.exercises.grade("dense", sn.exercises.stub("dense")))
    dense: not implemented yet: fill in dense_backward(dy, cache) -> (dx, dw, db)
    """
    from .layer import LAYER_EXERCISES, grade_layer  # the layer exercise grades a class, not a function

    if name in LAYER_EXERCISES:
        return grade_layer(name, backward, hint=hint, strict=strict, seed=seed)
    ex = get_exercise(name)
    if hint not in (0, 1, 2):
        raise ValueError(f"grade: hint must be 0 (a nudge), 1 (closer) or 2 (the formula), got {hint!r}")
    report = GradeReport(ex.name, ex.signature, hint=hint)
    with use_backend("numpy"):
        for k, case in enumerate(ex.cases):
            rng = np.random.default_rng([seed, k])
            inputs = case.make(rng)
            op = ex.make_op(backward, **case.settings, **({} if forward is None else {"forward_pass": forward}))
            reference = ex.make_reference(**case.settings)
            try:
                found = _call_once(ex, case, op, inputs, rng)
                found = [found] if found else []
                if not found and forward is not None:
                    found = _forward_outputs(ex, case, op, reference, inputs)
                if not found and case.finite_differences:
                    found = _finite_differences(ex, case, op, reference, inputs, rng, hint)
                if not found:
                    found = _against_reference(ex, case, op, reference, inputs, rng, hint)
            except NotImplementedError:
                report.status = "not implemented"
                report.cases, report.findings = [], []
                break
            except Exception as e:  # the learner's code failed: show where, and stop
                report.status = "error"
                report.findings.append(Finding(case.name, "call", [], f"{type(e).__name__}: {e}\n{where(e)}"))
                report.cases.append((case.name, False))
                break
            report.cases.append((case.name, not found))
            report.findings += found
            if found:
                report.status = "failed"
    if strict:
        report.raise_if_failed()
    return report
