"""Inverted dropout: zero units at random, scale the kept ones by ``1 / (1 - rate)``.

Forward, with a mask drawn once per call::

    mask[i] = 0 with probability rate, else 1 / (1 - rate)
    y[i] = x[i] * mask[i]                    so E[y[i]] = (1 - rate) * x[i] / (1 - rate) = x[i]

Backward. The mask is a constant of the forward pass (it does not depend on
``x``), so ``y`` is linear in ``x`` with a diagonal Jacobian ``∂y_i/∂x_i =
mask[i]``::

    dx[i] = dy[i] * mask[i]

The same mask: a dropped unit passes no gradient, a kept one passes it
scaled like its value.

Under data parallelism each rank holds some rows of a global batch. The mask
must not depend on how the batch was split, so :func:`dropout` takes the
global batch's shape and this part's row offset: it draws the mask of the
whole batch, exactly as one process would, and keeps its rows of it.
"""
from __future__ import annotations

import numbers

import numpy

from .. import random as _random
from .._checks import as_float_arrays, check_fraction, check_grad
from ..backend import get_backend
from ..recording import Cost, nbytes
from ..recording import op as recorded_op


class DropoutReference:
    """Reference kernels for the dropout mask, and for drawing and applying it."""

    def dropout_mask(self, shape, rate, seed, dtype):
        """Drawn on the host with ``numpy.random``, so both CPU backends give the same mask for a seed."""
        rng = _random.generator() if seed is None else numpy.random.default_rng(seed)
        # (The CuPy backend overrides this with a device-side hash.)
        keep = rng.random(shape) >= rate
        mask = numpy.where(keep, 1 / (1 - rate), 0).astype(dtype)
        return self.xp.asarray(mask)

    def dropout_forward(self, x, rate, seed):
        """The mask of :meth:`dropout_mask`, applied: ``y = x * mask``."""
        mask = self.dropout_mask(tuple(x.shape), rate, seed, x.dtype)
        return x * mask, mask


def dropout_cost(x, rate, seed=None, global_shape=None, offset=0):
    """FLOPs and bytes of :func:`dropout`: draw, compare and scale each element."""
    return Cost(flops=3.0 * x.size, bytes=3 * nbytes(x), backward_flops=float(x.size), backward_bytes=3 * nbytes(x))


@recorded_op("dropout", cost=dropout_cost)
def dropout(x, rate, seed=None, global_shape=None, offset=0):
    """Inverted dropout (training mode).

    Parameters
    ----------
    x : array of any shape
    rate : float in [0, 1)
        Fraction of units to drop. ``0`` is the identity.
    seed : int, optional
        Same seed, same mask; ``None`` draws from ``scratchnet.random``.
    global_shape : tuple of int, optional
        ``x`` is rows ``offset:offset + len(x)`` of a batch of this shape (a
        rank's share under data parallelism): the mask is drawn for the whole
        batch and these rows of it are used, so the result does not depend on
        how the batch was split. Default: ``x``'s own shape.
    offset : int
        The first row of ``x`` in the global batch.

    Returns
    -------
    y : array of x's shape
        ``y = x * mask`` with ``mask`` 0 with probability ``rate`` and
        ``1 / (1 - rate)`` otherwise, so ``E[y] = x`` and no rescaling is
        needed at inference.
    backprop : callable
        ``backprop(dy) -> dx = dy * mask``
    """
    be = get_backend()
    (x,) = as_float_arrays("dropout", be, x=x)
    check_fraction("dropout", "rate", rate)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
        raise ValueError(f"dropout: seed must be a non-negative int or None, got {seed!r}")
    if rate == 0:
        # No draw: rate 0 leaves the global generator where it was.
        def identity(dy):
            return check_grad("dropout", dy, x, be).copy()

        return x.copy(), identity

    if global_shape is None:
        y, mask = be.dropout_forward(x, float(rate), seed)
    else:
        global_shape = _check_rows(x, global_shape, offset)
        mask = be.dropout_mask(global_shape, float(rate), seed, x.dtype)[offset:offset + x.shape[0]]
        y = x * mask

    def backprop(dy):
        dy = check_grad("dropout", dy, y, be)
        return dy * mask

    return y, backprop


def _check_rows(x, global_shape, offset):
    """``global_shape`` as a tuple, checked: ``x`` must be rows ``offset:offset + len(x)`` of a batch of that shape."""
    global_shape = tuple(int(n) for n in global_shape)
    rows = x.shape[0] if x.ndim else 0
    if (not global_shape or global_shape[1:] != tuple(x.shape[1:]) or isinstance(offset, bool)
            or not isinstance(offset, numbers.Integral) or not 0 <= offset <= global_shape[0] - rows):
        raise ValueError(f"dropout: x of shape {tuple(x.shape)} must be rows offset:offset + {rows} of the global "
                         f"batch, got global_shape={global_shape} and offset={offset!r}")
    return global_shape
