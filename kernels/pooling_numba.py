"""Numba kernels for max pooling: max and argmax in one pass, and the scatter back.

Channels are the innermost loop (NHWC), so each window offset compares a
contiguous run of C values.

The kernels are serial on purpose. In a training step they run between BLAS
GEMMs, and on a 2-core machine a Numba thread pool woken there fights BLAS's
own threads for the cores: with ``parallel=True`` these kernels were faster
alone but made a whole LeNet step about 30% slower.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from scratchnet.ops.conv import conv_output_size


@njit(cache=True)
def _maxpool_forward(X, kh, kw, sh, sw, top, left, Y, argmax):
    N, H, W, C = X.shape
    _, OH, OW, _ = Y.shape
    for n in range(N):
        for oh in range(OH):
            for ow in range(OW):
                first = True
                for i in range(kh):
                    h = oh * sh + i - top
                    if h < 0 or h >= H:
                        continue  # padding never wins
                    for j in range(kw):
                        w = ow * sw + j - left
                        if w < 0 or w >= W:
                            continue
                        flat = h * W + w
                        if first:
                            # The first valid position seeds the window, so an
                            # all -inf window still has a winner.
                            for c in range(C):
                                Y[n, oh, ow, c] = X[n, h, w, c]
                                argmax[n, oh, ow, c] = flat
                            first = False
                        else:
                            # Strictly greater: on a tie the earlier position stays.
                            # Written as selects, not a branch, so the loop over
                            # channels compiles to SIMD blends.
                            for c in range(C):
                                v = X[n, h, w, c]
                                y = Y[n, oh, ow, c]
                                a = argmax[n, oh, ow, c]
                                Y[n, oh, ow, c] = v if v > y else y
                                argmax[n, oh, ow, c] = flat if v > y else a


@njit(cache=True)
def _maxpool_backward(dY, argmax, dX):
    N, OH, OW, C = dY.shape
    # argmax holds h * W + w, which indexes the (H * W, C) view of an image
    # directly: no integer division per element.
    dXf = dX.reshape(N, dX.shape[1] * dX.shape[2], C)
    for n in range(N):
        dXf[n] = 0
        for oh in range(OH):
            for ow in range(OW):
                for c in range(C):
                    dXf[n, argmax[n, oh, ow, c], c] += dY[n, oh, ow, c]


class PoolNumba:
    """Overrides ``PoolKernels.maxpool_forward`` / ``maxpool_backward`` with compiled loops."""

    def maxpool_forward(self, X, kh, kw, sh, sw, pads):
        top, _, left, _ = pads
        N, _, _, C = X.shape
        OH, OW = conv_output_size(X.shape, kh, kw, sh, sw, pads)
        X = np.ascontiguousarray(X)
        Y = np.empty((N, OH, OW, C), dtype=X.dtype)
        argmax = np.empty((N, OH, OW, C), dtype=np.int64)
        _maxpool_forward(X, kh, kw, sh, sw, top, left, Y, argmax)
        return Y, argmax

    def maxpool_backward(self, dY, argmax, x_shape):
        dX = np.empty(x_shape, dtype=dY.dtype)
        _maxpool_backward(np.ascontiguousarray(dY), np.ascontiguousarray(argmax), dX)
        return dX
