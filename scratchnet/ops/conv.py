"""2-D convolution (NHWC input, HWIO kernel) as im2col + one GEMM.

The forward pass unrolls every receptive field of the input into one row of a
matrix (``im2col``), so that the convolution becomes a single matrix product
with the kernel reshaped to ``(kh*kw*C, O)``. The backward pass reuses the same
matrix: ``dW = cols.T @ dY`` and ``dX = col2im(dY @ W.T)``, where ``col2im``
is the adjoint of ``im2col`` (it adds every row back to the pixels it was
copied from, so overlapping windows sum).
"""
from __future__ import annotations

from .._checks import as_float_arrays, check_grad, check_padding, check_rank, pair
from ..backend import get_backend


class ConvKernels:
    """Reference kernels for conv2d: ``im2col`` and its adjoint ``col2im``."""

    def im2col(self, X, kh, kw, sh, sw, pads):
        """Unroll the (kh, kw) windows of ``X`` into rows.

        Parameters
        ----------
        X : array of shape (N, H, W, C)
        kh, kw : int
            Window height and width.
        sh, sw : int
            Strides along H and W.
        pads : tuple (top, bottom, left, right)
            Zero padding added around ``X`` first.

        Returns
        -------
        cols : array of shape (N*OH*OW, kh*kw*C)
            Row ``(n, oh, ow)`` holds the window whose top-left corner is at
            ``(oh*sh, ow*sw)`` of the padded input, in (kh, kw, C) order, so
            ``cols @ w.reshape(kh*kw*C, O)`` is the convolution with an HWIO ``w``.
        """
        xp = self.xp
        top, bottom, left, right = pads
        N, H, W, C = X.shape
        OH = (H + top + bottom - kh) // sh + 1
        OW = (W + left + right - kw) // sw + 1
        Xp = xp.pad(X, ((0, 0), (top, bottom), (left, right), (0, 0)))
        cols = xp.empty((N, OH, OW, kh, kw, C), dtype=X.dtype)
        # One strided slice per window offset: a loop over kh*kw, not over pixels.
        for i in range(kh):
            for j in range(kw):
                cols[:, :, :, i, j, :] = Xp[:, i : i + sh * OH : sh, j : j + sw * OW : sw, :]
        return cols.reshape(N * OH * OW, kh * kw * C)

    def col2im(self, cols, x_shape, kh, kw, sh, sw, pads):
        """The adjoint of :meth:`im2col`: add each row back onto its window.

        Parameters
        ----------
        cols : array of shape (N*OH*OW, kh*kw*C)
        x_shape : tuple (N, H, W, C)
            Shape of the unpadded input ``im2col`` was applied to.
        kh, kw, sh, sw, pads
            As for :meth:`im2col`.

        Returns
        -------
        dX : array of shape (N, H, W, C)
            Pixels covered by several windows receive the sum of their rows;
            the padding's share is dropped.
        """
        xp = self.xp
        top, bottom, left, right = pads
        N, H, W, C = x_shape
        OH = (H + top + bottom - kh) // sh + 1
        OW = (W + left + right - kw) // sw + 1
        cols = cols.reshape(N, OH, OW, kh, kw, C)
        dXp = xp.zeros((N, H + top + bottom, W + left + right, C), dtype=cols.dtype)
        for i in range(kh):
            for j in range(kw):
                dXp[:, i : i + sh * OH : sh, j : j + sw * OW : sw, :] += cols[:, :, :, i, j, :]
        return dXp[:, top : top + H, left : left + W, :]


