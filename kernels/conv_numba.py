"""Numba kernels for conv2d: a fused, padded im2col and its adjoint col2im.

The reference ``im2col`` pads a copy of the input and then copies kh*kw
strided slices; here each window row is written once, straight from the
unpadded input, with zeros where the window hangs over the edge.

The kernels run on one thread, on purpose: they sit between BLAS GEMMs, and
the OpenMP workers of a ``parallel=True`` kernel keep spinning for a while
after it returns, taking a core from the GEMM that follows. On the 2-core
target a parallel version made conv2d's forward+backward no faster, although
each copy alone ran faster.
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def _im2col(X, kh, kw, sh, sw, top, left, OH, OW, cols):
    N, H, W, C = X.shape
    for n in range(N):
        for oh in range(OH):
            for ow in range(OW):
                row = (n * OH + oh) * OW + ow
                for i in range(kh):
                    h = oh * sh + i - top
                    for j in range(kw):
                        w = ow * sw + j - left
                        col = (i * kw + j) * C
                        if 0 <= h < H and 0 <= w < W:
                            for c in range(C):
                                cols[row, col + c] = X[n, h, w, c]
                        else:
                            for c in range(C):
                                cols[row, col + c] = 0


@njit(cache=True)
def _col2im(cols, kh, kw, sh, sw, top, left, OH, OW, dX):
    N, H, W, C = dX.shape
    for n in range(N):
        for oh in range(OH):
            for ow in range(OW):
                row = (n * OH + oh) * OW + ow
                for i in range(kh):
                    h = oh * sh + i - top
                    if h < 0 or h >= H:
                        continue
                    for j in range(kw):
                        w = ow * sw + j - left
                        if w < 0 or w >= W:
                            continue
                        col = (i * kw + j) * C
                        for c in range(C):
                            dX[n, h, w, c] += cols[row, col + c]


class ConvNumba:
    """Overrides ``ConvKernels.im2col`` / ``col2im`` with compiled loops."""

    def im2col(self, X, kh, kw, sh, sw, pads):
        top, bottom, left, right = pads
        N, H, W, C = X.shape
        OH = (H + top + bottom - kh) // sh + 1
        OW = (W + left + right - kw) // sw + 1
        X = np.ascontiguousarray(X)
        cols = np.empty((N * OH * OW, kh * kw * C), dtype=X.dtype)
        _im2col(X, kh, kw, sh, sw, top, left, OH, OW, cols)
        return cols

    def col2im(self, cols, x_shape, kh, kw, sh, sw, pads):
        top, bottom, left, right = pads
        N, H, W, C = x_shape
        OH = (H + top + bottom - kh) // sh + 1
        OW = (W + left + right - kw) // sw + 1
        cols = np.ascontiguousarray(cols).reshape(N * OH * OW, kh * kw * C)
        dX = np.zeros((N, H, W, C), dtype=cols.dtype)
        _col2im(cols, kh, kw, sh, sw, top, left, OH, OW, dX)
        return dX
