"""Numba kernels for max pooling (max and argmax in one pass, and the scatter back) and average pooling.

The tie rule, the gradient's routing and average pooling's divisor are the
reference's, derived in ``scratchnet/ops/pooling.py``. Average pooling sums
a window in the reference's order (row-major) and divides by the same count;
overlapping windows may add their gradients in another order.

Channels are the innermost loop (NHWC), so each window offset compares a
contiguous run of C values.

The kernels are not ``parallel=True``. In a training step they run between
BLAS GEMMs, and on a 2-core machine a Numba thread pool woken there fights
BLAS's own threads for the cores (``bench/RESULTS.md``, "Kernel design notes"). Instead the
images are split between the cores as the convolutions split theirs
(``kernels/runtime/threads.py``): each part runs the serial, ``nogil`` kernel on its
own images.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from scratchnet.ops.shapes import conv_output_size

from ..runtime import threads

# Elements of input a part should hold at least (a memory-bound pass: about 50 microseconds).
MIN_PART_ELEMENTS = 1 << 18


@njit(cache=True, nogil=True)
def _max_pool2d_forward(x, kh, kw, sh, sw, top, left, y, argmax):
    """``y`` = the max of each window, ``argmax`` = ``ih*W + iw`` of its FIRST maximum (row-major)."""
    N, H, W, C = x.shape
    _, OH, OW, _ = y.shape
    for n in range(N):
        for oh in range(OH):
            for ow in range(OW):
                first = True
                for i in range(kh):
                    ih = oh * sh + i - top
                    if ih < 0 or ih >= H:
                        continue  # padding never wins
                    for j in range(kw):
                        iw = ow * sw + j - left
                        if iw < 0 or iw >= W:
                            continue
                        flat = ih * W + iw
                        if first:
                            # The first valid position seeds the window, so an
                            # all -inf window still has a winner.
                            for c in range(C):
                                y[n, oh, ow, c] = x[n, ih, iw, c]
                                argmax[n, oh, ow, c] = flat
                            first = False
                        else:
                            # Strictly greater: on a tie the earlier position stays.
                            # Written as selects, not a branch, so the loop over
                            # channels compiles to SIMD blends.
                            for c in range(C):
                                v = x[n, ih, iw, c]
                                best = y[n, oh, ow, c]
                                at = argmax[n, oh, ow, c]
                                y[n, oh, ow, c] = v if v > best else best
                                argmax[n, oh, ow, c] = flat if v > best else at


@njit(cache=True, nogil=True)
def _max_pool2d_backward(dy, argmax, dx):
    """``dx[n, argmax[n, oh, ow, c], c] += dy[n, oh, ow, c]``: each gradient to its window's winner."""
    N, OH, OW, C = dy.shape
    # argmax holds ih * W + iw, which indexes the (H * W, C) view of an image
    # directly: no integer division per element.
    dxf = dx.reshape(N, dx.shape[1] * dx.shape[2], C)
    for n in range(N):
        dxf[n] = 0
        for oh in range(OH):
            for ow in range(OW):
                for c in range(C):
                    dxf[n, argmax[n, oh, ow, c], c] += dy[n, oh, ow, c]


@njit(cache=True, nogil=True)
def _avg_pool2d_forward(x, kh, kw, sh, sw, top, left, y):
    """``y`` = the sum of each window's cells inside the input over their count (padding not counted)."""
    N, H, W, C = x.shape
    _, OH, OW, _ = y.shape
    for n in range(N):
        for oh in range(OH):
            # The window clipped to the input: rows [ih0, ih1), columns [iw0, iw1).
            ih0, ih1 = max(oh * sh - top, 0), min(oh * sh - top + kh, H)
            for ow in range(OW):
                iw0, iw1 = max(ow * sw - left, 0), min(ow * sw - left + kw, W)
                for c in range(C):
                    y[n, oh, ow, c] = 0
                for ih in range(ih0, ih1):
                    for iw in range(iw0, iw1):
                        for c in range(C):
                            y[n, oh, ow, c] += x[n, ih, iw, c]
                count = (ih1 - ih0) * (iw1 - iw0)
                for c in range(C):
                    y[n, oh, ow, c] /= count


@njit(cache=True, nogil=True)
def _avg_pool2d_backward(dy, kh, kw, sh, sw, top, left, dx):
    """``dx[n, ih, iw, c] += dy[n, oh, ow, c] / count[oh, ow]`` over each window's cells inside the input."""
    N, H, W, C = dx.shape
    _, OH, OW, _ = dy.shape
    for n in range(N):
        dx[n] = 0
        for oh in range(OH):
            ih0, ih1 = max(oh * sh - top, 0), min(oh * sh - top + kh, H)
            for ow in range(OW):
                iw0, iw1 = max(ow * sw - left, 0), min(ow * sw - left + kw, W)
                count = (ih1 - ih0) * (iw1 - iw0)
                for ih in range(ih0, ih1):
                    for iw in range(iw0, iw1):
                        for c in range(C):
                            dx[n, ih, iw, c] += dy[n, oh, ow, c] / count


def max_pool2d_forward(x, kh, kw, sh, sw, pads):
    """The contract's ``max_pool2d_forward``, the images split between the cores."""
    top, _, left, _ = pads
    N, _, _, C = x.shape
    OH, OW = conv_output_size(x.shape, kh, kw, sh, sw, pads)
    x = np.ascontiguousarray(x)
    y = np.empty((N, OH, OW, C), dtype=x.dtype)
    argmax = np.empty((N, OH, OW, C), dtype=np.int64)

    def part(lo, hi):
        _max_pool2d_forward(x[lo:hi], kh, kw, sh, sw, top, left, y[lo:hi], argmax[lo:hi])

    threads.split(part, N, threads.rows_for(x[0].size, MIN_PART_ELEMENTS))
    return y, argmax

def max_pool2d_backward(dy, argmax, x_shape):
    """The contract's ``max_pool2d_backward``, the images split between the cores."""
    dx = np.empty(x_shape, dtype=dy.dtype)
    dy, argmax = np.ascontiguousarray(dy), np.ascontiguousarray(argmax)

    def part(lo, hi):
        _max_pool2d_backward(dy[lo:hi], argmax[lo:hi], dx[lo:hi])

    threads.split(part, x_shape[0], threads.rows_for(dx[0].size, MIN_PART_ELEMENTS))
    return dx

def avg_pool2d_forward(x, kh, kw, sh, sw, pads):
    """The contract's ``avg_pool2d_forward``, the images split between the cores."""
    top, _, left, _ = pads
    N, _, _, C = x.shape
    OH, OW = conv_output_size(x.shape, kh, kw, sh, sw, pads)
    x = np.ascontiguousarray(x)
    y = np.empty((N, OH, OW, C), dtype=x.dtype)

    def part(lo, hi):
        _avg_pool2d_forward(x[lo:hi], kh, kw, sh, sw, top, left, y[lo:hi])

    threads.split(part, N, threads.rows_for(x[0].size, MIN_PART_ELEMENTS))
    return y

def avg_pool2d_backward(dy, x_shape, kh, kw, sh, sw, pads):
    """The contract's ``avg_pool2d_backward``, the images split between the cores."""
    top, _, left, _ = pads
    dx = np.empty(x_shape, dtype=dy.dtype)
    dy = np.ascontiguousarray(dy)

    def part(lo, hi):
        _avg_pool2d_backward(dy[lo:hi], kh, kw, sh, sw, top, left, dx[lo:hi])

    threads.split(part, x_shape[0], threads.rows_for(dx[0].size, MIN_PART_ELEMENTS))
    return dx
