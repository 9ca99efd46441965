"""Numba kernels for layer and batch normalization: the reference's two passes, without its temporaries.

The math is ``scratchnet/ops/normalization.py``'s, seen on the (M, C) view of
``x``: the statistics of a set (a row of C channels for layer norm, a column
of M positions for batch norm), then ``xhat = (x - mu) s`` with
``s = 1 / sqrt(var + epsilon)``, ``y = xhat gamma + beta``, and backward
``dx = s (g - mean(g) - xhat mean(g xhat))`` with ``g = dy gamma``. The
reference writes every step as a full-size temporary (``x - mu``, its
square, ``xhat``, ``g``, ``g xhat``, ...); here each pass reads its inputs
once and writes only the outputs, and ``xhat`` is recomputed from ``x`` in
the backward (as the reference's backward does), not stored.

Why it is exact: the statistics are two-pass as in the reference (the mean,
then the mean of squared deviations from it), never ``E[x^2] - E[x]^2``,
which cancels when the mean is large beside the spread. The sums are
accumulated in blocks: a row's C values (layer norm, in x's dtype, in SIMD
partial sums), or ``CHUNK_ROWS`` rows of a column (batch norm in float64, a
layer norm's ``dgamma`` and ``dbeta`` in x's dtype), the blocks' sums added
in float64; the error is that of a sum of a few hundred terms at most. The
elementwise steps are the reference's, in its order and in ``x``'s dtype
(the statistics are cast to it first, as the reference's are). A float64
result therefore differs from the reference's by round-off only (its sums
are NumPy's and the BLAS's, in another order), and a float32 one is about as
accurate as the reference's float32 sums (pairwise and BLAS-blocked).

A row's sums over its channels (layer norm) are ``fastmath`` (reassociation
only): that lets LLVM keep SIMD partial sums, a reordering of the sum and of
its terms' products (round-off again). A column's sums (batch norm) are
vectorized across the channels as they are, each channel's in row order.

The rows of a large input (``MIN_PART_ELEMENTS``, per kind) are cut into one contiguous
part per core (``kernels/runtime/threads.py``); batch norm's column sums are
returned per part and added in part order, so the result does not depend on
the split's timing. Batch norm's forward is
three passes (sum, squared deviations, output) and its backward two (the
sums of ``dy`` and ``dy xhat``, then ``dx``); layer norm's rows are
independent and each pass is one loop over a row held in L1.
"""
from __future__ import annotations

import math

import numpy
from numba import njit

from ..runtime import threads

# Elements of x a part should hold at least, per kind: the passes are memory-bound and short. On the 2-core
# machine with its cores awake (forward + backward, A/B in one process, three to five runs each), two parts of
# lesson 6's layer norm (5000 x 64, 320K elements) take 0.77x of one thread's time, of lesson 7's first batch
# norm (1.25M) 0.67x, but of its last (100 x 7 x 7 x 64, 313K: five passes over columns, each handed over)
# 1.25x. With the other core busy elsewhere two parts lose, as any split does.
MIN_PART_ELEMENTS = {"rows": 1 << 17, "columns": 1 << 19}
# Rows summed into a block's partial sum before it joins the part's total (the float64 sums' error).
CHUNK_ROWS = 256
# Elements of a widened row in batch norm's kernels (:func:`_pieces`): 8 AVX2 vectors of float32.
WIDE = 64
REASSOC = {"reassoc"}


@njit(cache=True, nogil=True)
def _in_dtype(scratch, value):
    """``value`` rounded to the dtype of ``scratch`` (x's, float32 or float64), as the reference's statistics are."""
    scratch[0] = value
    return scratch[0]


# --- per row (layer norm) -----------------------------------------------------------------------------

@njit(cache=True, nogil=True, fastmath=REASSOC)
def _row_sum(x, m, zero):
    """``sum_c x[m, c]``, accumulated in ``zero``'s dtype (x's)."""
    total = zero
    for c in range(x.shape[1]):
        total += x[m, c]
    return total


@njit(cache=True, nogil=True, fastmath=REASSOC)
def _row_sum_of_squares(x, m, mu, zero):
    """``sum_c (x[m, c] - mu)^2``, each deviation in x's dtype (the reference's ``centered``)."""
    total = zero
    for c in range(x.shape[1]):
        d = x[m, c] - mu
        total += d * d
    return total


@njit(cache=True, nogil=True, fastmath=REASSOC)
def _row_grad_sums(dy, x, gamma, m, mu, s, zero):
    """``(sum_c g, sum_c g xhat)`` of row ``m``, ``g = dy gamma``, ``xhat = (x - mu) s``."""
    sum_g = zero
    sum_gx = zero
    for c in range(x.shape[1]):
        g = dy[m, c] * gamma[c]
        sum_g += g
        sum_gx += g * ((x[m, c] - mu) * s)
    return sum_g, sum_gx