def tf_padding(op, size, k, s, padding, axis="height", shapes=""):
    """Output size and padding along one axis, by TensorFlow's rule.

    ``SAME``: ``out = ceil(size / s)``; the ``max((out-1)*s + k - size, 0)``
    padded entries are split with the extra one at the end (bottom or right).
    ``VALID``: ``out = (size - k) // s + 1``, no padding; a window larger than
    the input is an error (``shapes`` is quoted in its message).

    Returns
    -------
    (out, before, after) : tuple of int
    """
    if padding == "SAME":
        out = -(-size // s)
        total = max((out - 1) * s + k - size, 0)
        return out, total // 2, total - total // 2
    if k > size:
        where = f" ({shapes})" if shapes else ""
        raise ValueError(
            f"{op}: the window {axis} {k} is larger than the input {axis} {size} under VALID padding{where}; "
            "use padding='SAME' or a smaller window"
        )
    return (size - k) // s + 1, 0, 0


def tf_padding_2d(op, x_shape, ksize, strides, padding, shapes=""):
    """:func:`tf_padding` for both spatial axes of an NHWC shape.

    Returns
    -------
    (OH, OW, pads) with ``pads = (top, bottom, left, right)``
    """
    _, H, W, _ = x_shape
    (kh, kw), (sh, sw) = ksize, strides
    OH, top, bottom = tf_padding(op, H, kh, sh, padding, "height", shapes)
    OW, left, right = tf_padding(op, W, kw, sw, padding, "width", shapes)
    return OH, OW, (top, bottom, left, right)


def conv2d(x, w, b=None, strides=1, padding="VALID"):
    """2-D cross-correlation, as ``tf.nn.conv2d`` computes it.

    Parameters
    ----------
    x : array of shape (N, H, W, C)
    w : array of shape (kh, kw, C, O)
        The kernel in TensorFlow's HWIO layout.
    b : array of shape (O,), optional
    strides : int or (sh, sw)
    padding : {"VALID", "SAME"}
        TensorFlow's rule: SAME gives ``OH = ceil(H / sh)`` with the odd padded
        row (column) at the bottom (right).

    Returns
    -------
    y : array of shape (N, OH, OW, O)
        ``y[n, oh, ow, o] = sum_{i, j, c} xpad[n, oh*sh + i, ow*sw + j, c] * w[i, j, c, o] + b[o]``
    backprop : callable
        ``backprop(dy) -> (dx, dw, db)``, ``db`` is ``None`` without a bias.
    """
    op = "conv2d"
    be = get_backend()
    X, Wt, b = as_float_arrays(op, be, x=x, w=w, b=b)
    check_rank(op, "x", X, 4, "[N, H, W, C]")
    check_rank(op, "w", Wt, 4, "[kh, kw, C, O]")
    kh, kw, C, O = Wt.shape
    if X.shape[3] != C:
        raise ValueError(
            f"{op}: x has {X.shape[3]} channels but w expects {C} (x: {tuple(X.shape)}, w: {tuple(Wt.shape)})"
        )
    if b is not None and tuple(b.shape) != (O,):
        raise ValueError(f"{op}: b must have shape ({O},) to match w {tuple(Wt.shape)}, got {tuple(b.shape)}")
    sh, sw = pair(op, "strides", strides)
    padding = check_padding(op, padding)
    N = X.shape[0]
    shapes = f"x: {tuple(X.shape)}, w: {tuple(Wt.shape)}"
    OH, OW, pads = tf_padding_2d(op, X.shape, (kh, kw), (sh, sw), padding, shapes)

    cols = be.im2col(X, kh, kw, sh, sw, pads)  # (N*OH*OW, kh*kw*C)
    W2 = Wt.reshape(kh * kw * C, O)
    Y = be.gemm(cols, W2)
    if b is not None:
        Y += b
    Y = Y.reshape(N, OH, OW, O)

    def backprop(dY):
        dY = check_grad(op, dY, Y, be)
        dY2 = dY.reshape(N * OH * OW, O)
        dW = be.gemm(cols, dY2, trans_a=True).reshape(Wt.shape)
        dX = be.col2im(be.gemm(dY2, W2, trans_b=True), X.shape, kh, kw, sh, sw, pads)
        db = dY2.sum(axis=0) if b is not None else None
        return dX, dW, db

    return Y, backprop
