"""Numba kernels for the LSTM: one fused pass per time step, forward and backward.

The reference gates kernel makes a dozen NumPy passes over (N, 4H) and (N, H)
temporaries per step; here each element of the state is visited once, with
the four gates of unit ``j`` read together. The GEMMs stay in BLAS
(``scratchnet/ops/lstm.py``).

The kernels are serial on purpose: they run between two BLAS calls every
time step, and a Numba thread pool woken there competes with BLAS's own
threads for the same cores (on a 2-core machine that made the whole LSTM
several times slower, not faster).
"""
from __future__ import annotations

import math

import numpy
from numba import njit


# float32 constants keep float32 arithmetic in float32 (Python's 1.0 would
# promote it to float64 and call the slower double-precision exp); with
# float64 inputs they promote to float64 exactly.
_ONE = numpy.float32(1.0)
_TWO = numpy.float32(2.0)


# sigmoid and tanh from one exp of a non-positive number each: it never
# overflows, and libm's exp is several times faster than its tanh.
@njit(cache=True, inline="always")
def _sigmoid(z):
    e = math.exp(-abs(z))
    r = _ONE / (_ONE + e)
    return r if z >= 0 else e * r


@njit(cache=True, inline="always")
def _tanh(z):
    e = math.exp(-_TWO * abs(z))
    t = (_ONE - e) / (_ONE + e)
    return t if z >= 0 else -t


@njit(cache=True)
def _gates_forward(Z, c_prev, h, c, G):
    N, H = c_prev.shape
    for n in range(N):
        for j in range(H):
            i = _sigmoid(Z[n, j])
            f = _sigmoid(Z[n, H + j])
            g = _tanh(Z[n, 2 * H + j])
            o = _sigmoid(Z[n, 3 * H + j])
            G[n, j] = i
            G[n, H + j] = f
            G[n, 2 * H + j] = g
            G[n, 3 * H + j] = o
            ct = f * c_prev[n, j] + i * g
            c[n, j] = ct
            h[n, j] = o * _tanh(ct)


@njit(cache=True)
def _gates_backward(dh, dc, c_prev, c, G, dZ, dc_prev):
    N, H = c.shape
    for n in range(N):
        for j in range(H):
            i = G[n, j]
            f = G[n, H + j]
            g = G[n, 2 * H + j]
            o = G[n, 3 * H + j]
            tanh_c = _tanh(c[n, j])
            # 4b: h = o * tanh(c)
            d_o = dh[n, j] * tanh_c
            dct = dc[n, j] + dh[n, j] * o * (_ONE - tanh_c * tanh_c)
            # 3b: c = f * c_prev + i * g;  2b: through the nonlinearities
            dZ[n, j] = dct * g * i * (_ONE - i)
            dZ[n, H + j] = dct * c_prev[n, j] * f * (_ONE - f)
            dZ[n, 2 * H + j] = dct * i * (_ONE - g * g)
            dZ[n, 3 * H + j] = d_o * o * (_ONE - o)
            dc_prev[n, j] = dct * f


class LSTMNumba:
    """Fused LSTM gate kernels (same signatures as ``LSTMKernels``)."""

    def lstm_gates_forward(self, Z, c_prev):
        h = numpy.empty_like(c_prev)
        c = numpy.empty_like(c_prev)
        G = numpy.empty_like(Z)
        _gates_forward(Z, c_prev, h, c, G)
        return h, c, G

    def lstm_gates_backward(self, dh, dc, c_prev, c, G):
        dZ = numpy.empty_like(G)
        dc_prev = numpy.empty_like(c)
        _gates_backward(dh, dc, c_prev, c, G, dZ, dc_prev)
        return dZ, dc_prev
