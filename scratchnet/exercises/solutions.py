"""The teachers' solutions to the exercises of :mod:`scratchnet.exercises.stubs` (CI grades each one).

Not imported by ``import scratchnet.exercises`` and shown on no page (a test,
tests/test_learner_path.py, checks both): a teacher imports this module
explicitly, ``from scratchnet.exercises import solutions``. Each solution is
written for reading: index form first, then the array expression that
computes it.
"""
from __future__ import annotations

import numpy as np

from ..layers.base import Layer
from .forward import col2im, im2col


def dense_backward(dy, cache):
    """``dx = dy @ w.T``, ``dw = x.T @ dy``, ``db = sum_n dy[n]``."""
    x, w, b = cache
    dx = dy @ w.T  # dx[n, c] = sum_k dy[n, k] w[c, k]
    dw = x.T @ dy  # dw[c, k] = sum_n x[n, c] dy[n, k]
    db = dy.sum(axis=0)  # db[k] = sum_n dy[n, k]
    return dx, dw, db


def conv2d_backward(dy, cache):
    """``dw = im2col(x).T @ dy2``, ``dx = col2im(dy2 @ w2.T)`` (a transposed convolution), ``db = sum dy``."""
    x, w, b, (sh, sw), pads = cache
    kh, kw, C, O = w.shape
    dy2 = dy.reshape(-1, O)  # (N*OH*OW, O)
    cols = im2col(x, kh, kw, sh, sw, pads)  # (N*OH*OW, kh*kw*C)
    # dw[i, j, c, o] = sum_{n, oh, ow} xpad[n, oh*sh + i, ow*sw + j, c] dy[n, oh, ow, o]
    dw = (cols.T @ dy2).reshape(w.shape)
    # dcols[(n, oh, ow), (i, j, c)] = sum_o dy[n, oh, ow, o] w[i, j, c, o]; col2im adds each row back onto its pixels.
    dx = col2im(dy2 @ w.reshape(kh * kw * C, O).T, x.shape, kh, kw, sh, sw, pads)
    db = dy2.sum(axis=0)  # db[o] = sum_{n, oh, ow} dy[n, oh, ow, o]
    return dx, dw, db


def max_pool_backward(dy, cache):
    """Each ``dy`` entry to the first maximum of its window (row-major), overlapping windows adding up."""
    x, (kh, kw), (sh, sw), pads, y = cache
    top, _, left, _ = pads
    N, H, W, C = x.shape
    _, OH, OW, _ = dy.shape
    dx = np.zeros_like(x)
    for oh in range(OH):
        for ow in range(OW):
            # The window's rows and columns inside x (padded positions never win).
            r0, c0 = oh * sh - top, ow * sw - left
            r1, c1 = max(r0, 0), max(c0, 0)
            window = x[:, r1:r0 + kh, c1:c0 + kw, :]  # (N, h, w, C)
            h, w = window.shape[1:3]
            # argmax over the flattened window returns the FIRST maximum in row-major order.
            first = window.reshape(N, h * w, C).argmax(axis=1)  # (N, C)
            i, j = np.divmod(first, w)
            n, c = np.meshgrid(np.arange(N), np.arange(C), indexing="ij")
            # One winner per (n, c) in this window, so += on distinct indices is safe here.
            dx[n, r1 + i, c1 + j, c] += dy[:, oh, ow, :]
    return dx


def avg_pool_backward(dy, cache):
    """Each ``dy`` entry spread evenly, ``dy / count``, over its window's real cells; overlapping windows add up."""
    x, (kh, kw), (sh, sw), pads = cache
    top, _, left, _ = pads
    N, H, W, C = x.shape
    _, OH, OW, _ = dy.shape
    dx = np.zeros_like(x)
    for oh in range(OH):
        for ow in range(OW):
            # The window's rows and columns inside x; padded cells were not counted in the mean.
            r0, c0 = oh * sh - top, ow * sw - left
            r1, c1 = max(r0, 0), max(c0, 0)
            r2, c2 = min(r0 + kh, H), min(c0 + kw, W)
            count = (r2 - r1) * (c2 - c1)
            # += : a cell in two overlapping windows receives from both.
            dx[:, r1:r2, c1:c2, :] += dy[:, oh:oh + 1, ow:ow + 1, :] / count
    return dx


def batch_norm_backward(dy, cache):
    """``dx = s * (g - mean(g) - xhat * mean(g * xhat))`` with ``g = dy * gamma``; means over all axes but the last."""
    x, xhat, s, gamma = cache
    axes = tuple(range(dy.ndim - 1))  # every axis but the channels'
    # 3b: y = gamma * xhat + beta
    dgamma = (dy * xhat).sum(axis=axes)
    dbeta = dy.sum(axis=axes)
    g = dy * gamma  # the gradient of xhat
    # 2b, 1b: xhat = (x - mu) * s, and mu, s depend on every x of the channel:
    # d xhat_r / d x_q = s (delta_rq - 1/m) - s xhat_r xhat_q / m
    dx = s * (g - g.mean(axis=axes) - xhat * (g * xhat).mean(axis=axes))
    return dx, dgamma, dbeta


