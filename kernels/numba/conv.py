"""Numba kernels for conv2d (the direct algorithm): im2col + GEMM a chunk of images at a time, on every core.

The math is the reference's (``scratchnet/ops/conv.py``): ``y = im2col(x) @ w2``,
``dw2 = im2col(x).T @ dy2``, ``dx = col2im(dy2 @ w2.T)``. What is different
here is where the bytes go:

- **Chunks.** The batch runs a few images at a time, so that the chunk's
  im2col matrix (``chunk_bytes``, about 1 MiB) stays in the core's L2 cache
  between the im2col that writes it and the GEMMs that read it, and one
  buffer serves every chunk, instead of a fresh matrix kh*kw times the
  input.
- **Cores.** The images are split between the cores (``kernels/runtime/threads.py``):
  each core runs im2col, its single-threaded GEMMs and col2im on its own
  images. The copies run on both cores, not one, and each GEMM is a whole
  core's, not half of a small one shared with the other core.
- **Epilogues.** The bias and the ReLU are applied to each chunk of ``y``
  right after its GEMM, while it is in cache (``_bias_relu``, shared with
  ``dense.py``); in the backward pass the ReLU's mask and the bias
  gradient are one pass over each chunk of ``dy`` (``_mask_and_sum``), before its GEMMs. A ReLU layer after
  the convolution would read and write the whole output twice more.
- **No dx when nobody wants it.** The first layer's input is data;
  ``need_dx=False`` skips the ``dy2 @ w2.T`` GEMM and col2im.

In NHWC, the kw pixels of one window row are kw*C consecutive numbers of x,
and they land in kw*C consecutive entries of a cols row. So im2col and
col2im copy (add) whole window rows as flat runs, clipped where the window
hangs over the left or right edge; rows above or below the input are zeros
in cols (skipped by col2im). The runs are indexed with unsigned integers:
Numba then drops its negative-index wraparound test and the loops
vectorise, which makes them several times faster when C is small.

Every kernel is ``nogil``, so the parts on different cores run at once.

Stride-1 5x5 convolutions in float32 go instead through Winograd
F(4x4, 5x5) (``winograd.py``); float64 ones stay here, exact, unless
``conv_algorithm("winograd")`` asks otherwise. ``NumbaOps.conv2d_forward``
(``backend.py``) asks ``conv2d_algorithm`` (``scratchnet/ops/conv.py``) which
one runs; ``scratchnet/_config.py`` says why.
"""
from __future__ import annotations

import numpy as np
from numba import njit, uint64

from scratchnet.ops.shapes import conv_output_size

from ..runtime import blas, threads
from .dense import _bias_relu, _mask_and_sum


@njit(cache=True, nogil=True)
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


@njit(cache=True, nogil=True)
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


#: Bytes of im2col matrix per chunk and core: with the chunk of y (or dy) and w2 beside it, the working
#: set of a chunk fits a 2 MiB L2. The backend passes its own ``chunk_bytes`` (tests shrink it).
CHUNK_BYTES = 1 << 20


