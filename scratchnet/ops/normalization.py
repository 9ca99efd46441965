"""Layer and batch normalization: standardize, then scale and shift.

Both normalize ``x`` over a set of positions ``R`` (its size ``m``) with
``eps`` added to the variance, then apply a per-channel scale ``gamma`` and
shift ``beta`` (channels: the last axis)::

    mu      = (1/m) sum_{r in R} x_r
    var     = (1/m) sum_{r in R} (x_r - mu)^2             (the biased variance, as TensorFlow and PyTorch)
    xhat_r  = (x_r - mu) / sqrt(var + eps)
    y_r     = gamma * xhat_r + beta

- **layer norm**: ``R`` is the last axis of one example (one ``mu`` per row);
- **batch norm** (training): ``R`` is every axis but the last (one ``mu`` per
  channel, over the batch and any spatial axes). At inference it uses moving
  averages instead, and is then an affine map per channel.

Backward, with ``s = 1 / sqrt(var + eps)`` and ``g_r = dy_r * gamma`` (the
gradient of ``xhat_r``). ``xhat_r`` depends on every ``x`` of its set through
``mu`` and ``var``::

    ∂xhat_r/∂x_q = s (delta_rq - 1/m) - s xhat_r xhat_q / m

(``∂mu/∂x_q = 1/m``; ``∂var/∂x_q = 2 (x_q - mu) / m``, so
``∂s/∂x_q = -s^3 (x_q - mu) / m = -s^2 xhat_q / m``). Summing against ``g``::

    dx_q    = sum_r g_r ∂xhat_r/∂x_q = s (g_q - mean_r g_r - xhat_q mean_r(g_r xhat_r))
    dgamma  = sum over everything but the channel of dy * xhat
    dbeta   = sum over everything but the channel of dy

The two means are what make this different from a per-element scale: the
gradient is projected to have zero mean and no component along ``xhat``,
because shifting or scaling the inputs of a set does not change its ``xhat``.
"""
from __future__ import annotations

import numbers

from .._checks import as_float_arrays, check_grad
from ..backend import get_backend
from ..recording import Cost, nbytes
from ..recording import op as recorded_op


def _check(op, x, gamma, beta, epsilon, min_rank):
    if x.ndim < min_rank:
        raise ValueError(f"{op}: x must have rank >= {min_rank} (channels last), got shape {tuple(x.shape)}")
    C = x.shape[-1]
    if C == 0:
        raise ValueError(f"{op}: x has no channels to normalize (its last axis is empty), got shape {tuple(x.shape)}")
    for name, a in (("gamma", gamma), ("beta", beta)):
        if a is not None and tuple(a.shape) != (C,):
            raise ValueError(f"{op}: {name} must have shape ({C},) (x's last axis), got {tuple(a.shape)} "
                             f"(x: {tuple(x.shape)})")
    if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real) or not epsilon > 0:
        raise ValueError(f"{op}: epsilon must be a positive number, got {epsilon!r}")


def _stats_mean(xp, a, ones, per_channel):
    """The mean of ``a`` (M, C) over each set: a column's M rows (batch norm, ``per_channel``), as a product with
    a row of ones, which a BLAS does in one pass (NumPy's sum over axis 0 is ~10x slower); or a row's C
    channels (layer norm), kept as an (M, 1) column."""
    return (ones @ a) / a.shape[0] if per_channel else a.mean(axis=1, keepdims=True)


def _normalize(xp, x2, gamma, beta, epsilon, per_channel):
    """``(y2, mean, var)`` for ``x`` seen as (M, C), statistics per channel ((C,) each) or per row ((M,) each)."""
    ones = xp.ones(x2.shape[0], dtype=x2.dtype)
    mu = _stats_mean(xp, x2, ones, per_channel)
    centered = x2 - mu
    var = _stats_mean(xp, centered * centered, ones, per_channel)
    xhat = centered * (1 / xp.sqrt(var + x2.dtype.type(epsilon)))
    y2 = xhat if gamma is None else xhat * gamma
    if beta is not None:
        y2 = y2 + beta
    return y2, mu.reshape(-1), var.reshape(-1)


def _backward(xp, dy2, x2, mean, var, gamma, beta, epsilon, per_channel):
    """``(dx2, dgamma, dbeta)``: the docstring's ``dx = s (g - mean g - xhat mean(g xhat))`` over the same sets,
    ``xhat`` made again from ``x`` and the statistics (as the forward made it); ``dgamma`` and ``dbeta`` sum
    over the M rows (every position shares a channel's scale and shift)."""
    ones = xp.ones(dy2.shape[0], dtype=dy2.dtype)
    if not per_channel:  # one statistic per row: a column that broadcasts along the row
        mean, var = mean.reshape(-1, 1), var.reshape(-1, 1)
    s = 1 / xp.sqrt(var + x2.dtype.type(epsilon))
    xhat = (x2 - mean) * s
    g = dy2 if gamma is None else dy2 * gamma
    dx2 = s * (g - _stats_mean(xp, g, ones, per_channel) - xhat * _stats_mean(xp, g * xhat, ones, per_channel))
    dgamma = None if gamma is None else ones @ (dy2 * xhat)
    dbeta = None if beta is None else ones @ dy2
    return dx2, dgamma, dbeta


