"""Numba kernels for the LSTM: the whole time loop in one Numba function per core.

Steps are numbered as in ``scratchnet.ops.lstm``, which derives them:
forward 1 (z_t), 2 (gates), 3 (c_t), 4 (h_t); backward ``4b, 3b, 2b, 1b``,
each undoing the forward step of the same number.

The reference makes a dozen NumPy passes over (N, 4H) and (N, H) temporaries
per step, and returns to Python between them. Here each core runs the time
loop of its rows in one Numba call (``_forward_loop``, ``_backward_loop``):

- **The recurrent GEMM** ``h_{t-1} @ recurrent_kernel`` (and ``dz_t @
  recurrent_kernel.T`` backward) is ``gemm_packed`` (``kernels/runtime/gemm.py``), with the kernel
  packed once per sequence. OpenBLAS would repack it at every step, which for
  the 50 rows of a core costs as much as the product itself.
- **The nonlinearities** are a rational approximation of ``tanh`` in float32
  (``_tanh``: Eigen's, within 4e-7 of the exact value), plain arithmetic that
  LLVM vectorises; the sigmoids are ``(1 + tanh(z / 2)) / 2``, which never
  overflows, so all four gates are one loop over the 4H pre-activations of a
  row (``_gate_coefficients``). A scalar libm ``tanh`` would be a call per element that LLVM
  cannot vectorise (this Numba has no SVML). In float64 ``_tanh`` is libm's,
  exact and slower: float64 is for checking gradients, not for speed.
- **One store per loop, and NumPy's error model.** Each elementwise pass
  writes one array (a gate block, ``c_t``, ``h_t``, a block of ``dz_t``): with
  six stores in one loop, LLVM's alias checks give up and the loop runs
  scalar. And ``error_model="numpy"``: under Numba's default (Python's) model
  every division checks for zero to raise ``ZeroDivisionError``, and that
  branch alone keeps the rational ``tanh`` from vectorising.
- **Masks** (``mask_seq`` (T, N), False: padding; ``scratchnet/ops/lstm.py``): a masked row copies
  ``h_{t-1}``, ``c_{t-1}`` forward after its step, and backward writes ``dz_t = 0``, leaves ``dc``
  as it is and puts its ``dh`` back after the recurrent GEMM (which would overwrite it with
  ``0 @ recurrent_kernel.T``): the same per-row branch in both loops, outside the vectorised ones.
- **Nothing returns to Python** during the loop, so the two cores never wait
  for each other's GIL, and nothing is allocated per step.

Both cores. The sequences of a batch never meet in the time loop (only the
weight gradients sum over them, after the loop), so the batch is split into
one part per core (``kernels/runtime/threads.py``), each running the whole loop on its
own rows: no synchronisation per step. The one-off GEMMs over all T*N rows
(the input projection before the loop, the weight gradients after it) are
``threads.matmul``'s, one block of the output per core: the input ones in
the reference's ``lstm_forward`` / ``lstm_backward``, which the backend runs
around these two functions, through its ``gemm``.
"""
from __future__ import annotations

import math

import numpy
from numba import njit, types
from numba.extending import overload

from ..runtime import threads
from ..runtime.gemm import gemm_packed, pack, packable

# float32 constants keep float32 arithmetic in float32 (Python's 1.0 would
# promote it to float64); with float64 inputs they promote exactly.
_ONE = numpy.float32(1.0)

# Eigen's rational approximation of tanh for float32 (``generic_fast_tanh_float``): an odd polynomial of
# degree 13 over an even one of degree 6, on [-7.9053, 7.9053], where tanh reaches 1 in float32.
_CLAMP = numpy.float32(7.90531110763549805)
_A1, _A3, _A5, _A7, _A9, _A11, _A13 = (numpy.float32(v) for v in (
    4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05, 5.12229709037114e-08,
    -8.60467152213735e-11, 2.00018790482477e-13, -2.76076847742355e-16))
_B0, _B2, _B4, _B6 = (numpy.float32(v) for v in (
    4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04, 1.19825839466702e-06))


def _tanh(x):
    """``tanh(x)`` of a float32 or float64 scalar inside a Numba function (see :func:`_tanh_overload`)."""
    return math.tanh(x)


