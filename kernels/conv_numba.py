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

from scratchnet.ops.shapes import conv_output_size


# In NHWC, the kw pixels of one window row are kw*C consecutive numbers of
# x, and they land in kw*C consecutive entries of a cols row. So both kernels
# copy (add) whole window rows as flat runs, clipped where the window hangs
# over the left or right edge; rows above or below the input are zeros in
# cols (skipped by col2im). The runs are indexed with unsigned integers:
# Numba then drops its negative-index wraparound test and the loops
# vectorise, which makes them several times faster when C is small.


@njit(cache=True)
def _im2col(x, kh, kw, sh, sw, top, left, OH, OW, cols):
    """``cols[(n, oh, ow), (i, j, c)] = x[n, oh*sh + i - top, ow*sw + j - left, c]``, 0 outside ``x``."""
    N, H, W, C = x.shape
    xf = x.reshape(N, H, W * C)
    span = kw * C
    for n in range(N):
        for oh in range(OH):
            for ow in range(OW):
                row = (n * OH + oh) * OW + ow
                iw0 = ow * sw - left  # input column of the window's left edge
                # [lo, hi): the part of the window row that lies inside the input
                lo = max(0, -iw0) * C
                hi = max(lo, min(kw, W - iw0) * C)
                for i in range(kh):
                    ih = oh * sh + i - top
                    base = i * span
                    if ih < 0 or ih >= H:
                        lo_i, hi_i = span, span
                    else:
                        lo_i, hi_i = lo, hi
                    for k in range(lo_i):
                        cols[row, base + k] = 0
                    dst, src = uint64(base + lo_i), uint64(iw0 * C + lo_i)
                    for k in range(uint64(hi_i - lo_i)):
                        cols[row, dst + k] = xf[n, ih, src + k]
                    for k in range(hi_i, span):
                        cols[row, base + k] = 0


@njit(cache=True)
def _col2im(cols, kh, kw, sh, sw, top, left, OH, OW, dx):
    """The adjoint of :func:`_im2col`: ``dx[n, ih, iw, c] += cols[(n, oh, ow), (i, j, c)]``
    over the same index map (``dx`` zeroed by the caller)."""
    N, H, W, C = dx.shape
    dxf = dx.reshape(N, H, W * C)
    span = kw * C
    for n in range(N):
        for oh in range(OH):
            for ow in range(OW):
                row = (n * OH + oh) * OW + ow
                iw0 = ow * sw - left
                lo = max(0, -iw0) * C
                hi = max(lo, min(kw, W - iw0) * C)
                for i in range(kh):
                    ih = oh * sh + i - top
                    if ih < 0 or ih >= H:
                        continue
                    src, dst = uint64(i * span + lo), uint64(iw0 * C + lo)
                    for k in range(uint64(hi - lo)):
                        dxf[n, ih, dst + k] += cols[row, src + k]


class ConvNumba:
    """Overrides ``ConvReference``: compiled im2col / col2im, and a conv2d that
    runs the batch in cache-sized chunks (the math is derived in ``scratchnet/ops/conv.py``)."""

    # Bytes of im2col matrix per chunk: a few MiB stays in the shared L3
    # cache between the im2col that writes it and the GEMMs that read it, and
    # is reused chunk after chunk, instead of a fresh matrix as large as
    # kh*kw times the input (62 MB for LeNet's second conv at batch 100).
    chunk_bytes = 2 << 20

    def _chunk(self, x, kh, kw, OH, OW):
        """Images per chunk: as many as fit ``chunk_bytes`` of im2col matrix, at least one."""
        per_image = OH * OW * kh * kw * x.shape[3] * x.itemsize
        return max(1, min(x.shape[0], self.chunk_bytes // max(per_image, 1)))

    def conv2d_forward(self, x, w, b, sh, sw, pads):
        kh, kw, C, O = w.shape
        N = x.shape[0]
        OH, OW = conv_output_size(x.shape, kh, kw, sh, sw, pads)
        top, _, left, _ = pads
        x = np.ascontiguousarray(x)
        w2 = np.ascontiguousarray(w).reshape(kh * kw * C, O)
        P = OH * OW  # output pixels (im2col rows) per image
        y = np.empty((N * P, O), dtype=x.dtype)
        nb = self._chunk(x, kh, kw, OH, OW)
        cols = np.empty((nb * P, kh * kw * C), dtype=x.dtype)
        for n0 in range(0, N, nb):
            n1 = min(n0 + nb, N)
            chunk_cols = cols[: (n1 - n0) * P]
            _im2col(x[n0:n1], kh, kw, sh, sw, top, left, OH, OW, chunk_cols)
            chunk_y = y[n0 * P : n1 * P]
            np.matmul(chunk_cols, w2, out=chunk_y)
            if b is not None:
                chunk_y += b  # while the chunk of y is still in cache
        return y.reshape(N, OH, OW, O)

    def conv2d_backward(self, dy, x, w, sh, sw, pads):
        kh, kw, C, O = w.shape
        N = x.shape[0]
        OH, OW = conv_output_size(x.shape, kh, kw, sh, sw, pads)
        top, _, left, _ = pads
        x = np.ascontiguousarray(x)
        w2 = np.ascontiguousarray(w).reshape(kh * kw * C, O)
        P = OH * OW
        dy2 = np.ascontiguousarray(dy).reshape(N * P, O)
        nb = self._chunk(x, kh, kw, OH, OW)
        cols = np.empty((nb * P, kh * kw * C), dtype=x.dtype)
        dcols = np.empty_like(cols)
        dw2 = np.zeros((kh * kw * C, O), dtype=x.dtype)
        chunk_dw2 = np.empty_like(dw2)
        dx = np.zeros(x.shape, dtype=x.dtype)
        for n0 in range(0, N, nb):
            n1 = min(n0 + nb, N)
            rows = (n1 - n0) * P
            chunk_cols, chunk_dcols, chunk_dy = cols[:rows], dcols[:rows], dy2[n0 * P : n1 * P]
            _im2col(x[n0:n1], kh, kw, sh, sw, top, left, OH, OW, chunk_cols)
            # dw2 = cols.T @ dy2 sums over every image: one GEMM per chunk, accumulated.
            np.matmul(chunk_cols.T, chunk_dy, out=chunk_dw2)
            dw2 += chunk_dw2
            # dx = col2im(dy2 @ w2.T), a chunk of images at a time.
            np.matmul(chunk_dy, w2.T, out=chunk_dcols)
            _col2im(chunk_dcols, kh, kw, sh, sw, top, left, OH, OW, dx[n0:n1])
        return dx, dw2.reshape(w.shape)

    def im2col(self, x, kh, kw, sh, sw, pads):
        top, bottom, left, right = pads
        N, H, W, C = x.shape
        OH, OW = conv_output_size(x.shape, kh, kw, sh, sw, pads)
        x = np.ascontiguousarray(x)
        cols = np.empty((N * OH * OW, kh * kw * C), dtype=x.dtype)
        _im2col(x, kh, kw, sh, sw, top, left, OH, OW, cols)
        return cols

    def col2im(self, cols, x_shape, kh, kw, sh, sw, pads):
        top, bottom, left, right = pads
        N, H, W, C = x_shape
        OH, OW = conv_output_size(x_shape, kh, kw, sh, sw, pads)
        cols = np.ascontiguousarray(cols).reshape(N * OH * OW, kh * kw * C)
        dx = np.zeros((N, H, W, C), dtype=cols.dtype)
        _col2im(cols, kh, kw, sh, sw, top, left, OH, OW, dx)
        return dx
