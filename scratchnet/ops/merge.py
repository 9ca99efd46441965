"""Joining branches: ``add``, ``subtract``, ``multiply``, ``average`` of several arrays, and ``concatenate``.

They are what a model that is not a stack does where two branches meet (a
residual connection is ``add([x, f(x)])``). Each takes a list of arrays and
its ``backprop(dy)`` returns the list of their gradients.

The elementwise ones broadcast as NumPy does. Where input ``x_i`` was
stretched along an axis (its size there is 1, or the axis is missing), every
output along that axis read the same ``x_i`` entry, so its gradient sums
``dy`` over that axis (:func:`unbroadcast`)::

    y[n, c] = a[n, c] + b[0, c]     ->   da[n, c] = dy[n, c],   db[0, c] = sum_n dy[n, c]

With ``y = x_1 + ... + x_k``, ``∂y/∂x_i = 1``: ``dx_i = dy`` (summed where
broadcast). ``subtract``: ``dx_1 = dy``, ``dx_2 = -dy``. ``average``: ``dx_i
= dy / k``. ``multiply``, ``y = x_1 x_2 ... x_k``: ``∂y/∂x_i = prod_{j != i}
x_j``, so ``dx_i = dy * prod_{j != i} x_j``. ``concatenate`` along ``axis``
copies each input into its slice of ``y``: ``dx_i`` is ``dy``'s slice.
"""
from __future__ import annotations

import numpy

from .._checks import as_float_arrays, check_grad
from ..backend import get_backend
from ..recording import Cost, nbytes
from ..recording import op as recorded_op


def unbroadcast(g, shape):
    """``g`` summed down to ``shape``: the gradient of an input that was broadcast to ``g``'s shape."""
    extra = g.ndim - len(shape)
    if extra:
        g = g.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, (n, m) in enumerate(zip(shape, g.shape)) if n == 1 and m != 1)
    if stretched:
        g = g.sum(axis=stretched, keepdims=True)
    return g


def _merge_cost(xs, axis=-1):
    size = max(x.size for x in xs)
    item = xs[0].dtype.itemsize
    return Cost(flops=float((len(xs) - 1) * size), bytes=float(sum(nbytes(x) for x in xs) + size * item),
                backward_flops=float(len(xs) * size), backward_bytes=float(2 * len(xs) * size * item))


def _inputs(op, xs, least=2):
    if not isinstance(xs, (list, tuple)) or len(xs) < least:
        got = f"a list of {len(xs)}" if isinstance(xs, (list, tuple)) else type(xs).__name__
        raise ValueError(f"{op}: xs must be a list of at least {least} arrays, got {got}")
    be = get_backend()
    xs = as_float_arrays(op, be, **{f"xs[{i}]": x for i, x in enumerate(xs)})
    try:
        shape = tuple(numpy.broadcast_shapes(*(tuple(x.shape) for x in xs)))
    except ValueError:
        raise ValueError(f"{op}: the shapes {[tuple(x.shape) for x in xs]} do not broadcast together (each axis must "
                         f"match or be 1)") from None
    return be, xs, shape


def _sum(xs):
    y = xs[0] + xs[1]
    for x in xs[2:]:
        y = y + x
    return y


@recorded_op("add", cost=_merge_cost)
def add(xs):
    """``y = x_1 + x_2 + ...``; ``backprop(dy) -> [dx_1, dx_2, ...]`` (``dy``, summed where an input was broadcast)."""
    be, xs, shape = _inputs("add", xs)
    y = _sum(xs)

    def backprop(dy):
        dy = check_grad("add", dy, y, be)
        return [unbroadcast(dy, x.shape) for x in xs]

    return y, backprop


@recorded_op("subtract", cost=_merge_cost)
def subtract(xs):
    """``y = x_1 - x_2`` (two arrays); ``backprop(dy) -> [dy, -dy]`` (summed where broadcast)."""
    be, xs, shape = _inputs("subtract", xs)
    if len(xs) != 2:
        raise ValueError(f"subtract: xs must be a list of exactly 2 arrays, got {len(xs)}")
    a, b = xs
    y = a - b

    def backprop(dy):
        dy = check_grad("subtract", dy, y, be)
        return [unbroadcast(dy, a.shape), unbroadcast(-dy, b.shape)]

    return y, backprop


@recorded_op("average", cost=_merge_cost)
def average(xs):
    """``y = (x_1 + ... + x_k) / k``; ``backprop(dy) -> [dy / k, ...]`` (summed where broadcast)."""
    be, xs, shape = _inputs("average", xs)
    scale = xs[0].dtype.type(1.0 / len(xs))
    y = _sum(xs) * scale

    def backprop(dy):
        dy = check_grad("average", dy, y, be) * scale
        return [unbroadcast(dy, x.shape) for x in xs]

    return y, backprop


@recorded_op("multiply", cost=_merge_cost)
def multiply(xs):
    """``y = x_1 * x_2 * ...``; ``backprop(dy) -> [dy * prod_{j != i} x_j for each i]`` (summed where broadcast)."""
    be, xs, shape = _inputs("multiply", xs)
    y = xs[0] * xs[1]
    for x in xs[2:]:
        y = y * x

    def backprop(dy):
        dy = check_grad("multiply", dy, y, be)
        grads = []
        for i, x in enumerate(xs):
            others = [u for j, u in enumerate(xs) if j != i]
            product = others[0]
            for u in others[1:]:
                product = product * u
            grads.append(unbroadcast(dy * product, x.shape))
        return grads

    return y, backprop


def _concatenate_cost(xs, axis=-1):
    size = sum(x.size for x in xs)
    item = xs[0].dtype.itemsize
    return Cost(flops=0.0, bytes=float(2 * size * item), backward_flops=0.0, backward_bytes=float(2 * size * item))


@recorded_op("concatenate", cost=_concatenate_cost)
def concatenate(xs, axis=-1):
    """The arrays joined along ``axis`` (they agree on every other axis); ``backprop(dy)`` cuts ``dy`` back into
    their pieces."""
    if not isinstance(xs, (list, tuple)) or len(xs) < 1:
        raise ValueError(f"concatenate: xs must be a non-empty list of arrays, got {type(xs).__name__}")
    be = get_backend()
    xs = as_float_arrays("concatenate", be, **{f"xs[{i}]": x for i, x in enumerate(xs)})
    ndim = xs[0].ndim
    if isinstance(axis, bool) or not isinstance(axis, int) or not -ndim <= axis < ndim:
        raise ValueError(f"concatenate: axis must be an int in [-{ndim}, {ndim}) for arrays of rank {ndim}, "
                         f"got {axis!r}")
    axis %= ndim
    shapes = [tuple(x.shape) for x in xs]
    if any(len(s) != ndim or s[:axis] + s[axis + 1:] != shapes[0][:axis] + shapes[0][axis + 1:] for s in shapes):
        raise ValueError(f"concatenate: the shapes {shapes} must agree on every axis but axis {axis}")
    xp = be.xp
    y = xp.concatenate(xs, axis=axis)
    ends = []
    for x in xs:
        ends.append((ends[-1] if ends else 0) + x.shape[axis])

    def backprop(dy):
        dy = check_grad("concatenate", dy, y, be)
        index = [slice(None)] * ndim
        grads = []
        for start, end in zip([0] + ends[:-1], ends):
            index[axis] = slice(start, end)
            grads.append(xp.ascontiguousarray(dy[tuple(index)]))
        return grads

    return y, backprop
