"""Numba kernels for softmax cross-entropy with integer labels.

Three passes per block of rows instead of NumPy's five full-size temporaries;
for a language model's (N*T, V) logits that is most of the loss's time.
The exponentials are NumPy's: a scalar ``exp`` in a Numba loop is a libm
call that LLVM does not vectorise (this Numba has no SVML), while
``numpy.exp`` over a whole block is SIMD code, so the Numba loops do only
the max, the sums and the logs around it. Float (distribution) labels are
rare: for them these functions return ``NotImplemented`` and the backend
runs the reference's. The rows are split between the cores
(``kernels/runtime/threads.py``) when there are many (a language model's N*T); a
Numba thread pool would instead fight BLAS's threads.
"""
from __future__ import annotations

import math

import numpy
from numba import njit

from ..runtime import threads

# Elements of logits a part should hold at least (three memory-bound passes).
MIN_PART_ELEMENTS = 1 << 17


@njit(cache=True, nogil=True)
def _shift_rows(logits, labels, losses, shifted):
    """``shifted[m] = logits[m] - max_k logits[m, k]``, and ``losses[m] = -shifted[m, labels[m]]`` (the start
    of ``lse(logits[m]) - logits[m, labels[m]]``): subtracting the row max keeps every exp at most 1."""
    M, K = logits.shape
    for m in range(M):
        row_max = logits[m, 0]
        for k in range(1, K):
            if logits[m, k] > row_max:
                row_max = logits[m, k]
        for k in range(K):
            shifted[m, k] = logits[m, k] - row_max
        losses[m] = -shifted[m, labels[m]]


@njit(cache=True, nogil=True)
def _normalize_rows(probs, losses):
    """``probs`` holds ``exp(shifted)``: divide each row by its sum, and add ``log(sum)`` to the loss."""
    M, K = probs.shape
    for m in range(M):
        total = 0.0  # float64: a sum of many terms
        for k in range(K):
            total += probs[m, k]
        inv = 1.0 / total
        for k in range(K):
            probs[m, k] *= inv
        losses[m] += math.log(total)


@njit(cache=True, nogil=True)
def _xent_backward_ids(probs, labels, scale, dlogits):
    """``dlogits = scale * (probs - onehot(labels))`` (derived in ``scratchnet/ops/losses.py``)."""
    M, K = probs.shape
    for m in range(M):
        for k in range(K):
            dlogits[m, k] = scale * probs[m, k]
        dlogits[m, labels[m]] -= scale


def softmax_cross_entropy_forward(logits, labels):
    """The contract's ``softmax_cross_entropy_forward`` for integer labels; ``NotImplemented`` for distributions."""
    if labels.ndim != 1:
        return NotImplemented
    M, K = logits.shape
    logits = numpy.ascontiguousarray(logits)
    losses = numpy.empty(M, dtype=logits.dtype)
    probs = numpy.empty((M, K), dtype=logits.dtype)

    def part(lo, hi):
        _shift_rows(logits[lo:hi], labels[lo:hi], losses[lo:hi], probs[lo:hi])
        numpy.exp(probs[lo:hi], out=probs[lo:hi])
        _normalize_rows(probs[lo:hi], losses[lo:hi])

    threads.split(part, M, threads.rows_for(K, MIN_PART_ELEMENTS))
    return losses, probs

def softmax_cross_entropy_backward(probs, labels, scale):
    """The contract's ``softmax_cross_entropy_backward`` for integer labels; ``NotImplemented`` for distributions."""
    if labels.ndim != 1:
        return NotImplemented
    dlogits = numpy.empty_like(probs)

    def part(lo, hi):
        _xent_backward_ids(probs[lo:hi], labels[lo:hi], float(scale), dlogits[lo:hi])

    threads.split(part, probs.shape[0], threads.rows_for(probs.shape[1], MIN_PART_ELEMENTS))
    return dlogits
