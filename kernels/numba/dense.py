"""Numba kernels for the dense op: the GEMMs stay in BLAS; the bias, the ReLU and their backward are fused passes.

Forward: ``y = x @ w`` in BLAS, then one pass over ``y`` adds the bias and
applies the ReLU (``_bias_relu``) while ``y`` is still in cache, where the
reference makes a pass for ``y += b`` and two more for ``maximum(y, 0)`` (a
new array). Backward: one pass over ``dy`` applies ReLU's mask (``y > 0``) and
sums the bias gradient (``_mask_and_sum``); then ``dx = g @ w.T`` (skipped
with ``need_dx=False``) and ``dw = x.T @ g`` in BLAS.

The two epilogue kernels serve ``conv.py`` and ``winograd.py`` too, on each chunk of a
convolution's output (a (rows, O) block is a (rows, K) block here).

The split between the cores cuts the larger operand, so that each core reads only its share of it
and the whole of the smaller one (single-threaded BLAS per part, ``kernels/runtime/threads.py``):

- weights larger than the batch (LeNet's 3136 x 512 at batch 100): each core takes a block of
  ``w``'s rows, forward ``x[:, c0:c1] @ w[c0:c1]`` (the parts' partial products added in part
  order, the last one in the epilogue's pass) and backward ``dx[:, c0:c1] = g @ w[c0:c1].T`` and
  ``dw[c0:c1] = x.T[c0:c1] @ g``. Each core reads, and the optimizer's split update later
  writes, the same half of ``w``, so ``w``'s lines stay in one core's cache;
- a batch larger than the weights (a language model's 5,000 positions by 128 x 103): each core
  takes a block of rows, ``y[r0:r1] = x[r0:r1] @ w``, ``dx[r0:r1] = g[r0:r1] @ w.T``, and its own
  ``x[r0:r1].T @ g[r0:r1]``, the parts' weight gradients added at the end.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..runtime import blas, threads

# A float32 zero keeps float32 arithmetic in float32; with float64 arrays it promotes exactly.
_ZERO = np.float32(0)


@njit(cache=True, nogil=True)
def _bias_relu(y, b, relu):
    """The forward epilogue, in place on a (rows, O) block: ``y += b``, then ``y = max(y, 0)`` when ``relu``."""
    rows, O = y.shape
    for r in range(rows):
        for o in range(O):
            v = y[r, o] + b[o]
            # ``v < 0``, not ``v > 0``: a NaN stays NaN, as numpy.maximum keeps it.
            y[r, o] = _ZERO if relu and v < _ZERO else v


@njit(cache=True, nogil=True)
def _add_bias_relu(y, other, b, relu):
    """:func:`_bias_relu` after ``y += other`` (a second part's partial product), in one pass."""
    rows, O = y.shape
    for r in range(rows):
        for o in range(O):
            v = (y[r, o] + other[r, o]) + b[o]
            y[r, o] = _ZERO if relu and v < _ZERO else v


@njit(cache=True, nogil=True)
def _mask_and_sum(dy, y, relu, g, db):
    """The backward epilogue of :func:`_bias_relu` on a (rows, O) block:
    ``g = dy * (y > 0)`` (``dy`` itself without ``relu``), and ``db += sum_rows g`` (float64)."""
    rows, O = dy.shape
    for r in range(rows):
        for o in range(O):
            v = dy[r, o]
            if relu:
                v = v if y[r, o] > _ZERO else _ZERO
                g[r, o] = v
            db[o] += v


def gemm(A, B, trans_a=False, trans_b=False):
    """``op(A) @ op(B)`` as :func:`threads.matmul`: split between the cores, single-threaded BLAS.

    Never OpenBLAS's own thread pool: its threads spin for a while after
    each call, on the cores the next split wants.
    """
    return threads.matmul(A.T if trans_a else A, B.T if trans_b else B)


def dense_forward(x, w, b, relu=False):
    """The contract's ``dense_forward``: ``x @ w`` in BLAS, split between the cores, then the fused epilogue."""
    N, C = x.shape
    K = w.shape[1]
    y = np.empty((N, K), dtype=x.dtype)
    epilogue = relu or b is not None
    bias = np.zeros(K, dtype=x.dtype) if b is None else np.ascontiguousarray(b)
    if _by_rows(x, w):
        def part(r0, r1):
            blas.matmul(x[r0:r1], w, out=y[r0:r1])
            if epilogue:
                _bias_relu(y[r0:r1], bias, relu)  # while the block of y is still in cache

        threads.split(part, N, threads.rows_for(C * K))
        return y

    def part(c0, c1):
        # this part's rows of w: its share of y = sum over c of x[:, c] w[c]
        return blas.matmul(x[:, c0:c1], w[c0:c1], out=y if c0 == 0 else None)

    partials = threads.split(part, C, threads.rows_for(N * K))
    for other in partials[1:-1]:
        y += other
    if len(partials) > 1:
        _add_bias_relu(y, partials[-1], bias, relu)
    elif epilogue:
        _bias_relu(y, bias, relu)
    return y


def dense_backward(dy, x, w, y, relu=False, need_dx=True):
    """The contract's ``dense_backward``: the ReLU's mask and ``db`` in one pass, then the GEMMs."""
    N, C = x.shape
    K = w.shape[1]
    dy = np.ascontiguousarray(dy)
    y = np.ascontiguousarray(y) if relu else dy
    dx = np.empty((N, C), dtype=x.dtype) if need_dx else None
    if _by_rows(x, w):
        def part(r0, r1):
            g = np.empty((r1 - r0, K), dtype=dy.dtype) if relu else dy[r0:r1]
            db = np.zeros(K)
            _mask_and_sum(dy[r0:r1], y[r0:r1], relu, g, db)
            if need_dx:
                blas.matmul(g, w.T, out=dx[r0:r1])  # dx[n, c] = sum_k g[n, k] w[c, k]
            return blas.matmul(x[r0:r1].T, g), db  # this part's share of dw[c, k] = sum_n x[n, c] g[n, k]

        results = threads.split(part, N, threads.rows_for(C * K * (2 if need_dx else 1)))
        dw, db = results[0]
        for part_dw, part_db in results[1:]:
            dw += part_dw
            db += part_db
        return dx, dw, db.astype(dy.dtype)

    g = np.empty_like(dy) if relu else dy
    db = np.zeros(K)
    _mask_and_sum(dy, y, relu, g, db)
    dw = np.empty(w.shape, dtype=x.dtype)

    def part(c0, c1):
        if need_dx:
            blas.matmul(g, w[c0:c1].T, out=dx[:, c0:c1])  # dx[n, c] = sum_k g[n, k] w[c, k]
        # x's column block, transposed in place: BLAS reads it as it lies (no contiguous copy of x.T first).
        blas.matmul(x[:, c0:c1].T, g, out=dw[c0:c1])  # dw[c, k] = sum_n x[n, c] g[n, k]

    threads.split(part, C, threads.rows_for(N * K * (2 if need_dx else 1)))
    return dx, dw, db.astype(dy.dtype)


def _by_rows(x, w):
    """Split the batch's rows (rather than ``w``'s columns) when the batch is the larger operand."""
    return x.shape[0] * x.shape[1] > w.shape[0] * w.shape[1]
