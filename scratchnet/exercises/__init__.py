"""Graded exercises, in cs231n's style: write a backward pass, have it checked, then train with it.

Ten exercises. Nine are backward passes (each a function to fill in, in
:mod:`~scratchnet.exercises.stubs`); the tenth is a whole layer
(:mod:`~scratchnet.exercises.layer`):

==============  ==========================================================  =====================================
name            you write                                                   then train with it
==============  ==========================================================  =====================================
``dense``       ``dense_backward(dy, cache) -> (dx, dw, db)``               the MLP (``use("dense", ...)``)
``conv2d``      ``conv2d_backward(dy, cache) -> (dx, dw, db)``              LeNet (``use("conv2d", ...)``)
``max_pool``    ``max_pool_backward(dy, cache) -> dx``                      LeNet (``use("max_pool", ...)``)
``avg_pool``    ``avg_pool_backward(dy, cache) -> dx``                      ``AveragePooling2D`` layers
                                                                            (``use("avg_pool", ...)``)
``batch_norm``  ``batch_norm_backward(dy, cache) -> (dx, dgamma, dbeta)``   ``BatchNormalization`` layers
                                                                            (``use("batch_norm", ...)``)
``residual``    ``residual_backward(dy, cache) -> (dx, dw1, db1, dw2,       a stack of 30 blocks: the gradient
                db2)``                                                      that reaches the input (no op to swap)
``lstm_step``   ``lstm_step_backward(dh, dc, cache) -> (dx, dh_prev,        the row-by-row LSTM
                dc_prev, dkernel, drecurrent_kernel, dbias)``               (``use("lstm_step", ...)``)
``gru_step``    ``gru_step_backward(dh, cache) -> (dx, dh_prev, dkernel,    a GRU over the rows of MNIST digits
                drecurrent_kernel, dbias)``                                 (``use("gru_step", ...)``)
``attention``   ``attention_backward(dy, cache) -> (dq, dk, dv)``           the small Transformer character model
                                                                            (``use("attention", ...)``)
``rms_norm``    ``class RMSNormalization(sn.Layer)``: ``build`` and         any model you put it in
                ``call``
==============  ==========================================================  =====================================

The forwards (:mod:`~scratchnet.exercises.forward`) return ``(out, cache)``;
:func:`grade` runs your backward through :mod:`scratchnet.gradcheck` (finite
differences) and against the reference op in ``sn.ops``, and says which
gradient is wrong and where::

    import scratchnet as sn

    print(sn.exercises.grade("max_pool", sn.exercises.stub("max_pool")))
    # max_pool: not implemented yet: fill in max_pool_backward(dy, cache) -> dx

    report = sn.exercises.grade("max_pool", max_pool_backward)   # yours
    report.passed, report.wrong                                   # (False, ["dx"]) ...
    sn.exercises.grade("max_pool", max_pool_backward, hint=1)     # more help; hint=2: the formula

Once it passes, :func:`use` puts it into the engine, so that ``MaxPool2D``
layers (LeNet's) run on your code::

    with sn.exercises.use("max_pool", backward=max_pool_backward):
        ...  # train LeNet: the same curve as with the built-in op

Each exercise is a notebook to work in: ``scratchnet exercises max_pool``
copies it into the current folder and opens it
(:func:`~scratchnet.exercises.notebooks.write`).

The solutions are the teachers': they are not imported here, and no page
shows them. A teacher grades them with
``from scratchnet.exercises import solutions`` (docs/teaching.md).
"""
from __future__ import annotations

from . import forward, notebook, stubs
from .grader import ExerciseError, Finding, GradeReport, get_exercise, grade
from .layer import LAYER_EXERCISES, grade_layer
from .problems import EXERCISES
from .swap import Swap, use

#: The exercise names :func:`grade` takes (the backward passes), then the layer exercise's.
NAMES = tuple(EXERCISES)
LAYER_NAMES = tuple(LAYER_EXERCISES)


def stub(name):
    """The stub of exercise ``name`` (raises ``NotImplementedError`` until you fill it in)."""
    if name in LAYER_EXERCISES:
        return LAYER_EXERCISES[name].stub
    return getattr(stubs, f"{get_exercise(name).name}_backward")


__all__ = ["EXERCISES", "ExerciseError", "Finding", "GradeReport", "LAYER_NAMES", "NAMES", "Swap", "forward",
           "get_exercise", "grade", "grade_layer", "notebook", "stub", "stubs", "use"]
