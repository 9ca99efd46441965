"""The exercises: nine backward passes and one layer to write.

Copy a stub into your notebook, fill in its body, and grade it::

    import scratchnet as sn

    def dense_backward(dy, cache):
        x, w, b = cache
        dx = ...
        dw = ...
        db = ...
        return dx, dw, db

    print(sn.exercises.grade("dense", dense_backward))

Each stub receives the ``cache`` its forward in :mod:`scratchnet.exercises.forward`
kept. The derivation pages of the documentation derive every formula; try
first without them. Every array is float64 NumPy.
"""
from __future__ import annotations

from ..layers.base import Layer


def dense_backward(dy, cache):
    """Gradients of ``y = x @ w + b``.

    Parameters
    ----------
    dy : ndarray of shape (N, K)
        The gradient of the loss with respect to ``y``.
    cache : tuple
        ``(x, w, b)`` from :func:`~scratchnet.exercises.forward.dense_forward`.

    Returns
    -------
    dx : ndarray of shape (N, C)
    dw : ndarray of shape (C, K)
    db : ndarray of shape (K,)
    """
    x, w, b = cache
    # TODO: y[n, k] = sum_c x[n, c] w[c, k] + b[k]. Which outputs does x[n, c] reach, and with which slope?
    raise NotImplementedError("dense_backward: compute dx, dw and db")


def conv2d_backward(dy, cache):
    """Gradients of the convolution ``y[n, oh, ow, o] = sum_{i, j, c} xpad[n, oh*sh + i, ow*sw + j, c] w[i, j, c, o] + b[o]``.

    Parameters
    ----------
    dy : ndarray of shape (N, OH, OW, O)
    cache : tuple
        ``(x, w, b, (sh, sw), pads)`` from :func:`~scratchnet.exercises.forward.conv2d_forward`;
        ``pads = (top, bottom, left, right)``.

    Returns
    -------
    dx : ndarray of shape (N, H, W, C)
    dw : ndarray of shape (kh, kw, C, O)
    db : ndarray of shape (O,)

    Notes
    -----
    :func:`~scratchnet.exercises.forward.im2col` and
    :func:`~scratchnet.exercises.forward.col2im` may help: the forward is
    ``y = im2col(x) @ w.reshape(kh*kw*C, O) + b``. Plain loops over the
    window offsets (i, j) work too.
    """
    x, w, b, (sh, sw), pads = cache
    # TODO: db sums dy over every position; dw pairs each input window with dy;
    # dx sends dy back through every window that covered a pixel (overlaps add up).
    raise NotImplementedError("conv2d_backward: compute dx, dw and db")


def max_pool_backward(dy, cache):
    """Gradient of max pooling.

    Parameters
    ----------
    dy : ndarray of shape (N, OH, OW, C)
    cache : tuple
        ``(x, (kh, kw), (sh, sw), pads, y)`` from :func:`~scratchnet.exercises.forward.max_pool_forward`.
        Window ``(oh, ow)`` covers the input rows ``oh*sh - top + i`` and columns
        ``ow*sw - left + j`` that lie inside ``x``.

    Returns
    -------
    dx : ndarray of shape (N, H, W, C)

    Notes
    -----
    Each ``dy`` entry goes, whole, to the input that won its window. At a tie
    (equal values; common after a ReLU) it goes to the FIRST maximum in
    row-major window order (smallest i, then smallest j), as TensorFlow does.
    An input that wins several overlapping windows receives their sum.
    """
    x, (kh, kw), (sh, sw), pads, y = cache
    # TODO: for each window, find the first position holding its maximum, and add dy there.
    raise NotImplementedError("max_pool_backward: compute dx")


def avg_pool_backward(dy, cache):
    """Gradient of average pooling.

    Parameters
    ----------
    dy : ndarray of shape (N, OH, OW, C)
    cache : tuple
        ``(x, (kh, kw), (sh, sw), pads)`` from :func:`~scratchnet.exercises.forward.avg_pool_forward`.
        Window ``(oh, ow)`` covers the input rows ``oh*sh - top + i`` and columns
        ``ow*sw - left + j`` that lie inside ``x``.

    Returns
    -------
    dx : ndarray of shape (N, H, W, C)

    Notes
    -----
    Each output is the mean of its window's cells INSIDE ``x``: padded cells
    (SAME) are not counted in the divisor. Windows may overlap.
    """
    x, (kh, kw), (sh, sw), pads = cache
    # TODO: for each window, how many real cells did its mean divide by, and which inputs did it read?
    raise NotImplementedError("avg_pool_backward: compute dx")