@overload(_tanh)
def _tanh_overload(x):
    if x == types.float32:
        def rational(x):
            v = min(max(x, -_CLAMP), _CLAMP) if x == x else x  # a NaN passes through
            v2 = v * v
            p = ((((((_A13 * v2 + _A11) * v2 + _A9) * v2 + _A7) * v2 + _A5) * v2 + _A3) * v2 + _A1) * v
            q = ((_B6 * v2 + _B4) * v2 + _B2) * v2 + _B0
            return p / q

        return rational
    return lambda x: math.tanh(x)


def _gate_coefficients(H, dtype):
    """``(scale, offset)`` of the gate blocks i, f, g, o: ``offset + scale * tanh(scale * z)`` is
    ``sigmoid(z) = (1 + tanh(z / 2)) / 2`` (no exp, no overflow) for i, f, o and ``tanh(z)`` for g."""
    scale = numpy.full(4 * H, 0.5, dtype=dtype)
    offset = numpy.full(4 * H, 0.5, dtype=dtype)
    scale[2 * H : 3 * H], offset[2 * H : 3 * H] = 1, 0
    return scale, offset


@njit(cache=True, nogil=True, error_model="numpy")
def _forward_loop(z_seq, packed_rk, bias, scale, offset, h_seq, c_seq, r, lo, hi, mask_seq, has_mask):
    """Steps 1-4 for t = 0 .. T-1 on rows ``lo:hi``; ``z_seq[t]`` holds step 1's input part and becomes the gates.
    With ``has_mask``, a row whose ``mask_seq[t, n]`` is False keeps ``h_{t-1}`` and ``c_{t-1}``.

    z_seq : (T, N, 4H);  packed_rk : ``pack(recurrent_kernel)``;  bias, scale, offset : (4H,)
    h_seq, c_seq : (T+1, N, H), row 0 the initial state;  r : (hi - lo, 4H) scratch.
    All four gates are one loop over a row's 4H pre-activations, ``offset + scale * tanh(scale * z)``:
    with ``scale = offset = 1/2`` that is a sigmoid, with ``scale = 1, offset = 0`` (the g block) a tanh.
    The whole arrays come in and each step slices its rows here: Numba then knows that a step's block
    is contiguous (a slice taken in Python would reach it as an array of any layout, and not vectorise).
    """
    T, _, H4 = z_seq.shape
    H = H4 // 4
    n = hi - lo
    for t in range(T):
        gemm_packed(h_seq[t, lo:hi], packed_rk, r, False)  # 1: r = h_{t-1} @ recurrent_kernel
        z, c_prev, c, h = z_seq[t, lo:hi], c_seq[t, lo:hi], c_seq[t + 1, lo:hi], h_seq[t + 1, lo:hi]
        for m in range(n):
            # 1, 2: z = x_t @ kernel (already in z) + r + bias; the gates i, f, g, o in one loop
            for k in range(H4):
                a = scale[k]
                z[m, k] = offset[k] + a * _tanh(a * (z[m, k] + r[m, k] + bias[k]))
            for j in range(H):  # 3: c_t = f * c_{t-1} + i * g
                c[m, j] = z[m, H + j] * c_prev[m, j] + z[m, j] * z[m, 2 * H + j]
            for j in range(H):  # 4: h_t = o * tanh(c_t)
                h[m, j] = z[m, 3 * H + j] * _tanh(c[m, j])
            if has_mask and not mask_seq[t, lo + m]:  # a masked step: the state carries through
                for j in range(H):
                    c[m, j] = c_prev[m, j]
                for j in range(H):
                    h[m, j] = h_seq[t, lo + m, j]


