"""Scaled dot-product attention: every query takes a softmax-weighted mean of the values.

For one batch entry (any leading dimensions, the same for ``q``, ``k`` and ``v``),
queries ``q`` (Tq, d), keys ``k`` (Tk, d) and values ``v`` (Tk, dv), with
``a = scale`` (``1 / sqrt(d)`` unless given) and ``allowed[i, j]`` the mask
(True: query ``i`` may look at key ``j``)::

    s[i, j] = a * sum_c q[i, c] k[j, c]                   scores, (Tq, Tk)
    s[i, j] = -inf where not allowed[i, j]                masked before the softmax
    p[i, j] = exp(s[i, j]) / sum_l exp(s[i, l])           weights: each row sums to 1
    r[i, j] = p[i, j] * m[i, j]                           dropout on the weights (m = 0 or 1 / (1 - rate))
    y[i, e] = sum_j r[i, j] v[j, e]                       (Tq, dv)

A masked key gets ``exp(-inf) = 0``: exactly no weight, whatever the scores.
A row with no allowed key would divide 0 by 0, so it is refused.

Backward, from ``dy`` (Tq, dv), each line the chain rule on one line above,
read bottom to top::

    dv[j, e] = sum_i r[i, j] dy[i, e]                     dv = r^T dy
    dr[i, j] = sum_e dy[i, e] v[j, e]                     dr = dy v^T
    dp[i, j] = dr[i, j] m[i, j]                           dropout's backward
    ds[i, j] = p[i, j] (dp[i, j] - sum_l dp[i, l] p[i, l])    the softmax Jacobian, row by row
    dq[i, c] = a sum_j ds[i, j] k[j, c]                   dq = a ds k
    dk[j, c] = a sum_i ds[i, j] q[i, c]                   dk = a ds^T q

The softmax line is :func:`~scratchnet.ops.softmax`'s backward,
``J = diag(p) - p p^T`` times ``dp`` without forming ``J``. A masked entry has
``p = 0``, so its ``ds`` is 0 and no gradient reaches its key from that
query: the mask needs no backward of its own.

Memory: ``p`` (and ``r`` under dropout) are kept for the backward, ``N * Tq * Tk``
values per leading entry (``N * heads * T**2`` for multi-head attention): at
batch 32, 8 heads and T = 512 that is 67 million numbers, 256 MiB in float32, and it
grows with the square of the sequence.
"""
from __future__ import annotations

import math
import numbers

import numpy

from .._checks import as_float_arrays, check_fraction, check_grad
from ..backend import get_backend, to_numpy
from ..recording import Cost, nbytes
from ..recording import op as recorded_op
from .dropout import dropout


def attention_cost(q, k, v, mask=None, causal=False, scale=None, dropout_rate=0.0, seed=None):
    """FLOPs and bytes of :func:`attention`: two batched products forward, four backward, the softmax between."""
    lead = int(numpy.prod(q.shape[:-2], dtype=numpy.int64))
    tq, d = q.shape[-2:]
    tk, dv = v.shape[-2:]
    products = 2.0 * lead * tq * tk * (d + dv)
    weights = lead * tq * tk * q.itemsize
    return Cost(flops=products + 5.0 * lead * tq * tk, bytes=nbytes(q) + nbytes(k) + nbytes(v) + 2 * weights,
                backward_flops=2 * products + 4.0 * lead * tq * tk,
                backward_bytes=2 * (nbytes(q) + nbytes(k) + nbytes(v)) + 3 * weights)


def _check_shapes(q, k, v):
    shapes = f"q: {tuple(q.shape)}, k: {tuple(k.shape)}, v: {tuple(v.shape)}"
    if q.ndim < 2 or k.ndim != q.ndim or v.ndim != q.ndim:
        raise ValueError(f"attention: q, k and v must have one rank >= 2 ([..., T, depth]), got {shapes}")
    if q.shape[:-2] != k.shape[:-2] or q.shape[:-2] != v.shape[:-2]:
        raise ValueError(f"attention: q, k and v must share their leading dimensions, got {shapes}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"attention: q and k must have one depth (last dimension), got {shapes}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"attention: k and v must have one length (second-to-last dimension), got {shapes}")
    if 0 in q.shape or 0 in k.shape[-2:] or 0 in v.shape[-2:]:
        raise ValueError(f"attention: q, k and v must not be empty, got {shapes}")