class NormalizationReference:
    """Reference kernels for layer and batch normalization, on the (M, C) view of ``x``."""

    def normalization_forward(self, x, gamma, beta, epsilon, per_channel):
        """The module's math, written out: :func:`_normalize`."""
        return _normalize(self.xp, x, gamma, beta, epsilon, per_channel)

    def normalization_backward(self, dy, x, mean, var, gamma, beta, epsilon, per_channel):
        """The module's math, written out: :func:`_backward`."""
        return _backward(self.xp, dy, x, mean, var, gamma, beta, epsilon, per_channel)


def norm_cost(x, gamma=None, beta=None, epsilon=1e-3, **unused):
    """FLOPs and bytes of a normalization: about 8 per element forward, 12 backward, each element read twice."""
    return Cost(flops=8.0 * x.size, bytes=3 * nbytes(x), backward_flops=12.0 * x.size, backward_bytes=5 * nbytes(x))


@recorded_op("layer_norm", cost=norm_cost)
def layer_norm(x, gamma=None, beta=None, epsilon=1e-3):
    """Layer normalization over the last axis (Keras's ``LayerNormalization()``, whose ``epsilon`` is 1e-3).

    Parameters
    ----------
    x : (..., C)
    gamma, beta : (C,), optional
        Scale and shift; None leaves it out.
    epsilon : float > 0

    Returns
    -------
    y : x's shape
    backprop : callable
        ``backprop(dy) -> (dx, dgamma, dbeta)`` (None for a scale or shift not given)
    """
    be = get_backend()
    x, gamma, beta = as_float_arrays("layer_norm", be, x=x, gamma=gamma, beta=beta)
    _check("layer_norm", x, gamma, beta, epsilon, 1)
    x2 = x.reshape(-1, x.shape[-1])
    y2, mean, var = be.normalization_forward(x2, gamma, beta, epsilon, False)
    y = y2.reshape(x.shape)

    def backprop(dy):
        dy2 = check_grad("layer_norm", dy, y, be).reshape(x2.shape)
        dx2, dgamma, dbeta = be.normalization_backward(dy2, x2, mean, var, gamma, beta, epsilon, False)
        return dx2.reshape(x.shape), dgamma, dbeta

    return y, backprop


@recorded_op("batch_norm", cost=norm_cost)
def batch_norm(x, gamma=None, beta=None, epsilon=1e-3):
    """Batch normalization in training mode: statistics over every axis but the last (channels last).

    Parameters
    ----------
    x : (N, ..., C)
        At least two values per channel (a variance of one value is 0, and
        its gradient is degenerate): ``N * ...`` must be >= 2.
    gamma, beta : (C,), optional
    epsilon : float > 0 (Keras's ``BatchNormalization`` default is 1e-3)

    Returns
    -------
    (y, mean, variance) : y of x's shape; the batch's mean and biased variance per channel, (C,) each,
        for the moving averages (a layer's business, not differentiated)
    backprop : callable
        ``backprop(dy, dmean=None, dvariance=None) -> (dx, dgamma, dbeta)``; the
        statistics are not differentiated, so ``dmean`` and ``dvariance`` must be None
    """
    be = get_backend()
    x, gamma, beta = as_float_arrays("batch_norm", be, x=x, gamma=gamma, beta=beta)
    _check("batch_norm", x, gamma, beta, epsilon, 2)
    C = x.shape[-1]
    M = x.size // C
    if M < 2:
        raise ValueError(f"batch_norm: each channel needs at least 2 values to normalize over, got x of shape "
                         f"{tuple(x.shape)}")
    x2 = x.reshape(M, C)
    y2, mean, var = be.normalization_forward(x2, gamma, beta, epsilon, True)
    y = y2.reshape(x.shape)

    def backprop(dy, dmean=None, dvariance=None):
        if dmean is not None or dvariance is not None:
            raise ValueError("batch_norm: the batch mean and variance it returns are not differentiated (they feed "
                             "the moving averages); pass None for dmean and dvariance")
        dy2 = check_grad("batch_norm", dy, y, be).reshape(M, C)
        dx2, dgamma, dbeta = be.normalization_backward(dy2, x2, mean, var, gamma, beta, epsilon, True)
        return dx2.reshape(x.shape), dgamma, dbeta

    return (y, mean, var), backprop
