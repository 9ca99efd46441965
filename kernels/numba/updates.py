"""Numba kernels for the in-place parameter updates: each update one pass over its arrays.

The reference updates (``scratchnet/ops/updates.py``) are NumPy expressions,
and every term of one is a temporary as large as the parameter: Adam's three
lines make seven temporaries, each written and read again. Here each update
is one loop that reads every input once and writes every output once; for
LeNet's 1.6-million-weight dense kernel that is the difference between about
fifteen passes over 6.4 MB and five.

The scalars are cast to the arrays' dtype before the call, so float32
parameters are updated in float32 arithmetic, as the reference does. A large
parameter is cut into one contiguous part per core (``kernels/runtime/threads.py``),
each updated by the same ``nogil`` loop: the update is memory traffic, and
two cores move more of it than one.

Where the arrays' layouts do not suit a flat loop (:func:`_flat_views`), a
function returns ``NotImplemented`` and the backend runs the reference's.
"""
from __future__ import annotations

import math

import numpy
from numba import njit

from ..runtime import threads

# Elements a part should hold at least: handing a part to another thread costs about 15 microseconds,
# what a one-pass update of some 50,000 elements takes. LeNet's 1.6-million-weight dense kernel is split, and
# so is the MLP's 392,000-weight one (3% off its whole step, measured in alternating blocks: bench/RESULTS.md).
MIN_PART_ELEMENTS = 1 << 17


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


@njit(cache=True, nogil=True, error_model="numpy")
def _adam_update(w, g, m, v, alpha, rate_1, rate_2, epsilon):
    """Adam over flat arrays, ``rate_k = 1 - beta_k``: the three lines of ``UpdateReference.adam_update``.

    NumPy's error model: with Python's, the division checks for zero (to raise) and the loop does not vectorise.
    """
    for i in range(w.size):
        gi = g[i]
        mi = m[i] + rate_1 * (gi - m[i])
        vi = v[i] + rate_2 * (gi * gi - v[i])
        m[i] = mi
        v[i] = vi
        w[i] -= alpha * mi / (math.sqrt(vi) + epsilon)


@njit(cache=True, nogil=True, fastmath=True)
def _sum_of_squares(x):
    """``sum(x**2)`` over a flat array, accumulated in float64.

    ``fastmath`` lets LLVM reorder the sum into SIMD partial sums; in float64
    the reordering changes the result far below float32's resolution.
    """
    total = 0.0
    for i in range(x.size):
        v = numpy.float64(x[i])
        total += v * v
    return total


# Elements per block of the fused update: w, g and the shadow of a block (3 x 16 KiB in float32) stay in L1
# between its two loops, so memory sees one pass.
BLOCK = 4096


@njit(cache=True, nogil=True)
def _sgd_l2_ema_block(w, g, shadow, neg_lr, two_l2, rate, has_shadow):
    """``g += two_l2 * w``; ``w += neg_lr * g``; ``shadow -= rate * (shadow - w)``, element by element.

    The scalar updates of ``scaled_add`` (twice) and ``_moving_average_update``, in their order: the
    result is theirs bit for bit.
    """
    for i in range(w.size):
        gi = g[i] + two_l2 * w[i]
        g[i] = gi
        wi = w[i] + neg_lr * gi
        w[i] = wi
        if has_shadow:
            shadow[i] -= rate * (shadow[i] - wi)


@njit(cache=True, nogil=True)
def _sgd_l2_ema_update(w, g, shadow, neg_lr, two_l2, rate, has_shadow):
    """The fused update (:func:`sgd_l2_ema_update`) over flat arrays, block by block: each block's
    sum of squares (before its update, :func:`_sum_of_squares`'s SIMD loop), then its update, while it is
    in cache. Returns the sum of squares of ``w`` before the update, in float64."""
    total = 0.0
    for lo in range(0, w.size, BLOCK):
        hi = min(lo + BLOCK, w.size)
        total += _sum_of_squares(w[lo:hi])
        _sgd_l2_ema_block(w[lo:hi], g[lo:hi], shadow[lo:hi] if has_shadow else shadow, neg_lr, two_l2, rate,
                          has_shadow)
    return total


