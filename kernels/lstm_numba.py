"""Numba kernels for the LSTM: the time loop on preallocated buffers.

Steps are numbered as in ``scratchnet.ops.lstm``, which derives them:
forward 1 (z_t), 2 (gates), 3 (c_t), 4 (h_t); backward ``4b, 3b, 2b, 1b``,
each undoing the forward step of the same number.

The reference ``lstm_gates_forward`` makes a dozen NumPy passes over (N, 4H)
and (N, H) temporaries per step. Here the sequence kernels (``lstm_forward`` /
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

Both cores. The sequences of a batch never meet in the time loop (only the
weight gradients sum over them, after the loop), so the batch is split into
one part per core (``kernels/threads.py``) and each part runs the whole time
loop on its own rows, with single-threaded BLAS for its small per-step GEMMs:
no synchronisation per step, and no BLAS threads waking and waiting 28 times
per layer. A Numba thread pool woken inside the loop would instead compete
with BLAS's own threads for the same cores (on a 2-core machine that made
the whole LSTM several times slower). The one-off GEMMs over all T*N rows
(the input projection before the loop, the weight gradients after it) are
cut into one block of the output per core the same way (``threads.matmul``).

Buffers: everything a step writes is allocated once per call (``h_seq``,
``c_seq``, ``z_seq``, ``dz_seq`` and one (n, 4H) and (n, H) scratch block per
part); a step allocates nothing.
"""
from __future__ import annotations

import numpy
from numba import njit

from . import threads

# float32 constants keep float32 arithmetic in float32 (Python's 1.0 would
# promote it to float64); with float64 inputs they promote exactly.
_ONE = numpy.float32(1.0)
_HALF = numpy.float32(0.5)


@njit(cache=True, nogil=True)
def _preactivate(z, r, bias):
    """Step 1, finished: ``z += r + bias`` (``r`` the recurrent part ``h_{t-1} @ recurrent_kernel``); then
    the start of step 2: halve the sigmoid gates' inputs (i, f, o), so that one ``tanh`` serves all four."""
    N, H4 = z.shape
    H = H4 // 4
    for n in range(N):
        for k in range(H4):
            zk = z[n, k] + r[n, k] + bias[k]
            z[n, k] = zk if 2 * H <= k < 3 * H else _HALF * zk


@njit(cache=True, nogil=True)
def _cell_forward(gates, c_prev, c):
    """The end of step 2: finish the sigmoids, ``(1 + tanh(z / 2)) / 2``, in place; step 3:
    ``c = f * c_prev + i * g``."""
    N, H = c_prev.shape
    for n in range(N):
        for j in range(H):
            i = _HALF + _HALF * gates[n, j]
            f = _HALF + _HALF * gates[n, H + j]
            gates[n, j] = i
            gates[n, H + j] = f
            gates[n, 3 * H + j] = _HALF + _HALF * gates[n, 3 * H + j]
            c[n, j] = f * c_prev[n, j] + i * gates[n, 2 * H + j]


@njit(cache=True, nogil=True)
def _step_backward(dh, dy, dc, c_prev, tanh_c, gates, dz):
    """Steps 4b, 3b, 2b of one time step, with ``dh += dy`` first (``dy`` may be None).

    ``dc`` becomes ``dc_prev`` in place (3b: ``dc_prev = dc * f``).
    """
    N, H = c_prev.shape
    for n in range(N):
        for j in range(H):
            i = gates[n, j]
            f = gates[n, H + j]
            g = gates[n, 2 * H + j]
            o = gates[n, 3 * H + j]
            tc = tanh_c[n, j]
            # 4b: h_t feeds the output y_t and step t+1: dh = dy_t + dh from step t+1.
            dht = dh[n, j]
            if dy is not None:
                dht += dy[n, j]
            # 4b: h = o * tanh(c): do = dh * tanh(c); dc += dh * o * (1 - tanh(c)^2)
            d_o = dht * tc
            dct = dc[n, j] + dht * o * (_ONE - tc * tc)
            # 3b: c = f * c_prev + i * g gives di = dc * g, df = dc * c_prev, dg = dc * i;
            # 2b: times sigmoid' = s (1 - s) or tanh' = 1 - g^2.
            dz[n, j] = dct * g * i * (_ONE - i)
            dz[n, H + j] = dct * c_prev[n, j] * f * (_ONE - f)
            dz[n, 2 * H + j] = dct * i * (_ONE - g * g)
            dz[n, 3 * H + j] = d_o * o * (_ONE - o)
            # 3b: dc_prev = dc * f
            dc[n, j] = dct * f


