"""Numba kernels for softmax cross-entropy with integer labels.

Three passes per block of rows instead of NumPy's five full-size temporaries;
for a language model's (N*T, V) logits that is most of the loss's time.
The exponentials are NumPy's: a scalar ``exp`` in a Numba loop is a libm
call that LLVM does not vectorise (this Numba has no SVML), while
``numpy.exp`` over a whole block is SIMD code, so the Numba loops do only
the max, the sums and the logs around it. Float (distribution) labels are
rare and go to the reference kernels. Serial, like every kernel here that
runs between BLAS calls (see ``pooling_numba.py``): a Numba thread pool made
an MLP training step four times slower.
"""
from __future__ import annotations

import math

import numpy
from numba import njit


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


class LossNumba:
    """Overrides ``LossReference``: fused softmax cross-entropy for integer labels."""

    def softmax_xent_forward(self, logits, labels):
        if labels.ndim != 1:
            return super().softmax_xent_forward(logits, labels)
        M, K = logits.shape
        losses = numpy.empty(M, dtype=logits.dtype)
        probs = numpy.empty((M, K), dtype=logits.dtype)
        _shift_rows(numpy.ascontiguousarray(logits), labels, losses, probs)
        numpy.exp(probs, out=probs)
        _normalize_rows(probs, losses)
        return losses, probs

    def softmax_xent_backward(self, probs, labels, scale):
        if labels.ndim != 1:
            return super().softmax_xent_backward(probs, labels, scale)
        dlogits = numpy.empty_like(probs)
        _xent_backward_ids(probs, labels, float(scale), dlogits)
        return dlogits