@njit(cache=True, nogil=True, error_model="numpy")
def _backward_loop(dy_seq, has_dy, dh_all, dc_all, c_seq, gates_seq, packed_rk_t, dz_seq, tanh_c, dbias, lo, hi,
                   mask_seq, has_mask, kept):
    """Steps 4b, 3b, 2b, 1b for t = T-1 down to 0 on rows ``lo:hi`` (``scratchnet/ops/lstm.py`` derives them).
    With ``has_mask``, a row masked at step t has ``dz_t = 0`` and passes ``dh`` (kept in ``kept``, (hi - lo, H)
    scratch, across the recurrent GEMM) and ``dc`` to step t-1 unchanged.

    dy_seq : (T, N, H), read when ``has_dy``;  dh_all, dc_all : (N, H), the final state's gradients, updated
    in place into those of the initial state;  c_seq, gates_seq : the forward's;  packed_rk_t :
    ``pack(recurrent_kernel.T)``;  dz_seq : (T, N, 4H), written;  tanh_c : (hi - lo, H) scratch;
    dbias : (4H,) float64, ``+= sum_{t, m} dz_t[m]``. Rows are sliced here, as in :func:`_forward_loop`.
    """
    T, _, H4 = dz_seq.shape
    H = H4 // 4
    n = hi - lo
    dh, dc = dh_all[lo:hi], dc_all[lo:hi]
    for t in range(T - 1, -1, -1):
        g, c_prev, c, dz = gates_seq[t, lo:hi], c_seq[t, lo:hi], c_seq[t + 1, lo:hi], dz_seq[t, lo:hi]
        for m in range(n):
            # 4b: h_t feeds y_t and step t+1: dh += dy_t. Then h = o * tanh(c):
            #     dz_o = dh * tanh(c) * o (1 - o);  dc += dh * o * (1 - tanh(c)^2)
            if has_dy:
                for j in range(H):
                    dh[m, j] += dy_seq[t, lo + m, j]
            if has_mask and not mask_seq[t, lo + m]:  # a masked step is the identity on the state
                for k in range(H4):
                    dz[m, k] = 0
                for j in range(H):
                    kept[m, j] = dh[m, j]
                continue
            for j in range(H):
                tanh_c[m, j] = _tanh(c[m, j])
            for j in range(H):
                o = g[m, 3 * H + j]
                dz[m, 3 * H + j] = dh[m, j] * tanh_c[m, j] * o * (_ONE - o)
            for j in range(H):
                dc[m, j] += dh[m, j] * g[m, 3 * H + j] * (_ONE - tanh_c[m, j] * tanh_c[m, j])
            # 3b, 2b: c = f * c_prev + i * g gives di = dc g, df = dc c_prev, dg = dc i; times s (1 - s) or 1 - g^2
            for j in range(H):
                i = g[m, j]
                dz[m, j] = dc[m, j] * g[m, 2 * H + j] * i * (_ONE - i)
            for j in range(H):
                f = g[m, H + j]
                dz[m, H + j] = dc[m, j] * c_prev[m, j] * f * (_ONE - f)
            for j in range(H):
                gg = g[m, 2 * H + j]
                dz[m, 2 * H + j] = dc[m, j] * g[m, j] * (_ONE - gg * gg)
            for j in range(H):  # 3b: dc_{t-1} = dc * f
                dc[m, j] *= g[m, H + j]
            for k in range(H4):  # 1b: dbias sums dz over every step and row
                dbias[k] += dz[m, k]
        gemm_packed(dz, packed_rk_t, dh, False)  # 1b: dh_{t-1} = dz_t @ recurrent_kernel.T
        if has_mask:
            for m in range(n):
                if not mask_seq[t, lo + m]:
                    for j in range(H):
                        dh[m, j] = kept[m, j]


@njit(cache=True, nogil=True)
def _swap_batch_time(a, out, lo, hi):
    """``out[t, n, :] = a[n, t, :]`` for t in ``lo:hi``: a row copy per (t, n), rows contiguous on both sides."""
    N = a.shape[0]
    F = a.shape[2]
    for t in range(lo, hi):
        for n in range(N):
            src, dst = a[n, t], out[t, n]
            for f in range(F):
                dst[f] = src[f]


#: Rows per part at least: below that a second thread costs more than it saves (the backend passes its own).
MIN_ROWS = 8


def swap_batch_time(a):
    """The contract's ``swap_batch_time`` of a C-contiguous ``a``, on every core; ``NotImplemented`` for another."""
    # The copy is memory traffic: two cores move it faster than one.
    if not a.flags.c_contiguous:
        return NotImplemented
    N, T, F = a.shape
    out = numpy.empty((T, N, F), dtype=a.dtype)

    def part(lo, hi):
        _swap_batch_time(a, out, lo, hi)

    threads.split(part, T, threads.rows_for(N * F, 1 << 16))
    return out