class LSTMNumba:
    """Overrides ``LSTMReference.lstm_forward`` / ``lstm_backward`` with fused loops, one part of the batch per core."""

    # Rows per part at least: below that a second thread costs more than it saves.
    min_rows = 8

    def lstm_forward(self, x_seq, kernel, recurrent_kernel, bias, h0, c0):
        T, N, D = x_seq.shape
        H = recurrent_kernel.shape[0]
        h_seq = numpy.empty((T + 1, N, H), dtype=x_seq.dtype)
        c_seq = numpy.empty((T + 1, N, H), dtype=x_seq.dtype)
        h_seq[0], c_seq[0] = h0, c0
        # 1: the input part of every step in one GEMM; each step then turns
        # its block of z_seq into its gates in place, so z_seq becomes gates_seq.
        z_seq = threads.matmul(x_seq.reshape(T * N, D), kernel).reshape(T, N, 4 * H)
        recurrent_kernel = numpy.ascontiguousarray(recurrent_kernel)
        bias = numpy.ascontiguousarray(bias)

        def part(lo, hi):
            r = numpy.empty((hi - lo, 4 * H), dtype=x_seq.dtype)
            tanh_c = numpy.empty((hi - lo, H), dtype=x_seq.dtype)
            for t in range(T):
                z = z_seq[t, lo:hi]
                # 1: the recurrent part, h_{t-1} @ recurrent_kernel, and the bias
                numpy.matmul(h_seq[t, lo:hi], recurrent_kernel, out=r)
                _preactivate(z, r, bias)
                # 2: one tanh over all four gate blocks
                numpy.tanh(z, out=z)
                # 2, 3: finish the sigmoids; c_t = f * c_{t-1} + i * g
                _cell_forward(z, c_seq[t, lo:hi], c_seq[t + 1, lo:hi])
                # 4: h_t = o * tanh(c_t)
                numpy.tanh(c_seq[t + 1, lo:hi], out=tanh_c)
                numpy.multiply(z[:, 3 * H :], tanh_c, out=h_seq[t + 1, lo:hi])

        threads.split(part, N, self.min_rows)
        return h_seq, c_seq, z_seq

    def lstm_backward(self, dy_seq, dh, dc, x_seq, kernel, recurrent_kernel, h_seq, c_seq, gates_seq,
                      need_dx=True):
        T, N, D = x_seq.shape
        H = recurrent_kernel.shape[0]
        # Copies: the loop updates both in place, and the caller's arrays stay untouched.
        dh, dc = dh.copy(), dc.copy()
        dz_seq = numpy.empty((T, N, 4 * H), dtype=x_seq.dtype)

        def part(lo, hi):
            # tanh(c_t) of every step of this part's rows, in one SIMD pass.
            tanh_c_seq = numpy.tanh(c_seq[1:, lo:hi])
            part_dh, part_dc = dh[lo:hi], dc[lo:hi]
            for t in range(T - 1, -1, -1):
                # 4b, 3b, 2b
                dy = None if dy_seq is None else dy_seq[t, lo:hi]
                _step_backward(part_dh, dy, part_dc, c_seq[t, lo:hi], tanh_c_seq[t], gates_seq[t, lo:hi],
                               dz_seq[t, lo:hi])
                # 1b: h_{t-1} gets dz_t @ recurrent_kernel.T
                numpy.matmul(dz_seq[t, lo:hi], recurrent_kernel.T, out=part_dh)

        threads.split(part, N, self.min_rows)
        # 1b, for the weights and the inputs: one GEMM over all (T*N) rows each.
        dz = dz_seq.reshape(T * N, 4 * H)
        dkernel = threads.matmul(x_seq.reshape(T * N, D).T, dz)
        drecurrent_kernel = threads.matmul(h_seq[:T].reshape(T * N, H).T, dz)
        dbias = dz.sum(axis=0)
        dx_seq = threads.matmul(dz, kernel.T).reshape(T, N, D) if need_dx else None
        return dx_seq, dkernel, drecurrent_kernel, dbias, dh, dc
