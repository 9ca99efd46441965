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

64 multiply-adds per 4x4 outputs per (c, o) instead of 400. The GEMMs stay in BLAS. On
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
GEMM reads contiguous rows. Tiles are processed a few images at a time (``chunk_bytes``
of ``M``), so that ``V``, ``M`` and their gradients stay in cache between the
transforms and the GEMMs; the images are split between the cores as in
``conv.py``. The transforms' loops are generated from the matrices
(``winograd_transforms.py``), one loop per output row, so that every loop
stores to one place and LLVM vectorises it over the channels.

Why it is exact up to rounding: every step is a product with an exact
matrix (rational arithmetic, then float64 values that are exact in float32
too), and the 2-D algorithm is the 1-D identity applied along each axis. The
rounding is small because the points 1/2 and -1/2 keep the transforms'
numbers small: the error in float32 is about 5e-6 of the output's largest
value, in float64 about 1e-14.

Up to rounding is not exact, and float64 is asked to be exact: an output
whose window holds only zeros is 0 in the direct sum, but here it is the
sum of a tile's transformed values that cancel to within rounding, a tiny
nonzero of either sign whenever the tile's 8x8 window reaches a nonzero
pixel. A ReLU passes the positive ones, a max-pool over them picks another
pixel than TensorFlow, and float64 training drifts away from TensorFlow's. So ``auto``
keeps this file for float32, whose runs part from TensorFlow's at such
near-ties anyway (``tests/test_interop_float64.py`` says why) and where the
speed matters (``tests/test_conv_algorithm.py`` holds both).
"""
from __future__ import annotations

import numpy as np

from ..runtime import blas, threads
from .dense import _mask_and_sum
from .winograd_transforms import (A_SIZE, M_OUT, G, _input_transform, _input_transform_adjoint, _output_transform,
                                  _output_transform_adjoint)


class Winograd:
    """F(4x4, 5x5) for stride-1 5x5 convolutions: ``forward`` and ``backward``, which ``NumbaOps`` calls."""

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
    as computing it.
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