def residual_backward(dy, cache):
    """Steps 5b to 1b of the block: the sum sends the gradient of ``s`` down both roads, and ``dx`` adds them."""
    x, w1, w2, a, h, s = cache
    # 5b: y = relu(s)
    ds = dy * (s > 0)
    # 4b: s = x + z. A sum passes its gradient to each term unchanged: dz = ds, and the skip's share of dx is ds.
    dz = ds
    # 3b: z = h @ w2 + b2
    dw2 = h.T @ dz
    db2 = dz.sum(axis=0)
    dh = dz @ w2.T
    # 2b: h = relu(a), masked by a's sign (not s's: each ReLU by its own input)
    da = dh * (a > 0)
    # 1b: a = x @ w1 + b1
    dw1 = x.T @ da
    db1 = da.sum(axis=0)
    dx = da @ w1.T + ds  # the branch's road plus the skip's: x is used twice, its gradients add up
    return dx, dw1, db1, dw2, db2


def lstm_step_backward(dh, dc, cache):
    """Steps 4b, 3b, 2b, 1b of ``scratchnet/ops/lstm.py`` for one time step."""
    x, h_prev, c_prev, kernel, recurrent_kernel, i, f, g, o, c = cache
    tanh_c = np.tanh(c)
    # 4b: h = o * tanh(c). c also receives, on top of the dc sent back to it, dh through tanh.
    do = dh * tanh_c
    dc = dc + dh * o * (1 - tanh_c ** 2)
    # 3b: c = f * c_prev + i * g
    di, df, dg, dc_prev = dc * g, dc * c_prev, dc * i, dc * f
    # 2b: sigmoid' = s (1 - s), tanh' = 1 - g^2; blocks in the order i, f, g, o.
    dz = np.concatenate([di * i * (1 - i), df * f * (1 - f), dg * (1 - g ** 2), do * o * (1 - o)], axis=1)
    # 1b: z = x @ kernel + h_prev @ recurrent_kernel + bias
    dx = dz @ kernel.T
    dh_prev = dz @ recurrent_kernel.T
    dkernel = x.T @ dz
    drecurrent_kernel = h_prev.T @ dz
    dbias = dz.sum(axis=0)
    return dx, dh_prev, dc_prev, dkernel, drecurrent_kernel, dbias


def gru_step_backward(dh, cache):
    """Steps 3b, 2b, 1b of ``scratchnet/ops/gru.py`` for one time step."""
    x, h_prev, kernel, recurrent_kernel, z, r, g, u_h = cache
    # 3b: h = z * h_prev + (1 - z) * g. h_prev is used here directly, and again in step 1 (1b adds that part).
    dg = dh * (1 - z)
    dz = dh * (h_prev - g)
    dh_prev = dh * z
    # 2b: g = tanh(p_h) with p_h = a_h + r * u_h; sigmoid' = s (1 - s).
    dp_h = dg * (1 - g ** 2)
    dr = dp_h * u_h
    dp_z = dz * z * (1 - z)
    dp_r = dr * r * (1 - r)
    da = np.concatenate([dp_z, dp_r, dp_h], axis=1)  # the input part a: a_h enters p_h as it is
    du = np.concatenate([dp_z, dp_r, dp_h * r], axis=1)  # the recurrent part u: u_h enters p_h times r
    # 1b: a = x @ kernel + bias[0], u = h_prev @ recurrent_kernel + bias[1]
    dx = da @ kernel.T
    dh_prev = dh_prev + du @ recurrent_kernel.T
    dkernel = x.T @ da
    drecurrent_kernel = h_prev.T @ du
    dbias = np.stack([da.sum(axis=0), du.sum(axis=0)])
    return dx, dh_prev, dkernel, drecurrent_kernel, dbias


def attention_backward(dy, cache):
    """``dv = p^T dy``, ``ds = p * (dp - sum(dp * p))`` with ``dp = dy v^T``, ``dq = ds k / sqrt(d)``, ``dk = ds^T q / sqrt(d)``."""
    q, k, v, mask, p = cache
    scale = 1 / np.sqrt(q.shape[-1])
    # 4b: y = p @ v
    dv = np.swapaxes(p, -1, -2) @ dy  # dv[j, e] = sum_i p[i, j] dy[i, e]
    dp = dy @ np.swapaxes(v, -1, -2)  # dp[i, j] = sum_e dy[i, e] v[j, e]
    # 3b: the softmax's Jacobian, diag(p) - p p^T, row by row. p is 0 at masked keys, so they get no gradient.
    ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True))
    # 1b: s = q @ k^T * scale
    dq = scale * ds @ k  # dq[i, c] = scale sum_j ds[i, j] k[j, c]
    dk = scale * np.swapaxes(ds, -1, -2) @ q  # dk[j, c] = scale sum_i ds[i, j] q[i, c]
    return dq, dk, dv


class RMSNormalization(Layer):
    """``y = gamma * x_hat`` with ``x_hat = x * s``, ``s = 1 / sqrt(mean(x**2) + epsilon)`` over the last axis."""

    def __init__(self, epsilon=1e-6, name=None, dtype=None):
        super().__init__(name, dtype)
        self.epsilon = epsilon

    def build(self, input_shape):
        self.gamma = self.add_weight("gamma", input_shape[-1:], "ones")

    def call(self, x, training=False):
        s = 1 / np.sqrt((x ** 2).mean(axis=-1, keepdims=True) + self.epsilon)
        x_hat = x * s
        y = self.gamma.value * x_hat

        def backprop(dy):
            lead = tuple(range(dy.ndim - 1))  # every axis but the last
            self.gamma.accumulate((dy * x_hat).sum(axis=lead))
            # x moves y directly and through s, which every x[..., c] of its row moves
            # (ds/dx[c] = -s^3 x[c] / C): dx = s * (g - x_hat * mean(g * x_hat)), g = dy * gamma
            g = dy * self.gamma.value
            return s * (g - x_hat * (g * x_hat).mean(axis=-1, keepdims=True))

        return y, backprop
