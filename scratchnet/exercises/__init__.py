"""Graded exercises, in cs231n's style: write a backward pass, and have it checked.

Four exercises, each a function to fill in (:mod:`~scratchnet.exercises.stubs`):

==============  =========================================================================  =================
name            your function                                                              its forward
==============  =========================================================================  =================
``dense``       ``dense_backward(dy, cache) -> (dx, dw, db)``                              ``dense_forward``
``conv2d``      ``conv2d_backward(dy, cache) -> (dx, dw, db)``                             ``conv2d_forward``
``max_pool``    ``max_pool_backward(dy, cache) -> dx``                                     ``max_pool_forward``
``lstm_step``   ``lstm_step_backward(dh, dc, cache) -> (dx, dh_prev, dc_prev, dkernel,     ``lstm_step_forward``
                drecurrent_kernel, dbias)``
==============  =========================================================================  =================

The forwards (:mod:`~scratchnet.exercises.forward`) return ``(out, cache)``;
:func:`grade` runs your backward through :mod:`scratchnet.gradcheck` (finite
differences) and against the reference op in ``sn.ops``, and says which
gradient is wrong and where::

    import scratchnet as sn

    def dense_backward(dy, cache):
        x, w, b = cache
        return dy @ w.T, x.T @ dy, dy.sum(axis=0)

    report = sn.exercises.grade("dense", dense_backward)
    print(report)             # dense: passed: ...
    report.wrong              # [] here; ["dw"] when dw is wrong

The solutions are in :mod:`~scratchnet.exercises.solutions` (read them after
trying).
"""
from __future__ import annotations

from . import forward, solutions, stubs
from .grader import ExerciseError, Finding, GradeReport, get_exercise, grade
from .problems import EXERCISES

#: The exercise names :func:`grade` takes.
NAMES = tuple(EXERCISES)


def stub(name):
    """The stub of exercise ``name`` (raises ``NotImplementedError`` until you fill it in)."""
    return getattr(stubs, f"{get_exercise(name).name}_backward")


def solution(name):
    """The kept solution of exercise ``name``."""
    return getattr(solutions, f"{get_exercise(name).name}_backward")


__all__ = ["EXERCISES", "ExerciseError", "Finding", "GradeReport", "NAMES", "forward", "get_exercise", "grade", "solution",
           "solutions", "stub", "stubs"]