@njit(cache=True, nogil=True)
def _rows_forward(x, gamma, beta, epsilon, y, mean, var):
    """Layer norm's forward of rows ``x`` (M, C): ``mean`` and ``var`` (M,), and ``y``."""
    M, C = x.shape
    scratch = numpy.zeros(1, x.dtype)
    zero = scratch[0]
    for m in range(M):
        mean[m] = _row_sum(x, m, zero) / C
        mu = mean[m]  # in x's dtype, as the reference's
        var[m] = _row_sum_of_squares(x, m, mu, zero) / C
        s = _in_dtype(scratch, 1.0 / math.sqrt(var[m] + epsilon))
        for c in range(C):
            y[m, c] = (x[m, c] - mu) * s * gamma[c] + beta[c]


@njit(cache=True, nogil=True)
def _rows_backward(dy, x, mean, var, gamma, epsilon, dx, dgamma, dbeta, chunk):
    """Layer norm's backward of rows (M, C): ``dx``, and this part's ``dgamma``, ``dbeta`` (C,) float64 sums
    of blocks of ``chunk`` rows (each block's in x's dtype)."""
    M, C = x.shape
    block_dgamma = numpy.zeros(C, x.dtype)
    block_dbeta = numpy.zeros(C, x.dtype)
    scratch = numpy.zeros(1, x.dtype)
    zero = scratch[0]
    for m in range(M):
        mu = mean[m]
        s = _in_dtype(scratch, 1.0 / math.sqrt(var[m] + epsilon))
        sum_g, sum_gx = _row_grad_sums(dy, x, gamma, m, mu, s, zero)
        mean_g, mean_gx = _in_dtype(scratch, sum_g / C), _in_dtype(scratch, sum_gx / C)
        for c in range(C):
            xhat = (x[m, c] - mu) * s
            dx[m, c] = s * (dy[m, c] * gamma[c] - mean_g - xhat * mean_gx)
            block_dgamma[c] += dy[m, c] * xhat
            block_dbeta[c] += dy[m, c]
        if (m + 1) % chunk == 0 or m == M - 1:
            dgamma += block_dgamma
            dbeta += block_dbeta
            block_dgamma[:] = 0.0
            block_dbeta[:] = 0.0


# --- per channel (batch norm) ------------------------------------------------------------------------
# Each kernel takes its (rows, width) arrays first, then its per-channel (width,) ones. The wrapper hands them
# a widened view (:func:`_pieces`): with C = 16, four rows side by side as one row of 64, the per-channel
# arrays tiled to match, so that a row is a few SIMD vectors and a column sum has as many independent chains.

@njit(cache=True, nogil=True)
def _column_sums(x, mean, chunk):
    """``(sum_m x[m],)`` per column, or with a ``mean`` ``(sum_m (x[m] - mean)^2,)`` (each deviation in x's
    dtype, the reference's ``centered``): float64, summed in blocks of ``chunk`` rows."""
    M, C = x.shape
    total = numpy.zeros(C)
    block = numpy.zeros(C)
    for lo in range(0, M, chunk):
        block[:] = 0.0
        for m in range(lo, min(lo + chunk, M)):
            if mean is None:
                for c in range(C):
                    block[c] += x[m, c]
            else:
                for c in range(C):
                    d = x[m, c] - mean[c]
                    block[c] += d * d
        total += block
    return (total,)


@njit(cache=True, nogil=True)
def _columns_forward(x, y, mean, inv_std, gamma, beta):
    """``y = (x - mean) inv_std gamma + beta``, per column."""
    M, C = x.shape
    for m in range(M):
        for c in range(C):
            y[m, c] = (x[m, c] - mean[c]) * inv_std[c] * gamma[c] + beta[c]


@njit(cache=True, nogil=True)
def _column_grad_sums(dy, x, mean, inv_std, chunk):
    """``(sum_m dy, sum_m dy xhat)`` per column, float64 (dbeta and dgamma), summed in blocks of ``chunk`` rows."""
    M, C = x.shape
    sum_dy = numpy.zeros(C)
    sum_dyx = numpy.zeros(C)
    block_dy = numpy.zeros(C)
    block_dyx = numpy.zeros(C)
    for lo in range(0, M, chunk):
        block_dy[:] = 0.0
        block_dyx[:] = 0.0
        for m in range(lo, min(lo + chunk, M)):
            for c in range(C):
                xhat = (x[m, c] - mean[c]) * inv_std[c]
                block_dy[c] += dy[m, c]
                block_dyx[c] += dy[m, c] * xhat
        sum_dy += block_dy
        sum_dyx += block_dyx
    return sum_dy, sum_dyx


@njit(cache=True, nogil=True)
def _columns_backward(dy, x, dx, mean, inv_std, gamma, mean_g, mean_gx):
    """``dx = s (dy gamma - mean(g) - xhat mean(g xhat))``, per column."""
    M, C = x.shape
    for m in range(M):
        for c in range(C):
            xhat = (x[m, c] - mean[c]) * inv_std[c]
            dx[m, c] = inv_std[c] * (dy[m, c] * gamma[c] - mean_g[c] - xhat * mean_gx[c])


# --- the contract's methods ---------------------------------------------------------------------------

