"""Numba kernels for softmax cross-entropy with integer labels.

One pass per row computes the max, the exponentials and their sum, and
the loss, instead of NumPy's five full-size temporaries; for a language
model's (N*T, V) logits that is most of the loss's time. Float (distribution)
labels are rare and go to the reference kernels. Serial, like every kernel
here that runs between BLAS calls (see ``pooling_numba.py``): a Numba thread
pool made an MLP training step four times slower.
"""
from __future__ import annotations

import math

import numpy
from numba import njit


@njit(cache=True)
def _xent_forward_ids(logits, labels, losses, probs):
    """``probs = softmax(logits)`` and ``losses[m] = lse(logits[m]) - logits[m, labels[m]]``, row by row."""
    M, K = logits.shape
    for m in range(M):
        row_max = logits[m, 0]
        for k in range(1, K):
            if logits[m, k] > row_max:
                row_max = logits[m, k]
        # log-sum-exp around the row max: no exp overflows.
        total = 0.0
        for k in range(K):
            e = math.exp(logits[m, k] - row_max)
            probs[m, k] = e
            total += e
        inv = 1.0 / total
        for k in range(K):
            probs[m, k] *= inv
        losses[m] = math.log(total) - (logits[m, labels[m]] - row_max)


@njit(cache=True)
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
        _xent_forward_ids(numpy.ascontiguousarray(logits), labels, losses, probs)
        return losses, probs

    def softmax_xent_backward(self, probs, labels, scale):
        if labels.ndim != 1:
            return super().softmax_xent_backward(probs, labels, scale)
        dlogits = numpy.empty_like(probs)
        _xent_backward_ids(probs, labels, float(scale), dlogits)
        return dlogits
