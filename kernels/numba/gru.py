"""Numba kernels for the GRU and the simple RNN: the whole time loop in one Numba function per core, as the
LSTM's (``lstm.py``).

Steps are numbered as in ``scratchnet.ops.gru``, which derives them (Keras's ``reset_after=True``,
gate blocks z, r, h): forward 1 (``a_t``, ``u_t``), 2 (gates), 3 (``h_t``); backward 3b, 2b, 1b.
The op makes step 1's input part ``x_t @ kernel`` for every step in one GEMM before the loop, and
1b's input GEMMs (``dkernel``, ``dx``) after it; the loops here are the rest, what the reference's
``GRUReference`` runs as a dozen NumPy passes per step:

- **The recurrent GEMM** ``h_{t-1} @ recurrent_kernel`` (backward ``du_t @ recurrent_kernel.T``, added
  onto ``dh * z``) is ``gemm_packed`` (``kernels/runtime/gemm.py``), the kernel packed once per sequence,
  as for the LSTM.
- **The gates** are one fused pass over a row: the sigmoids as ``(1 + tanh(v / 2)) / 2`` and the
  ``tanh`` the LSTM's ``_tanh`` (a rational approximation in float32, within 4e-7; libm's in float64,
  so float64 matches the reference to round-off). Each loop writes one array (a block of the gates,
  of ``h_t``, of ``da_t`` or ``du_t``), which LLVM vectorises; ``error_model="numpy"`` for the same reason
  as the LSTM's.
- **The additions keep the reference's order**: ``(x_t @ kernel + b_0) + (h_{t-1} @ U + b_1)`` for z and r,
  ``dh * z + du @ U.T`` for ``dh_{t-1}``.
- **Masks** (``mask_seq`` (T, N), False: padding): a masked row copies ``h_{t-1}`` forward after its step;
  backward it writes ``da_t = du_t = 0`` and skips ``dh *= z``, so the recurrent GEMM adds ``0 @ U.T``
  to its ``dh``, which reaches step t-1 unchanged, as the reference's ``where`` does.

The simple RNN's loops (``_simple_rnn_forward_loop``, ``_simple_rnn_backward_loop``) are the same, with one
block instead of three: ``h_t = tanh(a_t + b + h_{t-1} @ U)``, ``dp_t = dh (1 - h_t^2)``.

The sequences of a batch never meet in the time loop, so the batch is split into one part per core
(``kernels/runtime/threads.py``), each running the whole loop on its own rows. The biases' gradients
are summed per part in float64; the recurrent kernel's is one GEMM over all T*N rows after the loop.
"""
from __future__ import annotations

import numpy
from numba import njit

from ..runtime import threads
from ..runtime.gemm import gemm_packed, pack, packable
from .lstm import _mask_arg, _tanh

# float32 constants keep float32 arithmetic in float32; with float64 inputs they promote exactly.
_ONE = numpy.float32(1.0)
_HALF = numpy.float32(0.5)


@njit(cache=True, nogil=True, error_model="numpy")
def _forward_loop(a_seq, packed_rk, b0, b1, h_seq, uh_seq, u, lo, hi, mask_seq, has_mask):
    """Steps 1-3 for t = 0 .. T-1 on rows ``lo:hi``; ``a_seq[t]`` holds ``x_t @ kernel`` and becomes [z, r, g].

    a_seq : (T, N, 3H);  packed_rk : ``pack(recurrent_kernel)``;  b0, b1 : (3H,), the two bias rows
    h_seq : (T+1, N, H), row 0 the initial state;  uh_seq : (T, N, H), written;  u : (hi - lo, 3H) scratch.
    The whole arrays come in and each step slices its rows here, so Numba knows the blocks are contiguous.
    """
    T, _, H3 = a_seq.shape
    H = H3 // 3
    n = hi - lo
    for t in range(T):
        gemm_packed(h_seq[t, lo:hi], packed_rk, u, False)  # 1: u = h_{t-1} @ recurrent_kernel (+ b1 below)
        a, h_prev, h, uh = a_seq[t, lo:hi], h_seq[t, lo:hi], h_seq[t + 1, lo:hi], uh_seq[t, lo:hi]
        for m in range(n):
            for k in range(2 * H):  # 2: z, r = sigmoid(a + u), a = x_t @ kernel + b0, u = h_{t-1} @ U + b1
                a[m, k] = _HALF + _HALF * _tanh(_HALF * ((a[m, k] + b0[k]) + (u[m, k] + b1[k])))
            for j in range(H):
                uh[m, j] = u[m, 2 * H + j] + b1[2 * H + j]
            for j in range(H):  # 2: g = tanh(a_h + r * u_h)
                a[m, 2 * H + j] = _tanh((a[m, 2 * H + j] + b0[2 * H + j]) + a[m, H + j] * uh[m, j])
            for j in range(H):  # 3: h_t = z * h_{t-1} + (1 - z) * g
                z = a[m, j]
                h[m, j] = z * h_prev[m, j] + (_ONE - z) * a[m, 2 * H + j]
            if has_mask and not mask_seq[t, lo + m]:  # a masked step: the state carries through
                for j in range(H):
                    h[m, j] = h_prev[m, j]


