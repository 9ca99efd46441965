"""Winograd F(4x4, 5x5): a stride-1 5x5 convolution with 6.25 times fewer multiplications, forward and backward.

The Numba backend's ``conv2d`` runs float32 stride-1 5x5 convolutions
(LeNet's second layer, 14x14x32 -> 64) through this file; the result is the
reference's convolution (``scratchnet/ops/conv.py``) up to rounding. float64
convolutions run the direct algorithm unless ``conv_algorithm("winograd")``
(or ``SCRATCHNET_CONV_ALGORITHM=winograd``) asks for this one: see the end of
this docstring, and ``scratchnet/_config.py``.

Notation (as in ``conv.py``, plus)::

    m = 4, r = 5, a = m + r - 1 = 8   output tile, filter and input tile sizes
    t                                   a tile: 4x4 outputs y[n, 4th : 4th+4, 4tw : 4tw+4, :] (th < TH = ceil(OH/4))
    d_t = x[n, 4th - top : +8, 4tw - left : +8, c]   its 8x8 input window (0 outside x)
    A^T (4x8), G (8x5), B^T (8x8)       the transform matrices (below)
    f = (xi, nu)                        one of the 64 "frequencies" of an 8x8 transform

**1-D.** Four outputs of a 5-tap correlation, ``y_k = sum_j d[k + j] g[j]``, are
the coefficients of a polynomial product read backwards, so they follow from
evaluating at a = 8 points (0, 1, -1, 2, -2, 1/2, -1/2 and infinity),
multiplying point by point and interpolating (Toom-Cook; Lavin and Gray 2015)::

    y = A^T [(G g) * (B^T d)]       8 multiplications instead of 20

with ``G`` the evaluation of the filter's polynomial at the points (a row
per point; infinity takes the leading coefficient), ``A^T`` that of the
output's, and ``B^T`` the transposed inverse of the evaluation matrix of
degree a-1: correlation is the transpose of polynomial multiplication, so
interpolation moves to the input side. Each row of ``B^T`` is scaled to
integers (its factor moves into the matching row of ``G``), so the input
transform, applied to every tile, adds and multiplies small integers.

**2-D** nests the 1-D transform along both axes, and sums over channels::

    U[f, c, o] = (G w[:, :, c, o] G^T)[f]          filter transform (once per call, in float64)
    V[f, t, c] = (B^T d_t[:, :, c] B)[f]           input transform (each tile)
    M[f, t, o] = sum_c V[f, t, c] U[f, c, o]       64 GEMMs, (tiles x C) @ (C x O)
    y_t[:, :, o] = A^T M[:, t, o] A (+ b, ReLU)    output transform (each tile)

64 multiply-adds per 4x4 outputs per (c, o) instead of 400 (and 36 per 2x2,
that is 144 per 4x4, with F(2x2, 5x5), which this file ran before: on
LeNet's second layer its GEMMs took 1.5 times as long, and its whole
forward and backward 1.2 times, on one core). The GEMMs stay in BLAS. On
LeNet's 14x14 outputs the 4x4 tiles cover 16x16, and the two extra rows and
columns are computed and dropped.

**Backward**, as the adjoint of each step above, in reverse (``g`` is ``dy``
after the ReLU's mask, zero outside the output)::

    dM[f, t, o]  = (A g_t[:, :, o] A^T)[f]         adjoint of the output transform
    dU[f, c, o]  = sum_t V[f, t, c] dM[f, t, o]    64 GEMMs, (C x tiles) @ (tiles x O): K is every tile
    dw[:, :, c, o] = G^T dU[:, c, o] G             adjoint of the filter transform
    dV[f, t, c]  = sum_o dM[f, t, o] U[f, c, o]    64 GEMMs, (tiles x O) @ (O x C)
    dx[window of t] += B dV[:, t, c] B^T           adjoint of the input transform; windows overlap and add

so the weight gradient costs as many fewer multiplications, and dx needs
no flipped filter: it is the forward's own algorithm run backwards.

Layout: frequency-major (``V[f]`` is one (tiles, C) matrix), so that each
GEMM reads contiguous rows: with a tile's frequencies side by side
instead, the GEMMs ran 20% slower. Tiles are processed a few images at a time (``chunk_bytes``
of ``M``), so that ``V``, ``M`` and their gradients stay in cache between the
transforms and the GEMMs; the images are split between the cores as in
``conv_numba.py``. The transforms are written out (``_bt``, ``_b``, ``_at``,
``_a``) with one loop per output row, so that every loop stores to one place
and LLVM vectorises it over the channels (with several stores in one loop, its
alias checks give up).
The error in float32 is about 5e-6 of the output's largest value, as
F(2x2, 5x5)'s was: the points 1/2 and -1/2 keep the transforms' numbers
small (for F(3x3, 5x5), the point 3 in place of 1/2 made the error 35 times
larger). In float64 it is 1e-14.

Up to rounding is not exact, and float64 is asked to be exact: an output
whose window holds only zeros is 0 in the direct sum, but here it is the
sum of a tile's transformed values that cancel to within rounding, a tiny
nonzero of either sign whenever the tile's 8x8 window reaches a nonzero
pixel. A ReLU passes the positive ones, a max-pool over them picks another
pixel than TensorFlow, and float64 training drifts away from TensorFlow's
(0.3 to 0.7, relative, worst weight, in 200 SGD steps of LeNet). So ``auto``
keeps this file for float32, whose runs part from TensorFlow's at such
near-ties anyway (``tests/test_interop_float64.py`` says why) and where the
speed matters (``tests/test_conv_algorithm.py`` holds both).
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from numba import njit

from . import blas, threads
from .dense_numba import _mask_and_sum

M_OUT = 4  # outputs per tile and axis
_ZERO = np.float32(0)  # keeps float32 arithmetic in float32; promotes exactly with float64
POINTS = (0, 1, -1, 2, -2, Fraction(1, 2), Fraction(-1, 2))  # the finite points of F(4, 5); the eighth is infinity


def _inverse(rows):
    """The inverse of a square matrix of Fractions (Gauss-Jordan, exact)."""
    n = len(rows)
    a = [list(row) + [Fraction(int(i == j)) for j in range(n)] for i, row in enumerate(rows)]
    for col in range(n):
        pivot = next(r for r in range(col, n) if a[r][col] != 0)
        a[col], a[pivot] = a[pivot], a[col]
        a[col] = [v / a[col][col] for v in a[col]]
        for r in range(n):
            if r != col and a[r][col] != 0:
                factor = a[r][col]
                a[r] = [u - factor * v for u, v in zip(a[r], a[col])]
    return [row[n:] for row in a]


def transform_matrices(m, r, points):
    """``(A^T, G, B^T)`` of F(m, r) at ``points`` plus infinity, exact, as float64 arrays (module docstring)."""
    def evaluation(degree):
        rows = [[Fraction(p) ** k for k in range(degree)] for p in points]
        return rows + [[Fraction(int(k == degree - 1)) for k in range(degree)]]  # infinity: the leading coefficient

    a = m + r - 1
    G, AT = evaluation(r), [list(col) for col in zip(*evaluation(m))]
    BT = [list(col) for col in zip(*_inverse(evaluation(a)))]
    for i in range(a):  # integer rows of B^T; the factor moves into G
        scale = math.lcm(*(v.denominator for v in BT[i]))
        BT[i] = [v * scale for v in BT[i]]
        G[i] = [v / scale for v in G[i]]
    as_array = lambda rows: np.array([[float(v) for v in row] for row in rows])  # noqa: E731
    return as_array(AT), as_array(G), as_array(BT)


AT, G, BT = transform_matrices(M_OUT, 5, POINTS)
A_SIZE = M_OUT + 4  # the input tile: m + r - 1 = 8


# The transforms of F(4, 5) written out, one 1-D transform per function: each is the product with a row
# of the matrices above (``transform_matrices``; a test checks every coefficient), and reads its 8 (or
# 4) inputs once. Applied along a run of channels, the loops over c vectorise: every tile is a few
# dozen SIMD multiply-adds per 16 channels, where the matrix products with their zeros cost several times more.
# The coefficients are float32 (they keep float32 arithmetic in float32 and promote exactly with float64):
# B^T's rows are scaled to small integers, and A^T's entries are powers of 2, all exact in float32.
_k0p125 = np.float32(0.125)
_k0p25 = np.float32(0.25)
_k0p5 = np.float32(0.5)
_k2 = np.float32(2)
_k4 = np.float32(4)
_k5 = np.float32(5)
_k8 = np.float32(8)
_k10 = np.float32(10)
_k16 = np.float32(16)
_k17 = np.float32(17)
_k21 = np.float32(21)
_k32 = np.float32(32)
_k64 = np.float32(64)
_k80 = np.float32(80)
_k128 = np.float32(128)
_k160 = np.float32(160)


@njit(cache=True, nogil=True, inline="always")
def _bt(d0, d1, d2, d3, d4, d5, d6, d7):
    """``B^T d``: the input transform of one 8-vector."""
    return (_k4 * d0 + _k21 * d4 - _k21 * d2 - _k4 * d6,
            _k17 * d3 + _k17 * d4 - _k4 * d1 - _k4 * d2 - _k4 * d5 - _k4 * d6,
            _k4 * d1 + _k17 * d4 + _k4 * d5 - _k4 * d2 - _k17 * d3 - _k4 * d6,
            _k2 * d1 + d2 + _k8 * d5 + _k4 * d6 - _k10 * d3 - _k5 * d4,
            d2 + _k10 * d3 + _k4 * d6 - _k2 * d1 - _k5 * d4 - _k8 * d5,
            _k64 * d1 + _k128 * d2 + _k16 * d5 + _k32 * d6 - _k80 * d3 - _k160 * d4,
            _k128 * d2 + _k80 * d3 + _k32 * d6 - _k64 * d1 - _k160 * d4 - _k16 * d5,
            _k21 * d3 + _k4 * d7 - _k4 * d1 - _k21 * d5)


@njit(cache=True, nogil=True, inline="always")
def _b(v0, v1, v2, v3, v4, v5, v6, v7):
    """``B v``: the adjoint of :func:`_bt`."""
    return (_k4 * v0,
            _k4 * v2 + _k2 * v3 + _k64 * v5 - _k4 * v1 - _k2 * v4 - _k64 * v6 - _k4 * v7,
            v3 + v4 + _k128 * v5 + _k128 * v6 - _k21 * v0 - _k4 * v1 - _k4 * v2,
            _k17 * v1 + _k10 * v4 + _k80 * v6 + _k21 * v7 - _k17 * v2 - _k10 * v3 - _k80 * v5,
            _k21 * v0 + _k17 * v1 + _k17 * v2 - _k5 * v3 - _k5 * v4 - _k160 * v5 - _k160 * v6,
            _k4 * v2 + _k8 * v3 + _k16 * v5 - _k4 * v1 - _k8 * v4 - _k16 * v6 - _k21 * v7,
            _k4 * v3 + _k4 * v4 + _k32 * v5 + _k32 * v6 - _k4 * v0 - _k4 * v1 - _k4 * v2,
            _k4 * v7)


@njit(cache=True, nogil=True, inline="always")
def _at(m0, m1, m2, m3, m4, m5, m6, m7):
    """``A^T m``: the output transform of one 8-vector (4 outputs)."""
    return (m0 + m1 + m2 + m3 + m4 + m5 + m6,
            m1 + _k2 * m3 + _k0p5 * m5 - m2 - _k2 * m4 - _k0p5 * m6,
            m1 + m2 + _k4 * m3 + _k4 * m4 + _k0p25 * m5 + _k0p25 * m6,
            m1 + _k8 * m3 + _k0p125 * m5 + m7 - m2 - _k8 * m4 - _k0p125 * m6)


@njit(cache=True, nogil=True, inline="always")
def _a(g0, g1, g2, g3):
    """``A g``: the adjoint of :func:`_at` (8 values from 4)."""
    return (g0,
            g0 + g1 + g2 + g3,
            g0 + g2 - g1 - g3,
            g0 + _k2 * g1 + _k4 * g2 + _k8 * g3,
            g0 + _k4 * g2 - _k2 * g1 - _k8 * g3,
            g0 + _k0p5 * g1 + _k0p25 * g2 + _k0p125 * g3,
            g0 + _k0p25 * g2 - _k0p5 * g1 - _k0p125 * g3,
            g3)


@njit(cache=True, nogil=True)
def _input_transform(xpad, TH, TW, rows, V):
    """``V[f, t, c] = (B^T d_t B)[f]`` for every tile of the zero-padded images ``xpad`` (tiles image by image).

    Along the tile rows first: the windows of one row of tiles share their A_SIZE
    input rows, so ``B^T`` runs down every column of those rows at once, one
    long loop over the (column, channel) run (``rows``, (A_SIZE, Wp*C)); each
    window then needs only its row transforms.
    """
    N, Hp, Wp, C = xpad.shape
    L = Wp * C
    for n in range(N):
        xf = xpad[n].reshape(Hp, L)
        for th in range(TH):
            r = M_OUT * th
            for k in range(L):  # rows[xi, :] = sum_i BT[xi, i] xpad[r + i, :]
                (rows[0, k], rows[1, k], rows[2, k], rows[3, k], rows[4, k], rows[5, k], rows[6, k], rows[7, k]) = _bt(
                    xf[r, k], xf[r + 1, k], xf[r + 2, k], xf[r + 3, k], xf[r + 4, k], xf[r + 5, k], xf[r + 6, k], xf[r + 7, k])
            for tw in range(TW):  # V[(xi, :), t] = B^T rows[xi, window of t]
                t = (n * TH + th) * TW + tw
                q = M_OUT * tw * C
                for xi in range(A_SIZE):
                    f = xi * A_SIZE
                    w = rows[xi, q : q + A_SIZE * C]  # the window's A_SIZE columns, C channels each
                    # One loop per output row of V, so that each loop stores to one place and vectorises.
                    for c in range(C):
                        V[f, t, c] = _bt(w[c], w[C + c], w[2 * C + c], w[3 * C + c], w[4 * C + c], w[5 * C + c], w[6 * C + c], w[7 * C + c])[0]
                    for c in range(C):
                        V[f + 1, t, c] = _bt(w[c], w[C + c], w[2 * C + c], w[3 * C + c], w[4 * C + c], w[5 * C + c], w[6 * C + c], w[7 * C + c])[1]
                    for c in range(C):
                        V[f + 2, t, c] = _bt(w[c], w[C + c], w[2 * C + c], w[3 * C + c], w[4 * C + c], w[5 * C + c], w[6 * C + c], w[7 * C + c])[2]
                    for c in range(C):
                        V[f + 3, t, c] = _bt(w[c], w[C + c], w[2 * C + c], w[3 * C + c], w[4 * C + c], w[5 * C + c], w[6 * C + c], w[7 * C + c])[3]
                    for c in range(C):
                        V[f + 4, t, c] = _bt(w[c], w[C + c], w[2 * C + c], w[3 * C + c], w[4 * C + c], w[5 * C + c], w[6 * C + c], w[7 * C + c])[4]
                    for c in range(C):
                        V[f + 5, t, c] = _bt(w[c], w[C + c], w[2 * C + c], w[3 * C + c], w[4 * C + c], w[5 * C + c], w[6 * C + c], w[7 * C + c])[5]
                    for c in range(C):
                        V[f + 6, t, c] = _bt(w[c], w[C + c], w[2 * C + c], w[3 * C + c], w[4 * C + c], w[5 * C + c], w[6 * C + c], w[7 * C + c])[6]
                    for c in range(C):
                        V[f + 7, t, c] = _bt(w[c], w[C + c], w[2 * C + c], w[3 * C + c], w[4 * C + c], w[5 * C + c], w[6 * C + c], w[7 * C + c])[7]


@njit(cache=True, nogil=True)
def _input_transform_adjoint(dV, TH, TW, rows, column, dxpad):
    """The adjoint of :func:`_input_transform`: ``dxpad[window of t] += B dV[:, t] B^T`` (windows overlap and add).

    The steps of the forward in reverse: each window's row adjoints add into
    ``rows`` (windows of one tile row overlap there), and one long loop then
    runs ``B`` down the columns of the whole tile row. A window's A_SIZE
    frequencies of one row are first gathered into ``column`` (A_SIZE*C), so that
    the loops below read one contiguous run (read from separate rows of ``dV``,
    they ran four times slower).
    """
    N, Hp, Wp, C = dxpad.shape
    L = Wp * C
    for n in range(N):
        df = dxpad[n].reshape(Hp, L)
        for th in range(TH):
            r = M_OUT * th
            rows[:] = 0
            for tw in range(TW):  # rows[xi, window of t] += B dV[(xi, :), t]
                t = (n * TH + th) * TW + tw
                q = M_OUT * tw * C
                for xi in range(A_SIZE):
                    f = xi * A_SIZE
                    for k in range(A_SIZE):
                        for c in range(C):
                            column[k * C + c] = dV[f + k, t, c]
                    v, w = column, rows[xi, q : q + A_SIZE * C]
                    # One loop per column of the window: each stores to one place and vectorises.
                    for c in range(C):
                        w[c] += _b(v[c], v[C + c], v[2 * C + c], v[3 * C + c], v[4 * C + c], v[5 * C + c], v[6 * C + c], v[7 * C + c])[0]
                    for c in range(C):
                        w[C + c] += _b(v[c], v[C + c], v[2 * C + c], v[3 * C + c], v[4 * C + c], v[5 * C + c], v[6 * C + c], v[7 * C + c])[1]
                    for c in range(C):
                        w[2 * C + c] += _b(v[c], v[C + c], v[2 * C + c], v[3 * C + c], v[4 * C + c], v[5 * C + c], v[6 * C + c], v[7 * C + c])[2]
                    for c in range(C):
                        w[3 * C + c] += _b(v[c], v[C + c], v[2 * C + c], v[3 * C + c], v[4 * C + c], v[5 * C + c], v[6 * C + c], v[7 * C + c])[3]
                    for c in range(C):
                        w[4 * C + c] += _b(v[c], v[C + c], v[2 * C + c], v[3 * C + c], v[4 * C + c], v[5 * C + c], v[6 * C + c], v[7 * C + c])[4]
                    for c in range(C):
                        w[5 * C + c] += _b(v[c], v[C + c], v[2 * C + c], v[3 * C + c], v[4 * C + c], v[5 * C + c], v[6 * C + c], v[7 * C + c])[5]
                    for c in range(C):
                        w[6 * C + c] += _b(v[c], v[C + c], v[2 * C + c], v[3 * C + c], v[4 * C + c], v[5 * C + c], v[6 * C + c], v[7 * C + c])[6]
                    for c in range(C):
                        w[7 * C + c] += _b(v[c], v[C + c], v[2 * C + c], v[3 * C + c], v[4 * C + c], v[5 * C + c], v[6 * C + c], v[7 * C + c])[7]
            for k in range(L):  # dxpad[r + i, :] += sum_xi BT[xi, i] rows[xi, :]
                e0, e1, e2, e3, e4, e5, e6, e7 = _b(rows[0, k], rows[1, k], rows[2, k], rows[3, k], rows[4, k], rows[5, k], rows[6, k], rows[7, k])
                df[r, k] += e0
                df[r + 1, k] += e1
                df[r + 2, k] += e2
                df[r + 3, k] += e3
                df[r + 4, k] += e4
                df[r + 5, k] += e5
                df[r + 6, k] += e6
                df[r + 7, k] += e7


@njit(cache=True, nogil=True)
def _output_transform(M, b, relu, tmp, y):
    """``y_t = A^T M[:, t] A + b`` (then the ReLU) for every tile, the parts outside ``y`` dropped."""
    N, OH, OW, O = y.shape
    TH, TW = (OH + M_OUT - 1) // M_OUT, (OW + M_OUT - 1) // M_OUT
    for n in range(N):
        for th in range(TH):
            for tw in range(TW):
                t = (n * TH + th) * TW + tw
                for nu in range(A_SIZE):  # down each column of M: tmp[:, nu] = A^T M[(:, nu), t]
                    for o in range(O):
                        tmp[0, nu, o] = _at(M[nu, t, o], M[A_SIZE + nu, t, o], M[2 * A_SIZE + nu, t, o], M[3 * A_SIZE + nu, t, o], M[4 * A_SIZE + nu, t, o], M[5 * A_SIZE + nu, t, o], M[6 * A_SIZE + nu, t, o], M[7 * A_SIZE + nu, t, o])[0]
                    for o in range(O):
                        tmp[1, nu, o] = _at(M[nu, t, o], M[A_SIZE + nu, t, o], M[2 * A_SIZE + nu, t, o], M[3 * A_SIZE + nu, t, o], M[4 * A_SIZE + nu, t, o], M[5 * A_SIZE + nu, t, o], M[6 * A_SIZE + nu, t, o], M[7 * A_SIZE + nu, t, o])[1]
                    for o in range(O):
                        tmp[2, nu, o] = _at(M[nu, t, o], M[A_SIZE + nu, t, o], M[2 * A_SIZE + nu, t, o], M[3 * A_SIZE + nu, t, o], M[4 * A_SIZE + nu, t, o], M[5 * A_SIZE + nu, t, o], M[6 * A_SIZE + nu, t, o], M[7 * A_SIZE + nu, t, o])[2]
                    for o in range(O):
                        tmp[3, nu, o] = _at(M[nu, t, o], M[A_SIZE + nu, t, o], M[2 * A_SIZE + nu, t, o], M[3 * A_SIZE + nu, t, o], M[4 * A_SIZE + nu, t, o], M[5 * A_SIZE + nu, t, o], M[6 * A_SIZE + nu, t, o], M[7 * A_SIZE + nu, t, o])[3]
                for i in range(M_OUT):  # along each row: y[i, :] = A^T tmp[i, :] + b
                    oh = M_OUT * th + i
                    if oh >= OH:
                        continue
                    # One loop per output column, each storing to one place (it vectorises over o).
                    if M_OUT * tw + 0 < OW:
                        for o in range(O):
                            v = _at(tmp[i, 0, o], tmp[i, 1, o], tmp[i, 2, o], tmp[i, 3, o], tmp[i, 4, o], tmp[i, 5, o], tmp[i, 6, o], tmp[i, 7, o])[0] + b[o]
                            # ``v < 0``: a NaN stays NaN, as numpy.maximum keeps it.
                            y[n, oh, M_OUT * tw + 0, o] = _ZERO if relu and v < _ZERO else v
                    if M_OUT * tw + 1 < OW:
                        for o in range(O):
                            v = _at(tmp[i, 0, o], tmp[i, 1, o], tmp[i, 2, o], tmp[i, 3, o], tmp[i, 4, o], tmp[i, 5, o], tmp[i, 6, o], tmp[i, 7, o])[1] + b[o]
                            # ``v < 0``: a NaN stays NaN, as numpy.maximum keeps it.
                            y[n, oh, M_OUT * tw + 1, o] = _ZERO if relu and v < _ZERO else v
                    if M_OUT * tw + 2 < OW:
                        for o in range(O):
                            v = _at(tmp[i, 0, o], tmp[i, 1, o], tmp[i, 2, o], tmp[i, 3, o], tmp[i, 4, o], tmp[i, 5, o], tmp[i, 6, o], tmp[i, 7, o])[2] + b[o]
                            # ``v < 0``: a NaN stays NaN, as numpy.maximum keeps it.
                            y[n, oh, M_OUT * tw + 2, o] = _ZERO if relu and v < _ZERO else v
                    if M_OUT * tw + 3 < OW:
                        for o in range(O):
                            v = _at(tmp[i, 0, o], tmp[i, 1, o], tmp[i, 2, o], tmp[i, 3, o], tmp[i, 4, o], tmp[i, 5, o], tmp[i, 6, o], tmp[i, 7, o])[3] + b[o]
                            # ``v < 0``: a NaN stays NaN, as numpy.maximum keeps it.
                            y[n, oh, M_OUT * tw + 3, o] = _ZERO if relu and v < _ZERO else v


@njit(cache=True, nogil=True)
def _output_transform_adjoint(g, TH, TW, gt, tmp, dM):
    """The adjoint of :func:`_output_transform` (without its epilogue): ``dM[:, t] = A g_t A^T``, ``g`` 0 outside.

    gt : (M_OUT, M_OUT, O) and tmp : (M_OUT, A_SIZE, O) scratch. Each tile's
    block of ``g`` is copied into ``gt`` first, with zeros past the output, so
    that the loops below read it without branching; then every loop stores to
    one place (with the eight entries of a row of ``tmp`` stored by one loop,
    it ran a quarter slower).
    """
    N, OH, OW, O = g.shape
    for n in range(N):
        for th in range(TH):
            for tw in range(TW):
                t = (n * TH + th) * TW + tw
                oh, ow = M_OUT * th, M_OUT * tw
                for i in range(M_OUT):  # tmp[i, :] = A g[i, :]
                    for j in range(M_OUT):
                        if oh + i < OH and ow + j < OW:
                            for o in range(O):
                                gt[i, j, o] = g[n, oh + i, ow + j, o]
                        else:
                            for o in range(O):
                                gt[i, j, o] = _ZERO
                    for o in range(O):
                        tmp[i, 0, o] = _a(gt[i, 0, o], gt[i, 1, o], gt[i, 2, o], gt[i, 3, o])[0]
                    for o in range(O):
                        tmp[i, 1, o] = _a(gt[i, 0, o], gt[i, 1, o], gt[i, 2, o], gt[i, 3, o])[1]
                    for o in range(O):
                        tmp[i, 2, o] = _a(gt[i, 0, o], gt[i, 1, o], gt[i, 2, o], gt[i, 3, o])[2]
                    for o in range(O):
                        tmp[i, 3, o] = _a(gt[i, 0, o], gt[i, 1, o], gt[i, 2, o], gt[i, 3, o])[3]
                    for o in range(O):
                        tmp[i, 4, o] = _a(gt[i, 0, o], gt[i, 1, o], gt[i, 2, o], gt[i, 3, o])[4]
                    for o in range(O):
                        tmp[i, 5, o] = _a(gt[i, 0, o], gt[i, 1, o], gt[i, 2, o], gt[i, 3, o])[5]
                    for o in range(O):
                        tmp[i, 6, o] = _a(gt[i, 0, o], gt[i, 1, o], gt[i, 2, o], gt[i, 3, o])[6]
                    for o in range(O):
                        tmp[i, 7, o] = _a(gt[i, 0, o], gt[i, 1, o], gt[i, 2, o], gt[i, 3, o])[7]
                for nu in range(A_SIZE):  # dM[(:, nu), t] = A tmp[:, nu], one loop per row of dM (one store each)
                    for o in range(O):
                        dM[nu, t, o] = _a(tmp[0, nu, o], tmp[1, nu, o], tmp[2, nu, o], tmp[3, nu, o])[0]
                    for o in range(O):
                        dM[A_SIZE + nu, t, o] = _a(tmp[0, nu, o], tmp[1, nu, o], tmp[2, nu, o], tmp[3, nu, o])[1]
                    for o in range(O):
                        dM[2 * A_SIZE + nu, t, o] = _a(tmp[0, nu, o], tmp[1, nu, o], tmp[2, nu, o], tmp[3, nu, o])[2]
                    for o in range(O):
                        dM[3 * A_SIZE + nu, t, o] = _a(tmp[0, nu, o], tmp[1, nu, o], tmp[2, nu, o], tmp[3, nu, o])[3]
                    for o in range(O):
                        dM[4 * A_SIZE + nu, t, o] = _a(tmp[0, nu, o], tmp[1, nu, o], tmp[2, nu, o], tmp[3, nu, o])[4]
                    for o in range(O):
                        dM[5 * A_SIZE + nu, t, o] = _a(tmp[0, nu, o], tmp[1, nu, o], tmp[2, nu, o], tmp[3, nu, o])[5]
                    for o in range(O):
                        dM[6 * A_SIZE + nu, t, o] = _a(tmp[0, nu, o], tmp[1, nu, o], tmp[2, nu, o], tmp[3, nu, o])[6]
                    for o in range(O):
                        dM[7 * A_SIZE + nu, t, o] = _a(tmp[0, nu, o], tmp[1, nu, o], tmp[2, nu, o], tmp[3, nu, o])[7]


class Winograd:
    """F(4x4, 5x5) for stride-1 5x5 convolutions: ``forward`` and ``backward`` with ``ConvNumba``'s arguments."""

    # Bytes of M (or dM) per chunk and core: with V beside it, a chunk's working set stays in L2.
    chunk_bytes = 1 << 20

    #: What :meth:`applies` asks, for the error of ``conv_algorithm("winograd")`` on another convolution.
    requirement = "Winograd F(4x4, 5x5) does only stride-1 5x5 convolutions with at least 8 channels in and out"

    @staticmethod
    def applies(x, w, sh, sw):
        """Stride 1, a 5x5 kernel, and enough channels in and out for the per-frequency GEMMs to pay."""
        kh, kw, C, O = w.shape
        return (kh, kw) == (5, 5) and (sh, sw) == (1, 1) and C >= 8 and O >= 8

    def _geometry(self, x_shape, O, OH, OW, itemsize):
        TH, TW = -(-OH // M_OUT), -(-OW // M_OUT)
        per_image = A_SIZE * A_SIZE * TH * TW * O * itemsize
        nb = max(1, min(x_shape[0], self.chunk_bytes // max(per_image, 1)))
        return TH, TW, nb

    @staticmethod
    def _filter_transform(w):
        """``U[f, c, o] = (G w[:, :, c, o] G^T)[f]``, in float64, cast to ``w``'s dtype; (64, C, O)."""
        kh, kw, C, O = w.shape
        return np.ascontiguousarray(_sandwich(G, w.astype(np.float64)).reshape(A_SIZE * A_SIZE, C, O),
                                    dtype=w.dtype)

    def forward(self, x, w, b, pads, OH, OW, relu):
        N, H, W, C = x.shape
        O = w.shape[3]
        top, _, left, _ = pads
        dtype = x.dtype
        TH, TW, nb = self._geometry(x.shape, O, OH, OW, x.itemsize)
        F = A_SIZE * A_SIZE
        U = self._filter_transform(w)
        bias = np.zeros(O, dtype=dtype) if b is None else np.ascontiguousarray(b)
        x = np.ascontiguousarray(x)
        y = np.empty((N, OH, OW, O), dtype=dtype)

        def part(lo, hi):
            tiles = min(nb, hi - lo) * TH * TW
            xpad = _padded(min(nb, hi - lo), TH, TW, C, dtype)
            V = np.empty((F, tiles, C), dtype=dtype)
            M = np.empty((F, tiles, O), dtype=dtype)
            rows = np.empty((A_SIZE, xpad.shape[2] * C), dtype=dtype)
            tmp_out = np.empty((M_OUT, A_SIZE, O), dtype=dtype)
            for n0 in range(lo, hi, nb):
                n1 = min(n0 + nb, hi)
                k, t = n1 - n0, (n1 - n0) * TH * TW
                _place(x[n0:n1], top, left, xpad[:k])
                _input_transform(xpad[:k], TH, TW, rows, V[:, :t])
                blas.matmul(V[:, :t], U, out=M[:, :t])  # M[f] = V[f] @ U[f], one GEMM per frequency
                _output_transform(M[:, :t], bias, relu, tmp_out, y[n0:n1])

        threads.split(part, N, threads.rows_for(F * TH * TW * C * O))
        return y

    def backward(self, dy, x, w, y, pads, relu, need_dx):
        N, H, W, C = x.shape
        _, OH, OW, O = dy.shape
        top, _, left, _ = pads
        dtype = x.dtype
        TH, TW, nb = self._geometry(x.shape, O, OH, OW, x.itemsize)
        F = A_SIZE * A_SIZE
        Ut = np.ascontiguousarray(self._filter_transform(w).transpose(0, 2, 1))  # (64, O, C): dV = dM @ U^T
        x = np.ascontiguousarray(x)
        dy2 = np.ascontiguousarray(dy).reshape(N * OH * OW, O)
        y2 = np.ascontiguousarray(y).reshape(N * OH * OW, O) if relu else dy2
        dx = np.empty(x.shape, dtype=dtype) if need_dx else None
        P = OH * OW

        def part(lo, hi):
            tiles = min(nb, hi - lo) * TH * TW
            xpad = _padded(min(nb, hi - lo), TH, TW, C, dtype)
            V = np.empty((F, tiles, C), dtype=dtype)
            dM = np.empty((F, tiles, O), dtype=dtype)
            dV = np.empty((F, tiles, C), dtype=dtype) if need_dx else None
            dxpad = np.empty_like(xpad) if need_dx else None
            column = np.empty(A_SIZE * C, dtype=dtype)
            g = np.empty((min(nb, hi - lo) * P, O), dtype=dtype) if relu else None
            rows = np.empty((A_SIZE, xpad.shape[2] * C), dtype=dtype)
            tmp_out = np.empty((M_OUT, A_SIZE, O), dtype=dtype)
            g_tile = np.empty((M_OUT, M_OUT, O), dtype=dtype)
            dU, chunk_dU = np.zeros((F, C, O), dtype=dtype), np.empty((F, C, O), dtype=dtype)
            db = np.zeros(O)
            for n0 in range(lo, hi, nb):
                n1 = min(n0 + nb, hi)
                k, t = n1 - n0, (n1 - n0) * TH * TW
                chunk_g = g[: k * P] if relu else dy2[n0 * P : n1 * P]
                # The ReLU's mask and db = sum of the masked dy, in one pass.
                _mask_and_sum(dy2[n0 * P : n1 * P], y2[n0 * P : n1 * P], relu, chunk_g, db)
                _output_transform_adjoint(chunk_g.reshape(k, OH, OW, O), TH, TW, g_tile, tmp_out, dM[:, :t])
                _place(x[n0:n1], top, left, xpad[:k])
                _input_transform(xpad[:k], TH, TW, rows, V[:, :t])
                # dU[f] += V[f].T @ dM[f]: the weight gradient sums over every tile.
                blas.matmul(V[:, :t].transpose(0, 2, 1), dM[:, :t], out=chunk_dU)
                dU += chunk_dU
                if need_dx:
                    blas.matmul(dM[:, :t], Ut, out=dV[:, :t])  # dV[f] = dM[f] @ U[f].T
                    dxpad[:k] = 0
                    _input_transform_adjoint(dV[:, :t], TH, TW, rows, column, dxpad[:k])
                    dx[n0:n1] = dxpad[:k, top : top + H, left : left + W]  # what falls on the padding is dropped
            return dU, db

        results = threads.split(part, N, threads.rows_for(F * TH * TW * C * O * (2 if need_dx else 1)))
        dU, db = results[0]
        for part_dU, part_db in results[1:]:
            dU += part_dU
            db += part_db
        # dw[i, j, c, o] = sum_f G[xi, i] dU[f, c, o] G[nu, j], in float64
        dw = _sandwich(G.T, dU.astype(np.float64).reshape(A_SIZE, A_SIZE, C, O))
        return dx, dw.astype(dtype), db.astype(dtype)


def _sandwich(L, t):
    """``out[a, b, c, o] = sum_{i, j} L[a, i] L[b, j] t[i, j, c, o]``: ``L t[:, :, c, o] L^T`` for every (c, o).

    Two small matrix products over all (c, o) at once (rows, then columns);
    ``numpy.einsum`` spent ten times as long choosing its contraction order
    as computing it (0.5 ms a call for LeNet's 5x5x32x64 filter).
    """
    i, j, C, O = t.shape
    rows = (L @ t.reshape(i, j * C * O)).reshape(L.shape[0], j, C * O)  # sum_i L[a, i] t[i, j, co]
    return np.matmul(L, rows).reshape(L.shape[0], L.shape[0], C, O)  # sum_j L[b, j] rows[a, j, co]


def _padded(images, TH, TW, C, dtype):
    """A zeroed buffer holding ``images`` images with every tile's window inside: (images, 4 TH + 4, 4 TW + 4, C)."""
    return np.zeros((images, M_OUT * TH + A_SIZE - M_OUT, M_OUT * TW + A_SIZE - M_OUT, C), dtype=dtype)


def _place(x, top, left, xpad):
    """Copy ``x`` into the zero-padded buffer at (top, left); what lies outside ``x`` stays 0."""
    N, H, W, _ = x.shape
    xpad[:, top : top + H, left : left + W] = x