def _mask_arg(mask_seq):
    """``(mask_seq, has_mask)`` for the loops: a C-contiguous boolean (T, N), or a dummy when there is none."""
    if mask_seq is None:
        return numpy.ones((1, 1), dtype=numpy.bool_), False
    return numpy.ascontiguousarray(mask_seq, dtype=numpy.bool_), True


def lstm_recurrence(z_seq, recurrent_kernel, bias, h0, c0, min_rows=MIN_ROWS, mask_seq=None):
    """The contract's ``lstm_recurrence``: one :func:`_forward_loop` per core; ``NotImplemented`` where the
    recurrent kernel is not :func:`packable` or ``z_seq`` not C-contiguous."""
    T, N, _ = z_seq.shape
    H = recurrent_kernel.shape[0]
    if not packable(recurrent_kernel) or not z_seq.flags.c_contiguous:
        return NotImplemented
    h_seq = numpy.empty((T + 1, N, H), dtype=z_seq.dtype)
    c_seq = numpy.empty((T + 1, N, H), dtype=z_seq.dtype)
    h_seq[0], c_seq[0] = h0, c0
    # Each step turns its block of z_seq into its gates in place, so z_seq becomes gates_seq.
    packed_rk = pack(recurrent_kernel)
    bias = numpy.ascontiguousarray(bias)
    scale, offset = _gate_coefficients(H, z_seq.dtype)
    mask_seq, has_mask = _mask_arg(mask_seq)

    def part(lo, hi):
        r = numpy.empty((hi - lo, 4 * H), dtype=z_seq.dtype)
        _forward_loop(z_seq, packed_rk, bias, scale, offset, h_seq, c_seq, r, lo, hi, mask_seq, has_mask)

    threads.split(part, N, min_rows)
    return h_seq, c_seq, z_seq


def lstm_backward_recurrence(dy_seq, dh, dc, recurrent_kernel, h_seq, c_seq, gates_seq, min_rows=MIN_ROWS,
                             mask_seq=None):
    """The contract's ``lstm_backward_recurrence``: one :func:`_backward_loop` per core; ``NotImplemented``
    where the recurrent kernel's transpose is not :func:`packable`."""
    T, N, G = gates_seq.shape
    H = recurrent_kernel.shape[0]
    if not packable(recurrent_kernel.T):
        return NotImplemented
    # Copies: the loop updates both in place, and the caller's arrays stay untouched.
    dh, dc = numpy.array(dh, order="C"), numpy.array(dc, order="C")
    dz_seq = numpy.empty((T, N, G), dtype=gates_seq.dtype)
    c_seq, gates_seq = numpy.ascontiguousarray(c_seq), numpy.ascontiguousarray(gates_seq)
    packed_rk_t = pack(recurrent_kernel.T)
    has_dy = dy_seq is not None
    dys = numpy.ascontiguousarray(dy_seq) if has_dy else numpy.zeros((1, 1, 1), dtype=gates_seq.dtype)
    mask_seq, has_mask = _mask_arg(mask_seq)

    def part(lo, hi):
        tanh_c = numpy.empty((hi - lo, H), dtype=gates_seq.dtype)
        kept = numpy.empty((hi - lo, H) if has_mask else (1, 1), dtype=gates_seq.dtype)
        dbias = numpy.zeros(4 * H)
        _backward_loop(dys, has_dy, dh, dc, c_seq, gates_seq, packed_rk_t, dz_seq, tanh_c, dbias, lo, hi,
                       mask_seq, has_mask, kept)
        return dbias

    dbias = sum(threads.split(part, N, min_rows)).astype(gates_seq.dtype)
    # 1b, for the recurrent weight: one GEMM over all (T*N) rows.
    drecurrent_kernel = threads.matmul(h_seq[:T].reshape(T * N, H).T, dz_seq.reshape(T * N, G))
    return dz_seq, drecurrent_kernel, dbias, dh, dc