@njit(cache=True, nogil=True, error_model="numpy")
def _backward_loop(dy_seq, has_dy, dh_all, h_seq, gates_seq, uh_seq, packed_rk_t, da_seq, du_seq, dbias, lo, hi,
                   mask_seq, has_mask):
    """Steps 3b, 2b, 1b for t = T-1 down to 0 on rows ``lo:hi`` (``scratchnet/ops/gru.py`` derives them).

    dy_seq : (T, N, H), read when ``has_dy``;  dh_all : (N, H), the final state's gradient, updated in place
    into the initial state's;  h_seq, gates_seq, uh_seq : the forward's;  packed_rk_t : ``pack(recurrent_kernel.T)``;
    da_seq, du_seq : (T, N, 3H), written;  dbias : (2, 3H) float64, ``+= [sum da_t[m], sum du_t[m]]``.
    """
    T, _, H3 = gates_seq.shape
    H = H3 // 3
    n = hi - lo
    dh = dh_all[lo:hi]
    for t in range(T - 1, -1, -1):
        g, uh, h_prev = gates_seq[t, lo:hi], uh_seq[t, lo:hi], h_seq[t, lo:hi]
        da, du = da_seq[t, lo:hi], du_seq[t, lo:hi]
        for m in range(n):
            if has_dy:  # h_t feeds y_t and step t+1
                for j in range(H):
                    dh[m, j] += dy_seq[t, lo + m, j]
            if has_mask and not mask_seq[t, lo + m]:  # the identity: no da, du; dh passes (plus 0 @ U.T)
                for k in range(H3):
                    da[m, k] = 0
                for k in range(H3):
                    du[m, k] = 0
                continue
            for j in range(H):  # 3b, 2b: dg = dh (1 - z), dp_h = dg (1 - g^2) = da_h
                gg = g[m, 2 * H + j]
                da[m, 2 * H + j] = dh[m, j] * (_ONE - g[m, j]) * (_ONE - gg * gg)
            for j in range(H):  # du_h = dp_h * r
                du[m, 2 * H + j] = da[m, 2 * H + j] * g[m, H + j]
            for j in range(H):  # dr = dp_h * u_h, dp_r = dr r (1 - r)
                r = g[m, H + j]
                da[m, H + j] = da[m, 2 * H + j] * uh[m, j] * r * (_ONE - r)
            for j in range(H):  # dz = dh (h_{t-1} - g), dp_z = dz z (1 - z)
                z = g[m, j]
                da[m, j] = dh[m, j] * (h_prev[m, j] - g[m, 2 * H + j]) * z * (_ONE - z)
            for k in range(2 * H):  # du_z, du_r = dp_z, dp_r
                du[m, k] = da[m, k]
            for j in range(H):  # 3b: the direct path, dh_{t-1} = dh * z (+ du @ U.T below)
                dh[m, j] *= g[m, j]
            for k in range(H3):  # 1b: the biases sum da and du over every step and row
                dbias[0, k] += da[m, k]
            for k in range(H3):
                dbias[1, k] += du[m, k]
        gemm_packed(du, packed_rk_t, dh, True)  # 1b: dh_{t-1} += du_t @ recurrent_kernel.T


