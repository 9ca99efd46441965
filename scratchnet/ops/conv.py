"""2-D convolution (NHWC input, HWIO kernel) as im2col + one GEMM.

The forward pass unrolls every receptive field of the input into one row of a
matrix (``im2col``), so that the convolution becomes a single matrix product
with the kernel reshaped to ``(kh*kw*C, O)``. The backward pass uses the same
matrix: ``dW = cols.T @ dY`` and ``dX = col2im(dY @ W.T)``, where ``col2im``
is the adjoint of ``im2col`` (it adds every row back to the pixels it was
copied from, so overlapping windows sum).

The whole forward and backward are backend kernels (``conv2d_forward``,
``conv2d_backward``), so a CPU backend can run them a few images at a time,
with an im2col matrix that stays in cache (``kernels/conv_numba.py``).
"""
from __future__ import annotations

from .._checks import as_float_arrays, check_grad, check_padding, check_rank, pair
from ..backend import get_backend


def conv_output_size(x_shape, kh, kw, sh, sw, pads):
    """``(OH, OW)`` of a (kh, kw) window with strides (sh, sw) over padded ``x_shape`` (N, H, W, C)."""
    top, bottom, left, right = pads
    _, H, W, _ = x_shape
    return (H + top + bottom - kh) // sh + 1, (W + left + right - kw) // sw + 1


class ConvKernels:
    """Reference kernels for conv2d: the whole forward and backward, and the
    ``im2col`` / ``col2im`` pair they are built on."""

    def conv2d_forward(self, X, W, b, sh, sw, pads):
        """The convolution as one GEMM: ``Y = im2col(X) @ W + b``.

        Parameters
        ----------
        X : array of shape (N, H, W, C)
        W : array of shape (kh, kw, C, O)
        b : array of shape (O,), or None
        sh, sw : int
            Strides.
        pads : tuple (top, bottom, left, right)

        Returns
        -------
        Y : array of shape (N, OH, OW, O)
        """
        kh, kw, C, O = W.shape
        OH, OW = conv_output_size(X.shape, kh, kw, sh, sw, pads)
        cols = self.im2col(X, kh, kw, sh, sw, pads)  # (N*OH*OW, kh*kw*C)
        Y = self.gemm(cols, W.reshape(kh * kw * C, O))
        if b is not None:
            Y += b
        return Y.reshape(X.shape[0], OH, OW, O)

    def conv2d_backward(self, dY, X, W, sh, sw, pads):
        """Gradients of :meth:`conv2d_forward` with respect to ``X`` and ``W``.

        ``dW = cols.T @ dY`` and ``dX = col2im(dY @ W.T)``. The im2col matrix
        is built again rather than kept from the forward pass: it is a copy,
        cheap next to the GEMMs, and keeping it would hold kh*kw times the
        input's memory from the forward pass to the backward.

        Parameters
        ----------
        dY : array of shape (N, OH, OW, O)
        X, W, sh, sw, pads
            As for :meth:`conv2d_forward`.

        Returns
        -------
        dX : array of shape (N, H, W, C)
        dW : array of shape (kh, kw, C, O)
        """
        kh, kw, C, O = W.shape
        cols = self.im2col(X, kh, kw, sh, sw, pads)
        dY2 = dY.reshape(-1, O)
        dW = self.gemm(cols, dY2, trans_a=True).reshape(W.shape)
        dX = self.col2im(self.gemm(dY2, W.reshape(kh * kw * C, O), trans_b=True), X.shape, kh, kw, sh, sw, pads)
        return dX, dW

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
        OH, OW = conv_output_size(X.shape, kh, kw, sh, sw, pads)
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
        OH, OW = conv_output_size(x_shape, kh, kw, sh, sw, pads)
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
    if min(Wt.shape) < 1:
        raise ValueError(f"{op}: w must have no empty dimension, got w: {tuple(Wt.shape)}")
    if X.shape[3] != C:
        raise ValueError(
            f"{op}: x has {X.shape[3]} channels but w expects {C} (x: {tuple(X.shape)}, w: {tuple(Wt.shape)})"
        )
    if b is not None and tuple(b.shape) != (O,):
        raise ValueError(f"{op}: b must have shape ({O},) to match w {tuple(Wt.shape)}, got {tuple(b.shape)}")
    sh, sw = pair(op, "strides", strides)
    padding = check_padding(op, padding)
    shapes = f"x: {tuple(X.shape)}, w: {tuple(Wt.shape)}"
    _, _, pads = tf_padding_2d(op, X.shape, (kh, kw), (sh, sw), padding, shapes)

    Y = be.conv2d_forward(X, Wt, b, sh, sw, pads)

    def backprop(dY):
        dY = check_grad(op, dY, Y, be)
        dX, dW = be.conv2d_backward(dY, X, Wt, sh, sw, pads)
        db = dY.reshape(-1, O).sum(axis=0) if b is not None else None
        return dX, dW, db

    return Y, backprop
