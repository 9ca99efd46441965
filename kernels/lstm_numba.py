"""Numba kernels for the LSTM: one fused pass per time step, forward and backward.

The reference gates kernel makes a dozen NumPy passes over (N, 4H) and (N, H)
temporaries per step; here each element of the state is visited once, with
the four gates of unit ``j`` read together. The sequence kernels
(``lstm_forward`` / ``lstm_backward``) run the loop over time on buffers
allocated once, with the recurrent GEMMs written straight into them
(``numpy.matmul(..., out=)``); the GEMMs stay in BLAS.

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


# The sequence kernels below call these once per time step, on views of
# preallocated (T, N, .) buffers, with the step's pieces fused in: the
# recurrent GEMM's result R and the bias are added to Z here, and the output
# gradient to dh, instead of in separate NumPy passes.


@njit(cache=True)
def _step_forward(Z, R, bias, c_prev, h, c):
    """Steps 1-4 given ``R = h_{t-1} @ recurrent_kernel``; ``Z`` is overwritten with the gates G."""
    N, H = c_prev.shape
    for n in range(N):
        for j in range(H):
            i = _sigmoid(Z[n, j] + R[n, j] + bias[j])
            f = _sigmoid(Z[n, H + j] + R[n, H + j] + bias[H + j])
            g = _tanh(Z[n, 2 * H + j] + R[n, 2 * H + j] + bias[2 * H + j])
            o = _sigmoid(Z[n, 3 * H + j] + R[n, 3 * H + j] + bias[3 * H + j])
            Z[n, j] = i
            Z[n, H + j] = f
            Z[n, 2 * H + j] = g
            Z[n, 3 * H + j] = o
            ct = f * c_prev[n, j] + i * g
            c[n, j] = ct
            h[n, j] = o * _tanh(ct)


@njit(cache=True)
def _step_backward(dh, dy, dc, c_prev, c, G, dZ):
    """Steps 4b-2b with ``dh += dy`` first (``dy`` may be None); ``dc`` becomes ``dc_prev`` in place."""
    N, H = c.shape
    for n in range(N):
        for j in range(H):
            i = G[n, j]
            f = G[n, H + j]
            g = G[n, 2 * H + j]
            o = G[n, 3 * H + j]
            tanh_c = _tanh(c[n, j])
            dht = dh[n, j]
            if dy is not None:
                dht += dy[n, j]
            d_o = dht * tanh_c
            dct = dc[n, j] + dht * o * (_ONE - tanh_c * tanh_c)
            dZ[n, j] = dct * g * i * (_ONE - i)
            dZ[n, H + j] = dct * c_prev[n, j] * f * (_ONE - f)
            dZ[n, 2 * H + j] = dct * i * (_ONE - g * g)
            dZ[n, 3 * H + j] = d_o * o * (_ONE - o)
            dc[n, j] = dct * f


class LSTMNumba:
    """Fused LSTM kernels (same signatures as ``LSTMKernels``)."""

    def lstm_forward(self, X, kernel, recurrent_kernel, bias, h0, c0):
        T, N, D = X.shape
        H = recurrent_kernel.shape[0]
        Hs = numpy.empty((T + 1, N, H), dtype=X.dtype)
        Cs = numpy.empty((T + 1, N, H), dtype=X.dtype)
        Hs[0], Cs[0] = h0, c0
        # 1: the input part of every step in one GEMM; each step then turns
        # its block of Zs into its gates in place, so Zs becomes Gs.
        Zs = numpy.matmul(X.reshape(T * N, D), kernel).reshape(T, N, 4 * H)
        R = numpy.empty((N, 4 * H), dtype=X.dtype)
        for t in range(T):
            numpy.matmul(Hs[t], recurrent_kernel, out=R)
            _step_forward(Zs[t], R, bias, Cs[t], Hs[t + 1], Cs[t + 1])
        return Hs, Cs, Zs

    def lstm_backward(self, dYs, dh, dc, X, kernel, recurrent_kernel, Hs, Cs, Gs):
        T, N, D = X.shape
        H = recurrent_kernel.shape[0]
        # Copies: the loop updates both in place, and the caller's arrays stay untouched.
        dH, dC = dh.copy(), dc.copy()
        dZs = numpy.empty((T, N, 4 * H), dtype=X.dtype)
        for t in range(T - 1, -1, -1):
            _step_backward(dH, None if dYs is None else dYs[t], dC, Cs[t], Cs[t + 1], Gs[t], dZs[t])
            numpy.matmul(dZs[t], recurrent_kernel.T, out=dH)
        dZ = dZs.reshape(T * N, 4 * H)
        dkernel = numpy.matmul(X.reshape(T * N, D).T, dZ)
        drecurrent_kernel = numpy.matmul(Hs[:T].reshape(T * N, H).T, dZ)
        dbias = dZ.sum(axis=0)
        dX = numpy.matmul(dZ, kernel.T).reshape(T, N, D)
        return dX, dkernel, drecurrent_kernel, dbias, dH, dC

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
