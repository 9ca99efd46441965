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

With ``activation="relu"`` the op returns ``max(y, 0)``, fused into the
kernel's epilogue, and its backward first multiplies ``dy`` by ``y > 0``
(ReLU's derivative, ``activations.py``). ``need_dx=False`` skips ``dx`` (a
model's first layer: its input is data) and ``backprop`` returns ``None`` for it.
"""
from __future__ import annotations

from .._checks import as_float_arrays, check_grad, check_rank
from ..backend import get_backend
from ..recording import Cost, nbytes
from ..recording import op as recorded_op
from .activations import check_fused_activation


class DenseReference:
    """Reference kernels for the dense op: the matrix product, and the op's forward and backward."""

    def gemm(self, A, B, trans_a=False, trans_b=False):
        """``op(A) @ op(B)``: a transpose is a view, the product one BLAS call."""
        if trans_a:
            A = A.T
        if trans_b:
            B = B.T
        return A @ B

    def dense_forward(self, x, w, b, relu=False):
        """``y = x @ w + b``, then ``max(y, 0)`` when ``relu``."""
        y = self.gemm(x, w)
        if b is not None:
            y += b
        return self.xp.maximum(y, 0) if relu else y

    def dense_backward(self, dy, x, w, y, relu=False, need_dx=True):
        """``g = dy * (y > 0)`` after a ReLU (else ``dy``); ``dx = g @ w.T``, ``dw = x.T @ g``, ``db = sum_n g``."""
        g = dy * (y > 0) if relu else dy
        dx = self.gemm(g, w, trans_b=True) if need_dx else None  # dx[n, c] = sum_k g[n, k] w[c, k]
        dw = self.gemm(x, g, trans_a=True)  # dw[c, k] = sum_n x[n, c] g[n, k]
        return dx, dw, g.sum(axis=0)  # db[k] = sum_n g[n, k]


def dense_cost(x, w, b=None, activation=None, need_dx=True):
    """FLOPs and bytes of :func:`dense`: a multiply-add is 2 FLOPs; forward one GEMM, backward two (one without dx)."""
    N, C = x.shape
    K = w.shape[1]
    y_bytes = N * K * x.dtype.itemsize
    return Cost(flops=2.0 * N * C * K + (N * K if b is not None else 0),
                bytes=nbytes(x, w, b) + y_bytes,
                backward_flops=(4.0 if need_dx else 2.0) * N * C * K + (N * K if b is not None else 0),
                backward_bytes=(2 if need_dx else 1) * nbytes(x) + 2 * nbytes(w, b) + 2 * y_bytes)


@recorded_op("dense", cost=dense_cost)
def dense(x, w, b=None, activation=None, need_dx=True):
    """Fully connected layer.

    Parameters
    ----------
    x : array of shape (N, C)
    w : array of shape (C, K)
    b : array of shape (K,), optional
    activation : {None, "relu"}
        ``"relu"`` returns ``max(y, 0)``, fused into the kernel.
    need_dx : bool
        False when nobody wants the input's gradient (``backprop`` then returns
        ``None`` for ``dx`` and skips its GEMM).

    Returns
    -------
    y : array of shape (N, K)
        ``y = x @ w + b`` (then ``max(y, 0)`` for ``activation="relu"``)
    backprop : callable
        ``backprop(dy) -> (dx, dw, db)`` with ``dx = dy @ w.T``,
        ``dw = x.T @ dy`` and ``db = sum_n dy[n]`` (``None`` without a bias);
        the module docstring derives them. After a ReLU, ``dy`` is first
        multiplied by ``y > 0``.
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
    relu = check_fused_activation("dense", activation)
    y = be.dense_forward(x, w, b, relu)

    def backprop(dy):
        dy = check_grad("dense", dy, y, be)
        dx, dw, db = be.dense_backward(dy, x, w, y, relu, bool(need_dx))
        return dx, dw, (db if b is not None else None)

    return y, backprop
