"""The 2-D max-pool's backward, ties included: ``max_pool_backward(dy, cache) -> dx``."""
from __future__ import annotations

import numpy as np

from ... import ops
from .. import forward
from .base import Case, Exercise, _normal


def _pool_op(backward, ksize, strides, padding, forward_pass=forward.max_pool_forward):
    def max_pool(x):
        y, cache = forward_pass(x, ksize, strides, padding)
        return y, lambda dy: backward(dy, cache)

    return max_pool


def _pool_reference(ksize, strides, padding):
    def max_pool(x):
        return ops.max_pool2d(x, ksize, strides, padding)

    return max_pool


def _tied(rng, *shape):
    """Small integers after a ReLU: whole windows of zeros, and equal maxima elsewhere."""
    return np.maximum(rng.integers(-2, 3, size=shape), 0).astype(np.float64)


MAX_POOL = Exercise(
    name="max_pool", title="2-D max pooling",
    inputs=("x",), outputs=("y",),
    make_op=_pool_op, make_reference=_pool_reference, forward=forward.max_pool_forward,
    cases=(
        Case("2x2 window, stride 2, VALID, no ties", lambda rng: (_normal(rng, 2, 6, 6, 3),),
             dict(ksize=2, strides=2, padding="VALID")),
        Case("3x3 window, stride 2, SAME on 7x7 (overlapping windows)", lambda rng: (_normal(rng, 2, 7, 7, 2),),
             dict(ksize=3, strides=2, padding="SAME"),
             hint=("these windows overlap: can one input win two of them?",
                   "an input that wins two overlapping windows receives the sum of both gradients (+=, not =)")),
        Case("2x2 window, stride 2, SAME on 5x5, with ties (zeros after a ReLU, equal maxima)",
             lambda rng: (_tied(rng, 2, 5, 5, 2),), dict(ksize=2, strides=2, padding="SAME"), ties=True,
             hint=("the stub's Notes state the tie rule: at a tie the whole gradient goes to the FIRST maximum in "
                   "row-major window order (smallest i, then smallest j), as TensorFlow does; never split, never the last",
                   "np.argmax returns the first maximum of a flattened window")),
        Case("3x3 window, stride 1, VALID, with ties (overlapping)", lambda rng: (_tied(rng, 1, 5, 6, 2),),
             dict(ksize=3, strides=1, padding="VALID"), ties=True, finite_differences=False,
             hint=("the FIRST maximum of each window, and overlapping windows add up",)),
    ),
    hints={"dx": ("each dy entry goes, whole, to the one input that won its window; every other input gets nothing "
                  "from that window",
                  "loop over the output positions (oh, ow); the window is a slice of x, clipped at the edges "
                  "(padded positions never win)",
                  "dx[n, ih, iw, c] = sum of dy[n, oh, ow, c] over the windows whose (first) maximum is "
                  "x[n, ih, iw, c]")},
)