def _allowed(be, op, mask, causal, scores_shape):
    """The boolean mask of keys each query may see, broadcast to ``scores_shape``; None when all may."""
    xp = be.xp
    allowed = None
    if mask is not None:
        mask = be.native(op, "mask", mask)
        if mask.dtype != numpy.bool_:
            raise ValueError(f"{op}: mask must be boolean (True: attend), got {mask.dtype} {tuple(mask.shape)}")
        try:
            shape = numpy.broadcast_shapes(tuple(mask.shape), scores_shape)
        except ValueError:
            shape = None
        if shape != scores_shape:
            raise ValueError(f"{op}: mask of shape {tuple(mask.shape)} does not broadcast to the scores' "
                             f"shape {scores_shape} ([..., Tq, Tk])")
        allowed = mask
    if causal:
        tq, tk = scores_shape[-2:]
        tri = xp.tril(xp.ones((tq, tk), dtype=bool))  # query i sees keys 0..i
        allowed = tri if allowed is None else allowed & tri
    if mask is not None:  # a causal mask alone leaves every query key 0: nothing to check, no wait for the device
        allowed = xp.broadcast_to(allowed, scores_shape)
        empty = to_numpy(~allowed.any(axis=-1))  # one wait for the device, on the mask only
        if empty.any():
            where = tuple(int(i) for i in numpy.argwhere(empty)[0])
            raise ValueError(f"{op}: the mask leaves query row {where} of the scores {scores_shape} no key to "
                             "attend to (its softmax would be 0 / 0)")
    return allowed


@recorded_op("attention", cost=attention_cost)
def attention(q, k, v, mask=None, causal=False, scale=None, dropout_rate=0.0, seed=None):
    """Scaled dot-product attention, ``softmax(scale * q k^T, masked) v``.

    Parameters
    ----------
    q : (..., Tq, d)
    k : (..., Tk, d)
    v : (..., Tk, dv)
        The same leading dimensions (batch, heads, ...) and one float dtype.
    mask : bool array broadcastable to (..., Tq, Tk), optional
        True where query ``i`` may attend to key ``j`` (Keras's ``attention_mask``;
        PyTorch's boolean ``attn_mask``). Every query must keep at least one key.
    causal : bool
        Query ``i`` sees keys ``0..i`` only (Keras's ``use_causal_mask``),
        combined with ``mask`` when both are given.
    scale : float, optional
        Multiplies the scores; ``1 / sqrt(d)`` by default.
    dropout_rate : float in [0, 1)
        Inverted dropout on the attention weights (training mode).
    seed : int, optional
        Seeds that dropout.

    Returns
    -------
    y : (..., Tq, dv)
    backprop : callable
        ``backprop(dy) -> (dq, dk, dv)``
    """
    be = get_backend()
    xp = be.xp
    q, k, v = as_float_arrays("attention", be, q=q, k=k, v=v)
    _check_shapes(q, k, v)
    if not isinstance(causal, (bool, numpy.bool_)):
        raise ValueError(f"attention: causal must be True or False, got {causal!r}")
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    elif isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"attention: scale must be a positive finite number, got {scale!r}")
    check_fraction("attention", "dropout_rate", dropout_rate)
    scores_shape = tuple(q.shape[:-1]) + (k.shape[-2],)
    allowed = _allowed(be, "attention", mask, bool(causal), scores_shape)

    kt = xp.swapaxes(k, -1, -2)
    s = xp.matmul(q, kt) * q.dtype.type(scale)
    if allowed is not None:
        s = xp.where(allowed, s, q.dtype.type(-numpy.inf))
    e = xp.exp(s - s.max(axis=-1, keepdims=True))
    p = e / e.sum(axis=-1, keepdims=True)
    if dropout_rate:
        r, dropout_backprop = dropout(p, dropout_rate, seed)
    else:
        r, dropout_backprop = p, None
    y = xp.matmul(r, v)

    def backprop(dy):
        dy = check_grad("attention", dy, y, be)
        dv = xp.matmul(xp.swapaxes(r, -1, -2), dy)
        dp = xp.matmul(dy, xp.swapaxes(v, -1, -2))
        if dropout_backprop is not None:
            dp = dropout_backprop(dp)
        ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True))
        ds *= q.dtype.type(scale)
        dq = xp.matmul(ds, k)
        dk = xp.matmul(xp.swapaxes(ds, -1, -2), q)
        return dq, dk, dv

    return y, backprop
