"""The forward passes the exercises give you, cs231n style: ``out, cache = <op>_forward(...)``.

Each exercise asks for the matching ``<op>_backward(dout, cache)``: the
gradients of the forward's inputs, given the gradient ``dout`` of its output
and the ``cache`` the forward kept. The forwards compute exactly what
``sn.ops`` computes (the grader compares your backward with the op's), in
plain NumPy, float64 throughout.

Also here, for the convolution: :func:`im2col` and its adjoint :func:`col2im`
(the reference kernels of ``scratchnet/ops/conv.py``), which your
``conv2d_backward`` may use, or not.
"""
from __future__ import annotations

import numpy as np

from .._checks import pair
from ..ops.reference import ReferenceOps
from ..ops.shapes import tf_padding_2d

_REFERENCE = ReferenceOps()


def dense_forward(x, w, b):
    """``y = x @ w + b``.

    Parameters
    ----------
    x : ndarray of shape (N, C)
    w : ndarray of shape (C, K)
    b : ndarray of shape (K,)

    Returns
    -------
    y : ndarray of shape (N, K)
    cache : tuple
        ``(x, w, b)``
    """
    return x @ w + b, (x, w, b)


def window_geometry(op, x_shape, ksize, strides, padding):
    """``(kh, kw), (sh, sw), pads``: a window's size, its strides and TensorFlow's padding ``(top, bottom, left, right)``."""
    kh, kw = pair(op, "ksize", ksize)
    sh, sw = pair(op, "strides", strides)
    _, _, pads = tf_padding_2d(op, x_shape, (kh, kw), (sh, sw), padding.upper())
    return (kh, kw), (sh, sw), pads


def im2col(x, kh, kw, sh, sw, pads):
    """``cols[(n, oh, ow), (i, j, c)] = xpad[n, oh*sh + i, ow*sw + j, c]``: one row per output position.

    Parameters
    ----------
    x : ndarray of shape (N, H, W, C)
    kh, kw : int
        The window.
    sh, sw : int
        The strides.
    pads : tuple of int
        ``(top, bottom, left, right)``

    Returns
    -------
    ndarray of shape (N*OH*OW, kh*kw*C)
    """
    return _REFERENCE.im2col(x, kh, kw, sh, sw, pads)


def col2im(cols, x_shape, kh, kw, sh, sw, pads):
    """The adjoint of :func:`im2col`: every row added back onto the pixels it was copied from (overlaps sum).

    Parameters
    ----------
    cols : ndarray of shape (N*OH*OW, kh*kw*C)
    x_shape : tuple of int
        ``(N, H, W, C)``, the shape of the image :func:`im2col` read.
    kh, kw, sh, sw, pads
        As for :func:`im2col`.

    Returns
    -------
    ndarray of shape x_shape
    """
    return _REFERENCE.col2im(cols, x_shape, kh, kw, sh, sw, pads)


def conv2d_forward(x, w, b, strides=1, padding="VALID"):
    """``y[n, oh, ow, o] = sum_{i, j, c} xpad[n, oh*sh + i, ow*sw + j, c] * w[i, j, c, o] + b[o]``.

    Parameters
    ----------
    x : ndarray of shape (N, H, W, C)
    w : ndarray of shape (kh, kw, C, O)
    b : ndarray of shape (O,)
    strides : int or (sh, sw)
    padding : {"VALID", "SAME"}
        TensorFlow's rule; SAME puts the odd padded row (column) at the bottom (right).

    Returns
    -------
    y : ndarray of shape (N, OH, OW, O)
    cache : tuple
        ``(x, w, b, (sh, sw), pads)`` with ``pads = (top, bottom, left, right)``.
    """
    kh, kw, C, O = w.shape
    _, (sh, sw), pads = window_geometry("conv2d", x.shape, (kh, kw), strides, padding)
    cols = im2col(x, kh, kw, sh, sw, pads)
    top, bottom, left, right = pads
    OH = (x.shape[1] + top + bottom - kh) // sh + 1
    OW = (x.shape[2] + left + right - kw) // sw + 1
    y = (cols @ w.reshape(kh * kw * C, O) + b).reshape(x.shape[0], OH, OW, O)
    return y, (x, w, b, (sh, sw), pads)


