"""The dense layer's backward: ``dense_backward(dy, cache) -> (dx, dw, db)``."""
from __future__ import annotations

from ... import ops
from .. import forward
from .base import Case, Exercise, _normal


def _dense_op(backward, forward_pass=forward.dense_forward):
    def dense(x, w, b):
        y, cache = forward_pass(x, w, b)
        return y, lambda dy: backward(dy, cache)

    return dense


def _dense_reference():
    def dense(x, w, b):
        return ops.dense(x, w, b)

    return dense


DENSE = Exercise(
    name="dense", title="Dense layer: y = x @ w + b",
    inputs=("x", "w", "b"), outputs=("y",),
    make_op=_dense_op, make_reference=_dense_reference, forward=forward.dense_forward,
    cases=(
        Case("N=4, C=5, K=3", lambda rng: (_normal(rng, 4, 5), _normal(rng, 5, 3), _normal(rng, 3))),
        Case("N=1, C=2, K=6", lambda rng: (_normal(rng, 1, 2), _normal(rng, 2, 6), _normal(rng, 6))),
    ),
    hints={
        "dx": ("x[n, c] reaches every output y[n, k] of its own example n: which slope does each path have?",
               "the slope of y[n, k] with respect to x[n, c] is w[c, k]; add up over k",
               "dx[n, c] = sum_k dy[n, k] w[c, k]"),
        "dw": ("w[c, k] is used by every example in the batch: what happens to the gradients of all of them?",
               "the slope of y[n, k] with respect to w[c, k] is x[n, c], for every n",
               "dw[c, k] = sum_n x[n, c] dy[n, k]: the sum runs over the batch"),
        "db": ("b[k] is added to y[n, k] for every example n",
               "the slope of y[n, k] with respect to b[k] is 1, for every n",
               "db[k] = sum_n dy[n, k]: every example's output uses b"),
    },
)