@njit(cache=True, nogil=True, error_model="numpy")
def _simple_rnn_forward_loop(a_seq, packed_rk, bias, h_seq, u, lo, hi, mask_seq, has_mask):
    """``h_t = tanh((a_t + bias) + h_{t-1} @ recurrent_kernel)`` for t = 0 .. T-1 on rows ``lo:hi``, the order
    of the reference's additions; a masked row keeps ``h_{t-1}``. ``u`` : (hi - lo, H) scratch."""
    T, _, H = a_seq.shape
    n = hi - lo
    for t in range(T):
        gemm_packed(h_seq[t, lo:hi], packed_rk, u, False)
        a, h_prev, h = a_seq[t, lo:hi], h_seq[t, lo:hi], h_seq[t + 1, lo:hi]
        for m in range(n):
            for j in range(H):
                h[m, j] = _tanh((a[m, j] + bias[j]) + u[m, j])
            if has_mask and not mask_seq[t, lo + m]:
                for j in range(H):
                    h[m, j] = h_prev[m, j]


@njit(cache=True, nogil=True, error_model="numpy")
def _simple_rnn_backward_loop(dy_seq, has_dy, dh_all, h_seq, packed_rk_t, dp_seq, dbias, lo, hi, mask_seq, has_mask):
    """``dp_t = dh (1 - h_t^2)``, ``dh_{t-1} = dp_t @ recurrent_kernel.T`` for t = T-1 down to 0 on rows ``lo:hi``.
    With a mask the GEMM adds onto ``dh`` instead: an unmasked row's is zeroed first, a masked row's (its ``dp``
    is 0) passes unchanged. ``dbias`` : (H,) float64, ``+= sum dp_t[m]``."""
    T, _, H = dp_seq.shape
    n = hi - lo
    dh = dh_all[lo:hi]
    for t in range(T - 1, -1, -1):
        h, dp = h_seq[t + 1, lo:hi], dp_seq[t, lo:hi]
        for m in range(n):
            if has_dy:
                for j in range(H):
                    dh[m, j] += dy_seq[t, lo + m, j]
            if has_mask and not mask_seq[t, lo + m]:
                for j in range(H):
                    dp[m, j] = 0
                continue
            for j in range(H):
                dp[m, j] = dh[m, j] * (_ONE - h[m, j] * h[m, j])
            for j in range(H):
                dbias[j] += dp[m, j]
            if has_mask:
                for j in range(H):
                    dh[m, j] = 0
        gemm_packed(dp, packed_rk_t, dh, has_mask)


#: Rows per part at least: below that a second thread costs more than it saves (the backend passes its own).
MIN_ROWS = 8


def gru_recurrence(a_seq, recurrent_kernel, bias, h0, min_rows=MIN_ROWS, mask_seq=None):
    """The contract's ``gru_recurrence``: one :func:`_forward_loop` per core; ``NotImplemented`` where the
    recurrent kernel is not :func:`packable` or ``a_seq`` not C-contiguous."""
    T, N, H3 = a_seq.shape
    H = recurrent_kernel.shape[0]
    if not packable(recurrent_kernel) or not a_seq.flags.c_contiguous:
        return NotImplemented
    h_seq = numpy.empty((T + 1, N, H), dtype=a_seq.dtype)
    uh_seq = numpy.empty((T, N, H), dtype=a_seq.dtype)
    h_seq[0] = h0
    packed_rk = pack(recurrent_kernel)
    b0, b1 = numpy.ascontiguousarray(bias[0]), numpy.ascontiguousarray(bias[1])
    mask_seq, has_mask = _mask_arg(mask_seq)

    def part(lo, hi):
        u = numpy.empty((hi - lo, H3), dtype=a_seq.dtype)
        _forward_loop(a_seq, packed_rk, b0, b1, h_seq, uh_seq, u, lo, hi, mask_seq, has_mask)

    threads.split(part, N, min_rows)
    return h_seq, a_seq, uh_seq  # each step turned its block of a_seq into its gates


