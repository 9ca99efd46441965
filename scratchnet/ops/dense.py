"""Dense (fully connected) layer: ``y = x @ w + b``.

Notation::

    N   batch size
    C   input features
    K   output features (units)

Forward, in index form::

    y[n, k] = sum_c x[n, c] * w[c, k] + b[k]

Backward. Each output ``y[n, k]`` depends on ``x[n, c]`` through ``w[c, k]``,
on ``w[c, k]`` through ``x[n, c]`` and on ``b[k]`` with slope 1, so by the
chain rule, summing over every output that uses the input::

    dx[n, c] = sum_k dy[n, k] * w[c, k]       dx = dy @ w.T
    dw[c, k] = sum_n x[n, c] * dy[n, k]       dw = x.T @ dy
    db[k]    = sum_n dy[n, k]                 db = dy.sum(axis=0)
"""
from __future__ import annotations

from .._checks import as_float_arrays, check_grad, check_rank
from ..backend import get_backend
from ..recording import Cost, nbytes
from ..recording import op as recorded_op


class DenseReference:
    """Reference kernel for the dense op: the matrix product."""

    def gemm(self, A, B, trans_a=False, trans_b=False):
        """``op(A) @ op(B)``: a transpose is a view, the product one BLAS call."""
        if trans_a:
            A = A.T
        if trans_b:
            B = B.T
        return A @ B


def dense_cost(x, w, b=None):
    """FLOPs and bytes of :func:`dense`: a multiply-add is 2 FLOPs; forward one GEMM, backward two."""
    N, C = x.shape
    K = w.shape[1]
    y_bytes = N * K * x.dtype.itemsize
    return Cost(flops=2.0 * N * C * K + (N * K if b is not None else 0),
                bytes=nbytes(x, w, b) + y_bytes,
                backward_flops=4.0 * N * C * K + (N * K if b is not None else 0),
                backward_bytes=2 * nbytes(x, w, b) + 2 * y_bytes)


@recorded_op("dense", cost=dense_cost)
def dense(x, w, b=None):
    """Fully connected layer.

    Parameters
    ----------
    x : array of shape (N, C)
    w : array of shape (C, K)
    b : array of shape (K,), optional

    Returns
    -------
    y : array of shape (N, K)
        ``y = x @ w + b``
    backprop : callable
        ``backprop(dy) -> (dx, dw, db)`` with ``dx = dy @ w.T``,
        ``dw = x.T @ dy`` and ``db = sum_n dy[n]`` (``None`` without a bias);
        the module docstring derives them.
    """
    be = get_backend()
    x, w, b = as_float_arrays("dense", be, x=x, w=w, b=b)
    check_rank("dense", "x", x, 2, "[N, C]")
    check_rank("dense", "w", w, 2, "[C, K]")
    if x.shape[1] != w.shape[0]:
        raise ValueError(
            f"dense: x has {x.shape[1]} features but w expects {w.shape[0]} (x: {x.shape}, w: {w.shape})"
        )
    if b is not None and tuple(b.shape) != (w.shape[1],):
        raise ValueError(f"dense: b must have shape ({w.shape[1]},) to match w {w.shape}, got {b.shape}")
    y = be.gemm(x, w)
    if b is not None:
        y += b

    def backprop(dy):
        dy = check_grad("dense", dy, y, be)
        dx = be.gemm(dy, w, trans_b=True)  # dx[n, c] = sum_k dy[n, k] w[c, k]
        dw = be.gemm(x, dy, trans_a=True)  # dw[c, k] = sum_n x[n, c] dy[n, k]
        db = dy.sum(axis=0) if b is not None else None  # db[k] = sum_n dy[n, k]
        return dx, dw, db

    return y, backprop
