"""Dense (fully connected) layer: ``Y = X @ W + b``."""
from __future__ import annotations

from .._checks import as_float_arrays, check_grad, check_rank
from ..backend import get_backend


class DenseKernels:
    """Reference kernels for the dense op."""

    def gemm(self, A, B, trans_a=False, trans_b=False):
        """``op(A) @ op(B)`` where ``op`` transposes when asked.

        A: (M, K) or (K, M) when ``trans_a``; B: (K, N) or (N, K) when ``trans_b``.
        """
        if trans_a:
            A = A.T
        if trans_b:
            B = B.T
        return A @ B


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
        ``dw = x.T @ dy`` and ``db = sum_n dy[n]`` (``None`` without a bias).
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
    Y = be.gemm(x, w)
    if b is not None:
        Y += b

    def backprop(dY):
        dY = check_grad("dense", dY, Y, be)
        dX = be.gemm(dY, w, trans_b=True)
        dW = be.gemm(x, dY, trans_a=True)
        db = dY.sum(axis=0) if b is not None else None
        return dX, dW, db

    return Y, backprop
