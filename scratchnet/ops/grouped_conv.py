"""Grouped and depthwise convolutions: ``conv2d`` run once per group of channels.

A grouped convolution splits the C input channels into ``groups`` groups of
``C / groups`` and the O filters into as many groups of ``O / groups``; group
``g``'s filters see group ``g``'s channels only::

    y[n, oh, ow, g*Og + o] = sum_{i, j, c < Cg} xpad[n, oh*sh + i, ow*sw + j, g*Cg + c] * w[i, j, c, g*Og + o]

with ``w`` of shape (kh, kw, Cg, O), Keras's ``Conv2D(groups=)`` layout. Each
group is an ordinary convolution of its slice of ``x`` with its slice of
``w``, so the forward and backward fall out of :func:`scratchnet.ops.conv2d`
without a new kernel: ``dx``'s channels and ``dw``'s filters are the groups'
gradients side by side, ``db`` the bias gradient of each filter.

A depthwise convolution (``tf.nn.depthwise_conv2d``, Keras's
``DepthwiseConv2D``) is the grouped one with one channel per group and
``M`` filters each (the depth multiplier): its kernel (kh, kw, C, M) is the
grouped kernel (kh, kw, 1, C*M) read in the same order, output channel
``c*M + m``.

The cost is one ``conv2d`` call per group: exact, and as fast as the direct
kernel for a few large groups, but a depthwise convolution of 64 channels is
64 small GEMMs. A dedicated depthwise kernel would be the next step if one
becomes hot.
"""
from __future__ import annotations

from .._checks import as_float_arrays, check_grad, check_rank, pair
from ..backend import get_backend
from ..recording import op as recorded_op
from .conv import conv2d, conv2d_cost

_conv2d = conv2d.__wrapped__  # the op itself: a group's call is part of this op, not an op call of its own


def grouped_conv2d_cost(x, w, b=None, strides=1, padding="VALID", groups=1, dilations=1):
    """:func:`scratchnet.ops.conv2d`'s cost per group, times the groups."""
    G = groups
    per = conv2d_cost(x[..., : x.shape[3] // G], w[..., : w.shape[3] // G], None, strides, padding,
                      dilations=dilations)
    return type(per)(flops=G * per.flops, bytes=G * per.bytes, backward_flops=G * per.backward_flops,
                     backward_bytes=G * per.backward_bytes)


@recorded_op("grouped_conv2d", cost=grouped_conv2d_cost)
def grouped_conv2d(x, w, b=None, strides=1, padding="VALID", groups=1, dilations=1):
    """Convolution of ``groups`` channel groups, each with its own filters (module docstring).

    Parameters
    ----------
    x : array (N, H, W, C), C divisible by ``groups``
    w : array (kh, kw, C / groups, O), O divisible by ``groups``
    b : array (O,), optional
    strides, padding, dilations : as :func:`scratchnet.ops.conv2d`
    groups : int

    Returns
    -------
    y : array (N, OH, OW, O)
    backprop : callable
        ``backprop(dy) -> (dx, dw, db)``.
    """
    op = "grouped_conv2d"
    be = get_backend()
    x, w, b = as_float_arrays(op, be, x=x, w=w, b=b)
    check_rank(op, "x", x, 4, "[N, H, W, C]")
    check_rank(op, "w", w, 4, "[kh, kw, C / groups, O]")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    C, (_, _, Cg, O) = x.shape[3], w.shape
    if C % groups or O % groups:
        raise ValueError(f"{op}: groups={groups} must divide the channels {C} and the filters {O} "
                         f"(x: {tuple(x.shape)}, w: {tuple(w.shape)})")
    if Cg != C // groups:
        raise ValueError(f"{op}: w must have C / groups = {C // groups} input channels, got {Cg} "
                         f"(x: {tuple(x.shape)}, w: {tuple(w.shape)}, groups={groups})")
    if b is not None and tuple(b.shape) != (O,):
        raise ValueError(f"{op}: b must have shape ({O},) to match w {tuple(w.shape)}, got {tuple(b.shape)}")
    xp, Og = be.xp, O // groups
    parts = []
    for g in range(groups):
        x_g = xp.ascontiguousarray(x[..., g * Cg:(g + 1) * Cg])
        w_g = xp.ascontiguousarray(w[..., g * Og:(g + 1) * Og])
        b_g = None if b is None else b[g * Og:(g + 1) * Og]
        parts.append(_conv2d(x_g, w_g, b_g, strides, padding, dilations=dilations))
    y = xp.concatenate([p[0] for p in parts], axis=3)

    def backprop(dy):
        dy = check_grad(op, dy, y, be)
        grads = [bp(xp.ascontiguousarray(dy[..., g * Og:(g + 1) * Og])) for g, (_, bp) in enumerate(parts)]
        dx = xp.concatenate([d[0] for d in grads], axis=3)
        dw = xp.concatenate([d[1] for d in grads], axis=3)
        db = None if b is None else xp.concatenate([d[2] for d in grads])
        return dx, dw, db

    return y, backprop


def depthwise_conv2d_cost(x, w, b=None, strides=1, padding="VALID", dilations=1):
    kh, kw, C, M = w.shape
    return grouped_conv2d_cost(x, w.reshape(kh, kw, 1, C * M), b, strides, padding, C, dilations)


@recorded_op("depthwise_conv2d", cost=depthwise_conv2d_cost)
def depthwise_conv2d(x, w, b=None, strides=1, padding="VALID", dilations=1):
    """``tf.nn.depthwise_conv2d``: each input channel convolved with its own ``M`` filters.

    ``w`` has shape (kh, kw, C, M) (Keras's ``depthwise_kernel``); the output
    has ``C * M`` channels, channel ``c * M + m`` from input channel ``c`` and
    filter ``w[:, :, c, m]``; ``b`` has shape (C * M,). ``backprop(dy) -> (dx, dw, db)``.
    """
    op = "depthwise_conv2d"
    be = get_backend()
    x, w, b = as_float_arrays(op, be, x=x, w=w, b=b)
    check_rank(op, "w", w, 4, "[kh, kw, C, M]")
    check_rank(op, "x", x, 4, "[N, H, W, C]")
    kh, kw, C, M = w.shape
    if x.shape[3] != C:
        raise ValueError(f"{op}: x has {x.shape[3]} channels but w expects {C} (x: {tuple(x.shape)}, "
                         f"w: {tuple(w.shape)})")
    pair(op, "strides", strides)
    y, grouped_backprop = grouped_conv2d.__wrapped__(x, w.reshape(kh, kw, 1, C * M), b, strides, padding, C,
                                                     dilations)

    def backprop(dy):
        dx, dw, db = grouped_backprop(dy)
        return dx, dw.reshape(kh, kw, C, M), db

    return y, backprop
