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
from numba import njit, uint64

from scratchnet.ops.conv import conv_output_size


# In NHWC, the kw pixels of one window row are kw*C consecutive numbers of
# X, and they land in kw*C consecutive entries of a cols row. So both kernels
# copy (add) whole window rows as flat runs, clipped where the window hangs
# over the left or right edge; rows above or below the input are zeros in
# cols (skipped by col2im). The runs are indexed with unsigned integers:
# Numba then drops its negative-index wraparound test and the loops
# vectorise, which makes them several times faster when C is small.


@njit(cache=True)
def _im2col(X, kh, kw, sh, sw, top, left, OH, OW, cols):
    N, H, W, C = X.shape
    Xf = X.reshape(N, H, W * C)
    span = kw * C
    for n in range(N):
        for oh in range(OH):
            for ow in range(OW):
                row = (n * OH + oh) * OW + ow
                w0 = ow * sw - left
                # [lo, hi): the part of the window row that lies inside the input
                lo = max(0, -w0) * C
                hi = max(lo, min(kw, W - w0) * C)
                for i in range(kh):
                    h = oh * sh + i - top
                    base = i * span
                    if h < 0 or h >= H:
                        lo_i, hi_i = span, span
                    else:
                        lo_i, hi_i = lo, hi
                    for k in range(lo_i):
                        cols[row, base + k] = 0
                    dst, src = uint64(base + lo_i), uint64(w0 * C + lo_i)
                    for k in range(uint64(hi_i - lo_i)):
                        cols[row, dst + k] = Xf[n, h, src + k]
                    for k in range(hi_i, span):
                        cols[row, base + k] = 0


@njit(cache=True)
def _col2im(cols, kh, kw, sh, sw, top, left, OH, OW, dX):
    N, H, W, C = dX.shape
    dXf = dX.reshape(N, H, W * C)
    span = kw * C
    for n in range(N):
        for oh in range(OH):
            for ow in range(OW):
                row = (n * OH + oh) * OW + ow
                w0 = ow * sw - left
                lo = max(0, -w0) * C
                hi = max(lo, min(kw, W - w0) * C)
                for i in range(kh):
                    h = oh * sh + i - top
                    if h < 0 or h >= H:
                        continue
                    src, dst = uint64(i * span + lo), uint64(w0 * C + lo)
                    for k in range(uint64(hi - lo)):
                        dXf[n, h, dst + k] += cols[row, src + k]


class ConvNumba:
    """Overrides ``ConvKernels``: compiled im2col / col2im, and a conv2d that
    runs the batch in cache-sized chunks."""

    # Bytes of im2col matrix per chunk: a few MiB stays in the shared L3
    # cache between the im2col that writes it and the GEMMs that read it, and
    # is reused chunk after chunk, instead of a fresh matrix as large as
    # kh*kw times the input (62 MB for LeNet's second conv at batch 100).
    chunk_bytes = 2 << 20

    def _chunk(self, X, kh, kw, OH, OW):
        per_image = OH * OW * kh * kw * X.shape[3] * X.itemsize
        return max(1, min(X.shape[0], self.chunk_bytes // max(per_image, 1)))

    def conv2d_forward(self, X, W, b, sh, sw, pads):
        kh, kw, C, O = W.shape
        N = X.shape[0]
        OH, OW = conv_output_size(X.shape, kh, kw, sh, sw, pads)
        top, _, left, _ = pads
        X = np.ascontiguousarray(X)
        W2 = np.ascontiguousarray(W).reshape(kh * kw * C, O)
        P = OH * OW  # output pixels (im2col rows) per image
        Y = np.empty((N * P, O), dtype=X.dtype)
        nb = self._chunk(X, kh, kw, OH, OW)
        cols = np.empty((nb * P, kh * kw * C), dtype=X.dtype)
        for n0 in range(0, N, nb):
            n1 = min(n0 + nb, N)
            c = cols[: (n1 - n0) * P]
            _im2col(X[n0:n1], kh, kw, sh, sw, top, left, OH, OW, c)
            y = Y[n0 * P : n1 * P]
            np.matmul(c, W2, out=y)
            if b is not None:
                y += b  # while the chunk of Y is still in cache
        return Y.reshape(N, OH, OW, O)

    def conv2d_backward(self, dY, X, W, sh, sw, pads):
        kh, kw, C, O = W.shape
        N = X.shape[0]
        OH, OW = conv_output_size(X.shape, kh, kw, sh, sw, pads)
        top, _, left, _ = pads
        X = np.ascontiguousarray(X)
        W2 = np.ascontiguousarray(W).reshape(kh * kw * C, O)
        P = OH * OW
        dY2 = np.ascontiguousarray(dY).reshape(N * P, O)
        nb = self._chunk(X, kh, kw, OH, OW)
        cols = np.empty((nb * P, kh * kw * C), dtype=X.dtype)
        dcols = np.empty_like(cols)
        dW = np.zeros((kh * kw * C, O), dtype=X.dtype)
        dW_chunk = np.empty_like(dW)
        dX = np.zeros(X.shape, dtype=X.dtype)
        for n0 in range(0, N, nb):
            n1 = min(n0 + nb, N)
            rows = (n1 - n0) * P
            c, dc, dy = cols[:rows], dcols[:rows], dY2[n0 * P : n1 * P]
            _im2col(X[n0:n1], kh, kw, sh, sw, top, left, OH, OW, c)
            # dW sums over every image: one GEMM per chunk, accumulated.
            np.matmul(c.T, dy, out=dW_chunk)
            dW += dW_chunk
            np.matmul(dy, W2.T, out=dc)
            _col2im(dc, kh, kw, sh, sw, top, left, OH, OW, dX[n0:n1])
        return dX, dW.reshape(W.shape)

    def im2col(self, X, kh, kw, sh, sw, pads):
        top, bottom, left, right = pads
        N, H, W, C = X.shape
        OH, OW = conv_output_size(X.shape, kh, kw, sh, sw, pads)
        X = np.ascontiguousarray(X)
        cols = np.empty((N * OH * OW, kh * kw * C), dtype=X.dtype)
        _im2col(X, kh, kw, sh, sw, top, left, OH, OW, cols)
        return cols

    def col2im(self, cols, x_shape, kh, kw, sh, sw, pads):
        top, bottom, left, right = pads
        N, H, W, C = x_shape
        OH, OW = conv_output_size(x_shape, kh, kw, sh, sw, pads)
        cols = np.ascontiguousarray(cols).reshape(N * OH * OW, kh * kw * C)
        dX = np.zeros((N, H, W, C), dtype=cols.dtype)
        _col2im(cols, kh, kw, sh, sw, top, left, OH, OW, dX)
        return dX