def gru_backward_recurrence(dy_seq, dh, recurrent_kernel, h_seq, gates_seq, uh_seq, min_rows=MIN_ROWS, mask_seq=None):
    """The contract's ``gru_backward_recurrence``: one :func:`_backward_loop` per core; ``NotImplemented``
    where the recurrent kernel's transpose is not :func:`packable`."""
    T, N, H3 = gates_seq.shape
    H = recurrent_kernel.shape[0]
    if not packable(recurrent_kernel.T):
        return NotImplemented
    dh = numpy.array(dh, order="C")  # a copy: the loop updates it in place, the caller's stays untouched
    dtype = gates_seq.dtype
    da_seq = numpy.empty((T, N, H3), dtype=dtype)
    du_seq = numpy.empty((T, N, H3), dtype=dtype)
    h_seq, gates_seq, uh_seq = (numpy.ascontiguousarray(a) for a in (h_seq, gates_seq, uh_seq))
    packed_rk_t = pack(recurrent_kernel.T)
    has_dy = dy_seq is not None
    dys = numpy.ascontiguousarray(dy_seq) if has_dy else numpy.zeros((1, 1, 1), dtype=dtype)
    mask_seq, has_mask = _mask_arg(mask_seq)

    def part(lo, hi):
        dbias = numpy.zeros((2, H3))
        _backward_loop(dys, has_dy, dh, h_seq, gates_seq, uh_seq, packed_rk_t, da_seq, du_seq, dbias, lo, hi,
                       mask_seq, has_mask)
        return dbias

    dbias = sum(threads.split(part, N, min_rows)).astype(dtype)
    # 1b, for the recurrent weight: one GEMM over all (T*N) rows.
    drecurrent_kernel = threads.matmul(h_seq[:T].reshape(T * N, H).T, du_seq.reshape(T * N, H3))
    return da_seq, drecurrent_kernel, dbias, dh


def simple_rnn_recurrence(a_seq, recurrent_kernel, bias, h0, min_rows=MIN_ROWS, mask_seq=None):
    """The contract's ``simple_rnn_recurrence``: one :func:`_simple_rnn_forward_loop` per core; ``NotImplemented``
    where the recurrent kernel is not :func:`packable` or ``a_seq`` not C-contiguous."""
    T, N, H = a_seq.shape
    if not packable(recurrent_kernel) or not a_seq.flags.c_contiguous:
        return NotImplemented
    h_seq = numpy.empty((T + 1, N, H), dtype=a_seq.dtype)
    h_seq[0] = h0
    packed_rk, bias = pack(recurrent_kernel), numpy.ascontiguousarray(bias)
    mask_seq, has_mask = _mask_arg(mask_seq)

    def part(lo, hi):
        u = numpy.empty((hi - lo, H), dtype=a_seq.dtype)
        _simple_rnn_forward_loop(a_seq, packed_rk, bias, h_seq, u, lo, hi, mask_seq, has_mask)

    threads.split(part, N, min_rows)
    return h_seq


def simple_rnn_backward_recurrence(dy_seq, dh, recurrent_kernel, h_seq, min_rows=MIN_ROWS, mask_seq=None):
    """The contract's ``simple_rnn_backward_recurrence``: one :func:`_simple_rnn_backward_loop` per core;
    ``NotImplemented`` where the recurrent kernel's transpose is not :func:`packable`."""
    T, N, H = h_seq.shape[0] - 1, h_seq.shape[1], h_seq.shape[2]
    if not packable(recurrent_kernel.T):
        return NotImplemented
    dh = numpy.array(dh, order="C")  # a copy: the loop updates it in place
    dtype = h_seq.dtype
    dp_seq = numpy.empty((T, N, H), dtype=dtype)
    h_seq = numpy.ascontiguousarray(h_seq)
    packed_rk_t = pack(recurrent_kernel.T)
    has_dy = dy_seq is not None
    dys = numpy.ascontiguousarray(dy_seq) if has_dy else numpy.zeros((1, 1, 1), dtype=dtype)
    mask_seq, has_mask = _mask_arg(mask_seq)

    def part(lo, hi):
        dbias = numpy.zeros(H)
        _simple_rnn_backward_loop(dys, has_dy, dh, h_seq, packed_rk_t, dp_seq, dbias, lo, hi, mask_seq, has_mask)
        return dbias

    dbias = sum(threads.split(part, N, min_rows)).astype(dtype)
    drecurrent_kernel = threads.matmul(h_seq[:T].reshape(T * N, H).T, dp_seq.reshape(T * N, H))
    return dp_seq, drecurrent_kernel, dbias, dh
