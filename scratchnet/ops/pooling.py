"""2-D max pooling (NHWC), with TensorFlow's padding and tie rules.

The forward pass records, for every output, where its maximum came from
(``argmax``), and the backward pass sends each output's gradient to that one
input position. Ties are common (after a ReLU, a whole window is often zero),
so which maximum wins is part of the contract: the FIRST one in row-major
window order, as TensorFlow does. Overlapping windows that share a winner add
their gradients there.
"""
from __future__ import annotations

from .._checks import as_float_arrays, check_grad, check_padding, check_rank, pair
from ..backend import get_backend
from .conv import conv_output_size, tf_padding_2d


class PoolKernels:
    """Reference kernels for max pooling."""

    def maxpool_forward(self, X, kh, kw, sh, sw, pads):
        """Max over (kh, kw) windows, and where each maximum is.

        Parameters
        ----------
        X : array of shape (N, H, W, C)
        kh, kw, sh, sw : int
            Window size and strides.
        pads : tuple (top, bottom, left, right)
            Padding positions belong to the windows but never win.

        Returns
        -------
        Y : array of shape (N, OH, OW, C)
        argmax : int64 array of shape (N, OH, OW, C)
            Flat index ``h*W + w`` in the unpadded input of the first maximum
            of each window, in row-major window order.
        """
        xp = self.xp
        top, bottom, left, right = pads
        N, H, W, C = X.shape
        OH, OW = conv_output_size(X.shape, kh, kw, sh, sw, pads)
        # The padded values are never read as candidates (``valid`` masks
        # them), so zero padding is as good as -inf and keeps -inf inputs exact.
        Xp = xp.pad(X, ((0, 0), (top, bottom), (left, right), (0, 0)))
        Y = xp.zeros((N, OH, OW, C), dtype=X.dtype)
        argmax = xp.full((N, OH, OW, C), -1, dtype=xp.int64)
        h0 = xp.arange(OH) * sh - top  # input row of each window's top edge
        w0 = xp.arange(OW) * sw - left
        # Visit the window offsets in row-major order; a later offset wins
        # only when strictly greater, so the first maximum is kept.
        for i in range(kh):
            h = h0 + i
            for j in range(kw):
                w = w0 + j
                valid = ((h >= 0) & (h < H))[:, None] & ((w >= 0) & (w < W))[None, :]  # (OH, OW)
                V = Xp[:, i : i + sh * OH : sh, j : j + sw * OW : sw, :]
                take = valid[None, :, :, None] & ((V > Y) | (argmax < 0))
                Y = xp.where(take, V, Y)
                argmax = xp.where(take, (h[:, None] * W + w[None, :])[None, :, :, None], argmax)
        return Y, argmax

    def maxpool_backward(self, dY, argmax, x_shape):
        """Scatter-add each output's gradient to its window's maximum.

        Parameters
        ----------
        dY : array of shape (N, OH, OW, C)
        argmax : int64 array of shape (N, OH, OW, C)
            From :meth:`maxpool_forward`.
        x_shape : tuple (N, H, W, C)

        Returns
        -------
        dX : array of shape (N, H, W, C)
        """
        xp = self.xp
        N, H, W, C = x_shape
        dX = xp.zeros((N, H * W, C), dtype=dY.dtype)
        n = xp.arange(N)[:, None, None, None]
        c = xp.arange(C)[None, None, None, :]
        # add.at, not ``dX[idx] += dY``: overlapping windows may share a
        # winner, and each of them must add its gradient.
        xp.add.at(dX, (n, argmax, c), dY)
        return dX.reshape(x_shape)


def max_pool2d(x, ksize, strides, padding="VALID"):
    """Max pooling, as ``tf.nn.max_pool2d`` computes it.

    Parameters
    ----------
    x : array of shape (N, H, W, C)
    ksize : int or (kh, kw)
    strides : int or (sh, sw)
    padding : {"VALID", "SAME"}
        TensorFlow's rule (see :func:`scratchnet.ops.conv.tf_padding`);
        padded positions never win.

    Returns
    -------
    y : array of shape (N, OH, OW, C)
        ``y[n, oh, ow, c] = max_{i, j} x[n, oh*sh + i - top, ow*sw + j - left, c]``
        over the positions inside the input.
    backprop : callable
        ``backprop(dy) -> dx``: each ``dy`` entry goes to the first maximum of
        its window (row-major order); overlapping windows add up.
    """
    op = "max_pool2d"
    be = get_backend()
    (X,) = as_float_arrays(op, be, x=x)
    check_rank(op, "x", X, 4, "[N, H, W, C]")
    kh, kw = pair(op, "ksize", ksize)
    sh, sw = pair(op, "strides", strides)
    padding = check_padding(op, padding)
    shapes = f"x: {tuple(X.shape)}, ksize: {(kh, kw)}"
    _, _, pads = tf_padding_2d(op, X.shape, (kh, kw), (sh, sw), padding, shapes)

    Y, argmax = be.maxpool_forward(X, kh, kw, sh, sw, pads)

    def backprop(dY):
        dY = check_grad(op, dY, Y, be)
        return be.maxpool_backward(dY, argmax, X.shape)

    return Y, backprop