def _chunk(x, kh, kw, OH, OW, chunk_bytes):
    """Images per chunk: as many as fit ``chunk_bytes`` of im2col matrix, at least one."""
    per_image = OH * OW * kh * kw * x.shape[3] * x.itemsize
    return max(1, min(x.shape[0], chunk_bytes // max(per_image, 1)))


def conv2d_forward(x, w, b, sh, sw, pads, relu, chunk_bytes=CHUNK_BYTES):
    """The contract's ``conv2d_forward`` by im2col + GEMM, a chunk of images at a time, on every core."""
    kh, kw, C, O = w.shape
    N = x.shape[0]
    OH, OW = conv_output_size(x.shape, kh, kw, sh, sw, pads)
    top, _, left, _ = pads
    x = np.ascontiguousarray(x)
    w2 = np.ascontiguousarray(w).reshape(kh * kw * C, O)
    bias = np.zeros(O, dtype=x.dtype) if b is None else np.ascontiguousarray(b)
    epilogue = relu or b is not None
    P = OH * OW  # output pixels (im2col rows) per image
    y = np.empty((N * P, O), dtype=x.dtype)
    nb = _chunk(x, kh, kw, OH, OW, chunk_bytes)

    def part(lo, hi):
        cols = np.empty((min(nb, hi - lo) * P, kh * kw * C), dtype=x.dtype)
        for n0 in range(lo, hi, nb):
            n1 = min(n0 + nb, hi)
            chunk_cols, chunk_y = cols[: (n1 - n0) * P], y[n0 * P : n1 * P]
            _im2col(x[n0:n1], kh, kw, sh, sw, top, left, OH, OW, chunk_cols)
            blas.matmul(chunk_cols, w2, out=chunk_y)
            if epilogue:
                _bias_relu(chunk_y, bias, relu)  # while the chunk of y is still in cache

    threads.split(part, N, threads.rows_for(P * kh * kw * C * O))
    return y.reshape(N, OH, OW, O)


def conv2d_backward(dy, x, w, y, sh, sw, pads, relu, need_dx, chunk_bytes=CHUNK_BYTES):
    """The contract's ``conv2d_backward``: ``dw2 = cols.T @ g`` and ``dx = col2im(g @ w2.T)``, chunk by chunk."""
    kh, kw, C, O = w.shape
    N = x.shape[0]
    OH, OW = conv_output_size(x.shape, kh, kw, sh, sw, pads)
    top, _, left, _ = pads
    K = kh * kw * C
    x = np.ascontiguousarray(x)
    w2 = np.ascontiguousarray(w).reshape(K, O)
    P = OH * OW
    dy2 = np.ascontiguousarray(dy).reshape(N * P, O)
    y2 = np.ascontiguousarray(y).reshape(N * P, O) if relu else dy2
    dx = np.empty(x.shape, dtype=x.dtype) if need_dx else None
    nb = _chunk(x, kh, kw, OH, OW, chunk_bytes)

    def part(lo, hi):
        rows = min(nb, hi - lo) * P
        cols = np.empty((rows, K), dtype=x.dtype)
        dcols = np.empty((rows, K), dtype=x.dtype) if need_dx else None
        g = np.empty((rows, O), dtype=x.dtype) if relu else dy2
        dw2, chunk_dw2 = np.zeros((K, O), dtype=x.dtype), np.empty((K, O), dtype=x.dtype)
        db = np.zeros(O)
        for n0 in range(lo, hi, nb):
            n1 = min(n0 + nb, hi)
            r = (n1 - n0) * P
            chunk_dy = dy2[n0 * P : n1 * P]
            # The ReLU's mask and db = sum of the masked dy, in one pass.
            chunk_g = g[:r] if relu else chunk_dy
            _mask_and_sum(chunk_dy, y2[n0 * P : n1 * P], relu, chunk_g, db)
            _im2col(x[n0:n1], kh, kw, sh, sw, top, left, OH, OW, cols[:r])
            # dw2 = cols.T @ dy2 sums over every image: one GEMM per chunk, accumulated.
            blas.matmul(cols[:r].T, chunk_g, out=chunk_dw2)
            dw2 += chunk_dw2
            if need_dx:
                # dx = col2im(dy2 @ w2.T), a chunk of images at a time.
                blas.matmul(chunk_g, w2.T, out=dcols[:r])
                dx[n0:n1] = 0
                _col2im(dcols[:r], kh, kw, sh, sw, top, left, OH, OW, dx[n0:n1])
        return dw2, db

    results = threads.split(part, N, threads.rows_for(P * K * O * (2 if need_dx else 1)))
    dw2, db = results[0]
    for part_dw2, part_db in results[1:]:
        dw2 += part_dw2
        db += part_db
    return dx, dw2.reshape(w.shape), db.astype(x.dtype)


def im2col(x, kh, kw, sh, sw, pads):
    """The contract's ``im2col``, compiled (:func:`_im2col`)."""
    top, bottom, left, right = pads
    N, H, W, C = x.shape
    OH, OW = conv_output_size(x.shape, kh, kw, sh, sw, pads)
    x = np.ascontiguousarray(x)
    cols = np.empty((N * OH * OW, kh * kw * C), dtype=x.dtype)
    _im2col(x, kh, kw, sh, sw, top, left, OH, OW, cols)
    return cols


def col2im(cols, x_shape, kh, kw, sh, sw, pads):
    """The contract's ``col2im``, compiled (:func:`_col2im`)."""
    top, bottom, left, right = pads
    N, H, W, C = x_shape
    OH, OW = conv_output_size(x_shape, kh, kw, sh, sw, pads)
    cols = np.ascontiguousarray(cols).reshape(N * OH * OW, kh * kw * C)
    dx = np.zeros((N, H, W, C), dtype=cols.dtype)
    _col2im(cols, kh, kw, sh, sw, top, left, OH, OW, dx)
    return dx