def _flat_views(written, read):
    """Flat views, element by element in one order, of the arrays an update writes and reads; or None.

    The written arrays must share one memory layout, all C- or all
    F-contiguous (an orthogonal recurrent kernel is F-ordered, and so are its
    optimizer slots); a read-only array in the other layout is copied into
    it, one pass, where the reference would make several.
    """
    if all(a.flags.c_contiguous for a in written):
        order = "C"
    elif all(a.flags.f_contiguous for a in written):
        order = "F"
    else:
        return None
    dtype = written[0].dtype
    if any(a.dtype != dtype for a in (*written, *read)):
        return None
    # Memory order: an F-ordered array's transpose is C-ordered, and flattens without a copy.
    flat = (lambda a: a.reshape(-1)) if order == "C" else (lambda a: a.T.reshape(-1))
    return [flat(a) for a in written] + [flat(numpy.asarray(a, order=order)) for a in read]


def _in_parts(kernel, flat, *scalars):
    """``kernel(*flat, *scalars)``, on one contiguous part of the flat arrays per core when they are large."""
    def part(lo, hi):
        kernel(*(a[lo:hi] for a in flat), *scalars)

    threads.split(part, flat[0].size, MIN_PART_ELEMENTS)


def scaled_add(y, x, alpha):
    """The contract's ``scaled_add`` in one pass; ``NotImplemented`` for layouts it does not take (:func:`_flat_views`)."""
    flat = _flat_views([y], [x])
    if flat is None:
        return NotImplemented
    _in_parts(_scaled_add, flat, y.dtype.type(alpha))

def moving_average_update(shadow, value, decay):
    """The contract's ``moving_average_update`` in one pass; ``NotImplemented`` as :func:`scaled_add`."""
    flat = _flat_views([shadow], [value])
    if flat is None:
        return NotImplemented
    _in_parts(_moving_average_update, flat, shadow.dtype.type(1 - decay))

def sum_of_squares(x):
    """The contract's ``sum_of_squares`` of a contiguous array; ``NotImplemented`` for another."""
    # A sum does not care about the order: any contiguous array is read as it lies in memory.
    flat = x.reshape(-1) if x.flags.c_contiguous else x.T.reshape(-1) if x.flags.f_contiguous else None
    return float(_sum_of_squares(flat)) if flat is not None else NotImplemented

def sgd_l2_ema_update(w, g, lr, l2, shadow, decay):
    """The fused SGD + L2 + EMA update and its sum, in one pass; ``NotImplemented`` as :func:`scaled_add`."""
    has_shadow = shadow is not None
    flat = _flat_views([w, g, shadow] if has_shadow else [w, g], [])
    if flat is None:
        return NotImplemented
    fw, fg = flat[0], flat[1]
    fs = flat[2] if has_shadow else fw[:0]
    t = w.dtype.type

    def part(lo, hi):
        return _sgd_l2_ema_update(fw[lo:hi], fg[lo:hi], fs[lo:hi] if has_shadow else fs, t(-lr), t(2 * l2),
                                  t(1 - decay), has_shadow)

    return float(sum(threads.split(part, fw.size, MIN_PART_ELEMENTS)))

def adam_update(w, g, m, v, alpha, beta_1, beta_2, epsilon):
    """The contract's ``adam_update`` in one pass; ``NotImplemented`` as :func:`scaled_add`."""
    flat = _flat_views([w, m, v], [g])
    if flat is None:
        return NotImplemented
    fw, fm, fv, fg = flat
    t = w.dtype.type
    _in_parts(_adam_update, (fw, fg, fm, fv), t(alpha), t(1 - beta_1), t(1 - beta_2), t(epsilon))
