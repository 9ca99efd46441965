"""The backward-pass exercises: what each backward receives and returns, the cases it is graded on, and its reference.

An :class:`Exercise` turns a learner's ``backward(dout, cache)`` (and,
optionally, their ``forward``) into an op in scratchnet's ``(y, backprop)``
form, with named inputs (``x``, ``w``, ...), so that
:mod:`scratchnet.gradcheck` can check it; its reference is the same
computation through ``sn.ops``. Gradients are named after their input with a
``d`` in front (``dw`` for ``w``).

Hints come in three levels, a tuple ``(nudge, closer, formula)``: the report
shows the nudge, and ``grade(..., hint=1)`` or ``hint=2`` the others. A
teacher adding an exercise writes them in that order; the formula is never
shown unless asked for (docs/teaching.md).

An exercise may also list the mistakes students make (each a :class:`Mistake`),
each recognized from the gradients it produces (the GRU's forgotten direct path
into ``dh_prev``, attention's missing ``1/sqrt(d)``): when one fits, the report
names it, with its own three hint levels.

One module per exercise, named after it (``problems/NAME.py``, as
``docs/exercises/NAME.md`` and ``notebooks/NAME.ipynb``), holds its op, its
reference, its cases, its hints and its known mistakes; ``problems/base.py``
the classes they are made of. This package collects them: a new exercise is a
new module, and a line in :data:`EXERCISES`.
"""
from __future__ import annotations

from .attention import ATTENTION
from .avg_pool import AVG_POOL
from .base import Case, Evidence, Exercise, Mistake
from .batch_norm import BATCH_NORM
from .conv2d import CONV2D
from .dense import DENSE
from .gru_step import GRU_STEP
from .lstm_step import LSTM_STEP
from .lstm_step import UPSTREAM_HINTS as _LSTM_UPSTREAM_HINTS
from .max_pool import MAX_POOL
from .residual import RESIDUAL

#: The exercises by name.
EXERCISES = {e.name: e for e in (DENSE, CONV2D, MAX_POOL, AVG_POOL, BATCH_NORM, RESIDUAL, LSTM_STEP, GRU_STEP,
                                       ATTENTION)}
#: Other names :func:`scratchnet.exercises.grade` accepts.
ALIASES = {"conv": "conv2d", "max_pool2d": "max_pool", "maxpool": "max_pool", "pool": "max_pool",
           "lstm": "lstm_step", "lstm_cell": "lstm_step", "gru": "gru_step", "gru_cell": "gru_step",
           "scaled_dot_product_attention": "attention", "avg_pool2d": "avg_pool", "avgpool": "avg_pool",
           "average_pool": "avg_pool", "batchnorm": "batch_norm", "batch_normalization": "batch_norm",
           "residual_block": "residual", "skip_connection": "residual"}

#: What the incoming gradient of each output of a multi-output step carries, for the diagnosis of a wrong path,
#: by (exercise, incoming gradient): each such exercise's module defines its own.
UPSTREAM_HINTS = {**_LSTM_UPSTREAM_HINTS}

__all__ = ["ALIASES", "ATTENTION", "AVG_POOL", "BATCH_NORM", "CONV2D", "Case", "DENSE", "EXERCISES", "Evidence", "Exercise", "GRU_STEP",
           "LSTM_STEP", "MAX_POOL", "Mistake", "RESIDUAL", "UPSTREAM_HINTS"]
