"""Numba kernels for the LSTM: the time loop on preallocated buffers.

The reference gates kernel makes a dozen NumPy passes over (N, 4H) and (N, H)
temporaries per step. Here the sequence kernels (``lstm_forward`` /
``lstm_backward``) run the loop over time on buffers allocated once, with the
recurrent GEMMs written straight into them (``numpy.matmul(..., out=)``; the
GEMMs stay in BLAS), and each step's elementwise work fused into two small
Numba loops.

Where the time goes decided the split. A scalar ``exp`` or ``tanh`` in a Numba
loop is a libm call that LLVM cannot vectorise (this Numba has no SVML), about
15-20 ns each. So every nonlinearity is one ``tanh`` over a whole block, with
the sigmoids written as ``sigmoid(z) = (1 + tanh(z / 2)) / 2``, which never
overflows, and the Numba loops do only the arithmetic around it. That
``tanh`` is NumPy's, which is SIMD code: about 3 ns an element. The backward
pass takes ``tanh(c_t)`` for every step from one ``tanh`` over the whole
sequence instead of recomputing it per element.

The kernels are serial on purpose: they run between two BLAS calls every
time step, and a Numba thread pool woken there competes with BLAS's own
threads for the same cores (on a 2-core machine that made the whole LSTM
several times slower, not faster).
"""
from __future__ import annotations

import numpy
from numba import njit

# float32 constants keep float32 arithmetic in float32 (Python's 1.0 would
# promote it to float64); with float64 inputs they promote exactly.
_ONE = numpy.float32(1.0)
_HALF = numpy.float32(0.5)


@njit(cache=True)
def _preactivate(Z, R):
    """1: ``Z += R`` (the recurrent part), then halve the sigmoid gates' inputs
    (i, f, o), so that one ``tanh`` serves all four gates."""
    N, H4 = Z.shape
    H = H4 // 4
    for n in range(N):
        for k in range(H4):
            z = Z[n, k] + R[n, k]
            Z[n, k] = z if 2 * H <= k < 3 * H else _HALF * z


@njit(cache=True)
def _cell_forward(G, c_prev, c):
    """2-3: finish the sigmoids, ``(1 + tanh(z / 2)) / 2``, in place; ``c = f * c_prev + i * g``."""
    N, H = c_prev.shape
    for n in range(N):
        for j in range(H):
            i = _HALF + _HALF * G[n, j]
            f = _HALF + _HALF * G[n, H + j]
            G[n, j] = i
            G[n, H + j] = f
            G[n, 3 * H + j] = _HALF + _HALF * G[n, 3 * H + j]
            c[n, j] = f * c_prev[n, j] + i * G[n, 2 * H + j]


@njit(cache=True)
def _step_backward(dh, dy, dc, c_prev, tanh_c, G, dZ):
    """4b-2b with ``dh += dy`` first (``dy`` may be None); ``dc`` becomes ``dc_prev`` in place."""
    N, H = c_prev.shape
    for n in range(N):
        for j in range(H):
            i = G[n, j]
            f = G[n, H + j]
            g = G[n, 2 * H + j]
            o = G[n, 3 * H + j]
            tc = tanh_c[n, j]
            dht = dh[n, j]
            if dy is not None:
                dht += dy[n, j]
            # 4b: h = o * tanh(c)
            d_o = dht * tc
            dct = dc[n, j] + dht * o * (_ONE - tc * tc)
            # 3b: c = f * c_prev + i * g;  2b: through the nonlinearities
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
        Zs += bias
        R = numpy.empty((N, 4 * H), dtype=X.dtype)
        tanh_c = numpy.empty((N, H), dtype=X.dtype)
        for t in range(T):
            numpy.matmul(Hs[t], recurrent_kernel, out=R)
            _preactivate(Zs[t], R)
            numpy.tanh(Zs[t], out=Zs[t])
            _cell_forward(Zs[t], Cs[t], Cs[t + 1])
            # 4: h = o * tanh(c)
            numpy.tanh(Cs[t + 1], out=tanh_c)
            numpy.multiply(Zs[t, :, 3 * H :], tanh_c, out=Hs[t + 1])
        return Hs, Cs, Zs

    def lstm_backward(self, dYs, dh, dc, X, kernel, recurrent_kernel, Hs, Cs, Gs):
        T, N, D = X.shape
        H = recurrent_kernel.shape[0]
        tanh_Cs = numpy.tanh(Cs[1:])
        # Copies: the loop updates both in place, and the caller's arrays stay untouched.
        dH, dC = dh.copy(), dc.copy()
        dZs = numpy.empty((T, N, 4 * H), dtype=X.dtype)
        for t in range(T - 1, -1, -1):
            _step_backward(dH, None if dYs is None else dYs[t], dC, Cs[t], tanh_Cs[t], Gs[t], dZs[t])
            # 1b: h_{t-1} gets dZ_t @ recurrent_kernel.T
            numpy.matmul(dZs[t], recurrent_kernel.T, out=dH)
        # 1b, for the weights: one GEMM over all (T*N) rows each.
        dZ = dZs.reshape(T * N, 4 * H)
        dkernel = numpy.matmul(X.reshape(T * N, D).T, dZ)
        drecurrent_kernel = numpy.matmul(Hs[:T].reshape(T * N, H).T, dZ)
        dbias = dZ.sum(axis=0)
        dX = numpy.matmul(dZ, kernel.T).reshape(T, N, D)
        return dX, dkernel, drecurrent_kernel, dbias, dH, dC
