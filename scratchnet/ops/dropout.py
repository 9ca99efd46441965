"""Inverted dropout: zero units at random, scale the kept ones by ``1 / (1 - rate)``."""
from __future__ import annotations

import numbers

import numpy

from .. import random as _random
from .._checks import as_float_arrays, check_fraction, check_grad
from ..backend import get_backend


class DropoutKernels:
    """Reference kernel for the dropout mask."""

    def dropout_mask(self, shape, rate, seed, dtype):
        """A random mask of zeros and ``1 / (1 - rate)``.

        Parameters
        ----------
        shape : tuple of int
        rate : float in [0, 1)
            Probability that an entry is zero.
        seed : int or None
            ``None`` draws from the global generator (``scratchnet.random``);
            an int gives the same mask every time.
        dtype : float32 or float64

        Returns
        -------
        mask : array of ``shape`` and ``dtype``
        """
        rng = _random.generator() if seed is None else numpy.random.default_rng(seed)
        # Drawn on the host, so the CPU backends give the same mask for a seed
        # (the CuPy backend overrides this with a device-side hash).
        keep = rng.random(shape) >= rate
        mask = numpy.where(keep, 1 / (1 - rate), 0).astype(dtype)
        return self.xp.asarray(mask)


def dropout(x, rate, seed=None):
    """Inverted dropout (training mode).

    Parameters
    ----------
    x : array of any shape
    rate : float in [0, 1)
        Fraction of units to drop. ``0`` is the identity.
    seed : int, optional
        Same seed, same mask; ``None`` draws from ``scratchnet.random``.

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
    (X,) = as_float_arrays("dropout", be, x=x)
    check_fraction("dropout", "rate", rate)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
        raise ValueError(f"dropout: seed must be a non-negative int or None, got {seed!r}")
    if rate == 0:
        # No draw: rate 0 leaves the global generator where it was.
        def identity(dY):
            return check_grad("dropout", dY, X, be).copy()

        return X.copy(), identity

    mask = be.dropout_mask(tuple(X.shape), float(rate), seed, X.dtype)
    Y = X * mask

    def backprop(dY):
        dY = check_grad("dropout", dY, Y, be)
        return dY * mask

    return Y, backprop