def max_pool_forward(x, ksize, strides, padding="VALID"):
    """``y[n, oh, ow, c] = max_{i, j} x[n, oh*sh + i - top, ow*sw + j - left, c]`` over the window's positions inside x.

    Parameters
    ----------
    x : ndarray of shape (N, H, W, C)
    ksize : int or (kh, kw)
    strides : int or (sh, sw)
    padding : {"VALID", "SAME"}
        Padded positions are never candidates.

    Returns
    -------
    y : ndarray of shape (N, OH, OW, C)
    cache : tuple
        ``(x, (kh, kw), (sh, sw), pads, y)``: not where each maximum was; finding it is part of the exercise.
    """
    (kh, kw), (sh, sw), pads = window_geometry("max_pool2d", x.shape, ksize, strides, padding)
    y, _ = _REFERENCE.max_pool2d_forward(x, kh, kw, sh, sw, pads)
    return y, (x, (kh, kw), (sh, sw), pads, y)


def avg_pool_forward(x, ksize, strides, padding="VALID"):
    """``y[n, oh, ow, c] = mean of x[n, oh*sh + i - top, ow*sw + j - left, c]`` over the window's positions inside x.

    Parameters
    ----------
    x : ndarray of shape (N, H, W, C)
    ksize : int or (kh, kw)
    strides : int or (sh, sw)
    padding : {"VALID", "SAME"}
        Padded positions are not counted: a SAME border window with 4 of its
        9 cells inside x divides by 4 (TensorFlow's rule).

    Returns
    -------
    y : ndarray of shape (N, OH, OW, C)
    cache : tuple
        ``(x, (kh, kw), (sh, sw), pads)``: not how many cells each window counted; that is part of the exercise.
    """
    (kh, kw), (sh, sw), pads = window_geometry("avg_pool2d", x.shape, ksize, strides, padding)
    return _REFERENCE.avg_pool2d_forward(x, kh, kw, sh, sw, pads), (x, (kh, kw), (sh, sw), pads)


def batch_norm_forward(x, gamma, beta, epsilon=1e-3):
    """Batch normalization in training mode, channels last, numbered as in ``scratchnet/ops/normalization.py``.

    ::

        1: mu   = mean of x over every axis but the last       (C,): one per channel
           var  = mean of (x - mu)**2 over the same axes        the biased variance
        2: s    = 1 / sqrt(var + epsilon)                       the inverse standard deviation
           xhat = (x - mu) * s
        3: y    = gamma * xhat + beta

    Parameters
    ----------
    x : ndarray of shape (N, C) or (N, H, W, C)
        At least two values per channel.
    gamma, beta : ndarray of shape (C,)
    epsilon : float

    Returns
    -------
    y : ndarray of x's shape
    cache : tuple
        ``(x, xhat, s, gamma)``: ``xhat`` of x's shape, ``s`` of shape (C,).
    """
    axes = tuple(range(x.ndim - 1))
    mu = x.mean(axis=axes)  # 1
    var = ((x - mu) ** 2).mean(axis=axes)
    s = 1 / np.sqrt(var + epsilon)  # 2
    xhat = (x - mu) * s
    return gamma * xhat + beta, (x, xhat, s, gamma)  # 3


def sigmoid(z):
    """``1 / (1 + exp(-z))`` without overflow."""
    return _REFERENCE.sigmoid(z)


def lstm_step_forward(x, h_prev, c_prev, kernel, recurrent_kernel, bias):
    """One LSTM time step, numbered as in ``scratchnet/ops/lstm.py``.

    ::

        1: z = x @ kernel + h_prev @ recurrent_kernel + bias          (N, 4H), blocks i, f, g, o
        2: i = sigmoid(z_i), f = sigmoid(z_f), g = tanh(z_g), o = sigmoid(z_o)
        3: c = f * c_prev + i * g
        4: h = o * tanh(c)

    Parameters
    ----------
    x : ndarray of shape (N, D)
    h_prev, c_prev : ndarray of shape (N, H)
    kernel : ndarray of shape (D, 4H)
    recurrent_kernel : ndarray of shape (H, 4H)
    bias : ndarray of shape (4H,)

    Returns
    -------
    (h, c) : ndarrays of shape (N, H)
    cache : tuple
        ``(x, h_prev, c_prev, kernel, recurrent_kernel, i, f, g, o, c)``
    """
    H = h_prev.shape[1]
    z = x @ kernel + h_prev @ recurrent_kernel + bias  # 1
    i, f, o = sigmoid(z[:, :H]), sigmoid(z[:, H:2 * H]), sigmoid(z[:, 3 * H:])  # 2
    g = np.tanh(z[:, 2 * H:3 * H])
    c = f * c_prev + i * g  # 3
    h = o * np.tanh(c)  # 4
    return (h, c), (x, h_prev, c_prev, kernel, recurrent_kernel, i, f, g, o, c)


