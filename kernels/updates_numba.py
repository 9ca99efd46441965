"""Numba kernels for the in-place parameter updates: each update one pass over its arrays.

The reference updates (``scratchnet/ops/updates.py``) are NumPy expressions,
and every term of one is a temporary as large as the parameter: Adam's three
lines make seven temporaries, each written and read again. Here each update
is one loop that reads every input once and writes every output once; for
LeNet's 1.6-million-weight dense kernel that is the difference between about
fifteen passes over 6.4 MB and five.

The scalars are cast to the arrays' dtype before the call, so float32
parameters are updated in float32 arithmetic, as the reference does. A large
parameter is cut into one contiguous part per core (``kernels/threads.py``),
each updated by the same ``nogil`` loop: the update is memory traffic, and
two cores move more of it than one.
"""
from __future__ import annotations

import math

from numba import njit

from . import threads

# Elements a part should hold at least (a memory-bound pass: about 50 microseconds).
MIN_PART_ELEMENTS = 1 << 18


@njit(cache=True, nogil=True)
def _scaled_add(y, x, alpha):
    """``y += alpha * x`` over flat arrays."""
    for i in range(y.size):
        y[i] += alpha * x[i]


@njit(cache=True, nogil=True)
def _moving_average_update(shadow, value, rate):
    """``shadow -= rate * (shadow - value)`` over flat arrays, ``rate = 1 - decay``."""
    for i in range(shadow.size):
        shadow[i] -= rate * (shadow[i] - value[i])


@njit(cache=True, nogil=True)
def _adam_update(w, g, m, v, alpha, rate_1, rate_2, epsilon):
    """Adam over flat arrays, ``rate_k = 1 - beta_k``: the three lines of ``UpdateReference.adam_update``."""
    for i in range(w.size):
        gi = g[i]
        mi = m[i] + rate_1 * (gi - m[i])
        vi = v[i] + rate_2 * (gi * gi - v[i])
        m[i] = mi
        v[i] = vi
        w[i] -= alpha * mi / (math.sqrt(vi) + epsilon)


def _flat(a):
    """The flat view of a contiguous array (updates write through it), else None."""
    return a.reshape(-1) if a.flags.c_contiguous else None


def _in_parts(kernel, flat, *scalars):
    """``kernel(*flat, *scalars)``, on one contiguous part of the flat arrays per core when they are large."""
    def part(lo, hi):
        kernel(*(a[lo:hi] for a in flat), *scalars)

    threads.split(part, flat[0].size, MIN_PART_ELEMENTS)


class UpdateNumba:
    """Overrides ``UpdateReference``: each update in one pass; non-contiguous arrays go to the reference."""

    def scaled_add(self, y, x, alpha):
        fy, fx = _flat(y), _flat(x)
        if fy is None or fx is None or x.dtype != y.dtype:
            return super().scaled_add(y, x, alpha)
        _in_parts(_scaled_add, (fy, fx), y.dtype.type(alpha))

    def moving_average_update(self, shadow, value, decay):
        fs, fv = _flat(shadow), _flat(value)
        if fs is None or fv is None or value.dtype != shadow.dtype:
            return super().moving_average_update(shadow, value, decay)
        _in_parts(_moving_average_update, (fs, fv), shadow.dtype.type(1 - decay))

    def adam_update(self, w, g, m, v, alpha, beta_1, beta_2, epsilon):
        flat = [_flat(a) for a in (w, g, m, v)]
        if any(f is None for f in flat) or len({a.dtype for a in (w, g, m, v)}) != 1:
            return super().adam_update(w, g, m, v, alpha, beta_1, beta_2, epsilon)
        t = w.dtype.type
        _in_parts(_adam_update, flat, t(alpha), t(1 - beta_1), t(1 - beta_2), t(epsilon))