def batch_norm_backward(dy, cache):
    """Gradients of batch normalization (training mode), ``y = gamma * xhat + beta``.

    Parameters
    ----------
    dy : ndarray of x's shape, (N, C) or (N, H, W, C)
    cache : tuple
        ``(x, xhat, s, gamma)`` from :func:`~scratchnet.exercises.forward.batch_norm_forward`:
        ``xhat = (x - mu) * s``, with ``s = 1 / sqrt(var + epsilon)`` of shape (C,).

    Returns
    -------
    dx : ndarray of x's shape
    dgamma, dbeta : ndarray of shape (C,)

    Notes
    -----
    The statistics ``mu`` and ``var`` are over every axis but the last (the
    channels): over the batch, and over the image for an (N, H, W, C) input.
    They are computed from ``x``: every ``x`` of a channel moves them.
    """
    x, xhat, s, gamma = cache
    # TODO: 3b, then 2b and 1b: x reaches xhat directly, through mu and through var.
    raise NotImplementedError("batch_norm_backward: compute dx, dgamma and dbeta")


def residual_backward(dy, cache):
    """Gradients of a residual block, ``y = relu(x + dense(relu(dense(x, w1, b1)), w2, b2))``.

    Parameters
    ----------
    dy : ndarray of shape (N, C)
    cache : tuple
        ``(x, w1, w2, a, h, s)`` from :func:`~scratchnet.exercises.forward.residual_forward`:
        ``a = x @ w1 + b1`` (N, K), ``h = relu(a)``, ``s = x + h @ w2 + b2`` (N, C).

    Returns
    -------
    dx : ndarray of shape (N, C)
    dw1 : ndarray of shape (C, K)
    db1 : ndarray of shape (K,)
    dw2 : ndarray of shape (K, C)
    db2 : ndarray of shape (C,)

    Notes
    -----
    Undo the forward's steps in reverse order: 5b (the block's ReLU), 4b (the
    sum), 3b, 2b, 1b (the branch). ``x`` reaches ``s`` by two roads: the
    branch and the skip connection.
    """
    x, w1, w2, a, h, s = cache
    # TODO: 5b, 4b, 3b, 2b, 1b.
    raise NotImplementedError("residual_backward: compute dx, dw1, db1, dw2 and db2")


def lstm_step_backward(dh, dc, cache):
    """Gradients of one LSTM step, given the gradients of its outputs ``h`` and ``c``.

    Parameters
    ----------
    dh : ndarray of shape (N, H)
        The gradient of ``h`` (in a sequence: ``dy_t`` plus what step t+1 sent back).
    dc : ndarray of shape (N, H)
        The gradient of ``c`` that step t+1 sent back.
    cache : tuple
        ``(x, h_prev, c_prev, kernel, recurrent_kernel, i, f, g, o, c)`` from
        :func:`~scratchnet.exercises.forward.lstm_step_forward`.

    Returns
    -------
    dx : ndarray of shape (N, D)
    dh_prev, dc_prev : ndarray of shape (N, H)
    dkernel : ndarray of shape (D, 4H)
    drecurrent_kernel : ndarray of shape (H, 4H)
    dbias : ndarray of shape (4H,)

    Notes
    -----
    Undo the forward steps in reverse order: 4b (``h = o * tanh(c)``), 3b
    (``c = f * c_prev + i * g``), 2b (the nonlinearities), 1b (``z = x @ kernel
    + h_prev @ recurrent_kernel + bias``). The gate blocks of ``z`` are
    ordered i, f, g, o.
    """
    x, h_prev, c_prev, kernel, recurrent_kernel, i, f, g, o, c = cache
    # TODO: 4b, 3b, 2b, 1b.
    raise NotImplementedError("lstm_step_backward: compute dx, dh_prev, dc_prev, dkernel, drecurrent_kernel, dbias")