def gru_step_forward(x, h_prev, kernel, recurrent_kernel, bias):
    """One GRU time step (Keras's, ``reset_after=True``), numbered as in ``scratchnet/ops/gru.py``.

    ::

        1: a = x @ kernel + bias[0]                  (N, 3H), blocks a_z, a_r, a_h: the input part
           u = h_prev @ recurrent_kernel + bias[1]   (N, 3H), blocks u_z, u_r, u_h: the recurrent part
        2: z = sigmoid(a_z + u_z)                    update gate
           r = sigmoid(a_r + u_r)                    reset gate
           g = tanh(a_h + r * u_h)                   candidate: r scales the recurrent part, after the product
        3: h = z * h_prev + (1 - z) * g              z = 1 keeps the old state, z = 0 takes the candidate

    Parameters
    ----------
    x : ndarray of shape (N, D)
    h_prev : ndarray of shape (N, H)
    kernel : ndarray of shape (D, 3H)
    recurrent_kernel : ndarray of shape (H, 3H)
    bias : ndarray of shape (2, 3H)
        Row 0 the input bias, row 1 the recurrent bias.

    Returns
    -------
    h : ndarray of shape (N, H)
    cache : tuple
        ``(x, h_prev, kernel, recurrent_kernel, z, r, g, u_h)``
    """
    H = h_prev.shape[1]
    a = x @ kernel + bias[0]  # 1
    u = h_prev @ recurrent_kernel + bias[1]
    z = sigmoid(a[:, :H] + u[:, :H])  # 2
    r = sigmoid(a[:, H:2 * H] + u[:, H:2 * H])
    u_h = u[:, 2 * H:]
    g = np.tanh(a[:, 2 * H:] + r * u_h)
    h = z * h_prev + (1 - z) * g  # 3
    return h, (x, h_prev, kernel, recurrent_kernel, z, r, g, u_h)


def softmax(s):
    """The softmax over the last axis, ``exp(s) / sum(exp(s))``, shifted by the row's maximum (``-inf`` gives 0)."""
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def attention_forward(q, k, v, mask=None):
    """Scaled dot-product attention, numbered as in ``scratchnet/ops/attention.py``.

    ::

        1: s = q @ k^T / sqrt(d)                     scores (N, Tq, Tk)
        2: s = -inf where the mask is False          masked BEFORE the softmax
        3: p = softmax(s) over the keys              weights: each row sums to 1, 0 at masked keys
        4: y = p @ v                                 (N, Tq, dv)

    Parameters
    ----------
    q : ndarray of shape (N, Tq, d)
    k : ndarray of shape (N, Tk, d)
    v : ndarray of shape (N, Tk, dv)
    mask : bool ndarray broadcastable to (N, Tq, Tk), optional
        True where query i may look at key j; every query keeps at least one key.

    Returns
    -------
    y : ndarray of shape (N, Tq, dv)
    cache : tuple
        ``(q, k, v, mask, p)``, with ``p`` the weights (N, Tq, Tk).
    """
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])  # 1
    if mask is not None:
        s = np.where(mask, s, -np.inf)  # 2
    p = softmax(s)  # 3
    return p @ v, (q, k, v, mask, p)  # 4


def residual_forward(x, w1, b1, w2, b2):
    """A residual block of two dense layers (ResNet's, with dense layers for convolutions), numbered for the backward.

    ::

        1: a = x @ w1 + b1       (N, K): the inner layer, before its ReLU
        2: h = relu(a)
        3: z = h @ w2 + b2       (N, C): the branch, back to x's width
        4: s = x + z             the skip connection: x itself, added to the branch
        5: y = relu(s)           the block's ReLU comes after the sum

    Parameters
    ----------
    x : ndarray of shape (N, C)
    w1 : ndarray of shape (C, K)
    b1 : ndarray of shape (K,)
    w2 : ndarray of shape (K, C)
    b2 : ndarray of shape (C,)

    Returns
    -------
    y : ndarray of shape (N, C)
    cache : tuple
        ``(x, w1, w2, a, h, s)``: the inner pre-activation ``a``, its ReLU
        ``h``, and the sum ``s`` the block's ReLU reads.
    """
    a = x @ w1 + b1  # 1
    h = np.maximum(a, 0)  # 2
    z = h @ w2 + b2  # 3
    s = x + z  # 4
    return np.maximum(s, 0), (x, w1, w2, a, h, s)  # 5