def _affine(gamma, beta, C, dtype):
    """``gamma`` and ``beta`` as contiguous (C,) arrays; 1 and 0 where absent (``xhat * 1 + 0`` is ``xhat``)."""
    gamma = numpy.ones(C, dtype) if gamma is None else numpy.ascontiguousarray(gamma)
    beta = numpy.zeros(C, dtype) if beta is None else numpy.ascontiguousarray(beta)
    return gamma, beta


def _split(fn, M, C, kind="rows"):
    """``threads.split(fn, M)``, in parts of at least ``MIN_PART_ELEMENTS[kind]`` elements (layer norm's
    statistics per row: ``"rows"``; batch norm's per column: ``"columns"``)."""
    return threads.split(fn, M, threads.rows_for(C, MIN_PART_ELEMENTS[kind]))


def _pieces(M, C):
    """``[(lo, hi, k)]``: rows ``lo:hi`` of an (M, C) array are seen ``k`` at a time, as rows of ``k*C`` (about
    ``WIDE`` elements); the last ``M % k`` rows one at a time."""
    k = max(1, min(WIDE // C, M))
    main = M - M % k
    return [(0, main, k)] + ([(main, M, 1)] if main < M else [])


def _over_columns(kernel, rows, channels, chunked=False):
    """``kernel(*row arrays, *per-channel arrays[, chunk])`` over every piece (:func:`_pieces`) and part.

    rows : (M, C) arrays, read or written, widened for each piece;  channels : (C,) arrays (None kept), tiled
    returns, when the kernel returns sums (``chunked``): their (C,) float64 totals, folded and added in order
    """
    M, C = rows[0].shape
    totals = None
    for lo, hi, k in _pieces(M, C):
        views = [a[lo:hi].reshape((hi - lo) // k, k * C) for a in rows]
        tiled = [None if a is None else numpy.tile(a, k) for a in channels]
        extra = (max(1, CHUNK_ROWS // k),) if chunked else ()
        results = _split(lambda a, b: kernel(*(v[a:b] for v in views), *tiled, *extra), *views[0].shape,
                         kind="columns")
        for sums in results if chunked else ():
            folded = [s.reshape(k, C).sum(axis=0) for s in sums]
            totals = folded if totals is None else [t + f for t, f in zip(totals, folded)]
    return totals


def normalization_forward(x, gamma, beta, epsilon, per_channel):
    """The contract's ``normalization_forward``: ``(y, mean, var)``."""
    x = numpy.ascontiguousarray(x)
    M, C = x.shape
    dtype = x.dtype
    gamma, beta = _affine(gamma, beta, C, dtype)
    eps = dtype.type(epsilon)
    y = numpy.empty_like(x)
    if not per_channel:
        mean, var = numpy.empty(M, dtype), numpy.empty(M, dtype)
        _split(lambda lo, hi: _rows_forward(x[lo:hi], gamma, beta, eps, y[lo:hi], mean[lo:hi], var[lo:hi]), M, C)
        return y, mean, var
    mean = (_over_columns(_column_sums, [x], [None], chunked=True)[0] / M).astype(dtype)
    var = (_over_columns(_column_sums, [x], [mean], chunked=True)[0] / M).astype(dtype)
    inv_std = 1 / numpy.sqrt(var + eps)
    _over_columns(_columns_forward, [x, y], [mean, inv_std, gamma, beta])
    return y, mean, var


def normalization_backward(dy, x, mean, var, gamma, beta, epsilon, per_channel):
    """The contract's ``normalization_backward``: ``(dx, dgamma, dbeta)``."""
    dy, x = numpy.ascontiguousarray(dy), numpy.ascontiguousarray(x)
    M, C = x.shape
    dtype = x.dtype
    has_gamma, has_beta = gamma is not None, beta is not None
    gamma, _ = _affine(gamma, None, C, dtype)
    eps = dtype.type(epsilon)
    dx = numpy.empty_like(x)
    if not per_channel:
        def part(lo, hi):
            dgamma, dbeta = numpy.zeros(C), numpy.zeros(C)
            _rows_backward(dy[lo:hi], x[lo:hi], mean[lo:hi], var[lo:hi], gamma, eps, dx[lo:hi], dgamma, dbeta,
                           CHUNK_ROWS)
            return dgamma, dbeta

        parts = _split(part, M, C)
        sum_dyx, sum_dy = parts[0]
        for other_dyx, other_dy in parts[1:]:
            sum_dyx, sum_dy = sum_dyx + other_dyx, sum_dy + other_dy
    else:
        inv_std = 1 / numpy.sqrt(var + eps)
        sum_dy, sum_dyx = _over_columns(_column_grad_sums, [dy, x], [mean, inv_std], chunked=True)
        # g = dy gamma: its means are gamma times those of dy and dy xhat.
        mean_g = (gamma * sum_dy / M).astype(dtype)
        mean_gx = (gamma * sum_dyx / M).astype(dtype)
        _over_columns(_columns_backward, [dy, x, dx], [mean, inv_std, gamma, mean_g, mean_gx])
    dgamma = sum_dyx.astype(dtype) if has_gamma else None
    dbeta = sum_dy.astype(dtype) if has_beta else None
    return dx, dgamma, dbeta