def gru_step_backward(dh, cache):
    """Gradients of one GRU step (Keras's, ``reset_after=True``), given the gradient of its output ``h``.

    Parameters
    ----------
    dh : ndarray of shape (N, H)
        The gradient of ``h`` (in a sequence: ``dy_t`` plus what step t+1 sent back).
    cache : tuple
        ``(x, h_prev, kernel, recurrent_kernel, z, r, g, u_h)`` from
        :func:`~scratchnet.exercises.forward.gru_step_forward`: the gates ``z``
        and ``r``, the candidate ``g``, and ``u_h``, the recurrent part of the
        candidate's input (``h_prev @ recurrent_kernel[:, 2H:] + bias[1, 2H:]``).

    Returns
    -------
    dx : ndarray of shape (N, D)
    dh_prev : ndarray of shape (N, H)
    dkernel : ndarray of shape (D, 3H)
    drecurrent_kernel : ndarray of shape (H, 3H)
    dbias : ndarray of shape (2, 3H)
        Row 0 for the input bias, row 1 for the recurrent bias.

    Notes
    -----
    Undo the forward steps in reverse order: 3b (``h = z * h_prev + (1 - z) * g``),
    2b (the gates, ``g = tanh(a_h + r * u_h)``), 1b (``a = x @ kernel + bias[0]``,
    ``u = h_prev @ recurrent_kernel + bias[1]``). The gate blocks are ordered
    z, r, h. ``h_prev`` reaches ``h`` by more than one road.
    """
    x, h_prev, kernel, recurrent_kernel, z, r, g, u_h = cache
    # TODO: 3b, 2b, 1b.
    raise NotImplementedError("gru_step_backward: compute dx, dh_prev, dkernel, drecurrent_kernel, dbias")


def attention_backward(dy, cache):
    """Gradients of scaled dot-product attention, ``y = softmax(q @ k^T / sqrt(d), masked) @ v``.

    Parameters
    ----------
    dy : ndarray of shape (N, Tq, dv)
    cache : tuple
        ``(q, k, v, mask, p)`` from :func:`~scratchnet.exercises.forward.attention_forward`:
        ``q`` (N, Tq, d), ``k`` (N, Tk, d), ``v`` (N, Tk, dv), the boolean
        ``mask`` (or None) and the weights ``p`` (N, Tq, Tk), 0 at masked keys.

    Returns
    -------
    dq : ndarray of shape (N, Tq, d)
    dk : ndarray of shape (N, Tk, d)
    dv : ndarray of shape (N, Tk, dv)

    Notes
    -----
    Undo the forward's steps in reverse order: 4b (``y = p @ v``), 3b (the
    softmax, row by row), 1b (``s = q @ k^T / sqrt(d)``). ``np.swapaxes(a, -1, -2)``
    transposes every matrix of a batch. Each row of ``p`` is a softmax of its
    own row of scores.
    """
    q, k, v, mask, p = cache
    # TODO: 4b, 3b, 1b.
    raise NotImplementedError("attention_backward: compute dq, dk and dv")


class RMSNormalization(Layer):
    """RMS normalization over the last axis (Keras's ``RMSNormalization(axis=-1)``; LLaMA's RMSNorm).

    ``y = gamma * x / sqrt(mean(x**2) + epsilon)``, with the mean of the
    squares of each example (each position of a sequence) over its last axis,
    and ``gamma`` of shape ``(C,)``. No mean is subtracted and nothing is
    added: there is no ``beta``.

    Input ``(N, ..., C)``, output the same shape.
    """

    def __init__(self, epsilon=1e-6, name=None, dtype=None):
        super().__init__(name, dtype)
        self.epsilon = epsilon

    def build(self, input_shape):
        # TODO: self.gamma (ones), of shape input_shape[-1:], with self.add_weight.
        raise NotImplementedError("RMSNormalization.build: create gamma")

    def call(self, x, training=False):
        # TODO: y, and a backprop(dy) that ADDS dgamma to the parameter
        # (self.gamma.accumulate(...)) and returns dx. Then: return y, backprop
        raise NotImplementedError("RMSNormalization.call: compute y and its backprop")
