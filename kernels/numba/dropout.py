"""Numba kernels for dropout: draw the mask and apply it in one pass.

The reference draws ``rng.random(shape)`` (float64), compares it with the
rate, turns the comparison into the mask with ``numpy.where`` and casts it,
and then multiplies: five passes over arrays as large as ``x`` or twice as
large. Here one loop draws each number, keeps or drops, and writes the mask
and ``y`` once.

The numbers are the reference's own: a NumPy ``Generator`` passed to a Numba
function draws from the same bit generator, through the same
``next_double``, in the same order (C order), so a seed gives the same mask
on both CPU backends, and the generator is left in the same state.
"""
from __future__ import annotations

import numpy
from numba import njit

from scratchnet import random as _random


@njit(cache=True, nogil=True)
def _draw_mask(rng, rate, scale, mask):
    """``mask[i] = scale if rng.random() >= rate else 0`` over a flat array."""
    zero = scale - scale
    for i in range(mask.size):
        mask[i] = scale if rng.random() >= rate else zero


@njit(cache=True, nogil=True)
def _draw_and_apply(rng, x, rate, scale, y, mask):
    """:func:`_draw_mask`, and ``y = x * mask`` in the same pass."""
    zero = scale - scale
    for i in range(x.size):
        m = scale if rng.random() >= rate else zero
        mask[i] = m
        y[i] = x[i] * m


def dropout_mask(shape, rate, seed, dtype):
    """The contract's ``dropout_mask``, drawn by :func:`_draw_mask` with the reference's numbers."""
    rng = _random.generator() if seed is None else numpy.random.default_rng(seed)
    mask = numpy.empty(shape, dtype=dtype)
    _draw_mask(rng, rate, mask.dtype.type(1 / (1 - rate)), mask.reshape(-1))
    return mask

def dropout_forward(x, rate, seed):
    """The contract's ``dropout_forward``: the mask drawn and applied in one pass."""
    rng = _random.generator() if seed is None else numpy.random.default_rng(seed)
    x = numpy.ascontiguousarray(x)
    y, mask = numpy.empty_like(x), numpy.empty_like(x)
    _draw_and_apply(rng, x.reshape(-1), rate, x.dtype.type(1 / (1 - rate)), y.reshape(-1), mask.reshape(-1))
    return y, mask
