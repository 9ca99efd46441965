"""GRU and simple RNN over a sequence, Keras's semantics, with backpropagation through time written out.

**GRU** (Keras's default ``reset_after=True``; gate blocks ordered z, r, h in
the kernels and biases). With ``x_t`` (N, D), ``h_{t-1}`` (N, H), the kernel
``W`` (D, 3H), the recurrent kernel ``U`` (H, 3H) and the bias ``b`` (2, 3H)
(row 0 the input bias, row 1 the recurrent bias)::

    1.  a_t = x_t @ W + b[0]                       (N, 3H): a_z, a_r, a_h
        u_t = h_{t-1} @ U + b[1]                   (N, 3H): u_z, u_r, u_h
    2.  z_t = sigmoid(a_z + u_z)                   update gate
        r_t = sigmoid(a_r + u_r)                   reset gate
        g_t = tanh(a_h + r_t * u_h)                candidate (the reset gate scales the recurrent part)
    3.  h_t = z_t * h_{t-1} + (1 - z_t) * g_t      z = 1 keeps the old state, z = 0 takes the candidate

Backward, from ``dh_t`` (the gradient of ``h_t``: from the output at ``t``
plus what step ``t + 1`` sends back), steps 3b, 2b, 1b undo 3, 2, 1::

    3b. dg = dh_t * (1 - z_t)          dz = dh_t * (h_{t-1} - g_t)         dh_{t-1} = dh_t * z_t  (+ 1b)
    2b. dp_h = dg * (1 - g_t^2)                           p_h = a_h + r_t * u_h, the candidate's input
        da_h = dp_h      du_h = dp_h * r_t      dr = dp_h * u_h
        dp_z = dz * z_t (1 - z_t)      dp_r = dr * r_t (1 - r_t)     (sigmoid' = s (1 - s))
        da = [dp_z, dp_r, da_h]        du = [dp_z, dp_r, du_h]
    1b. dW += x_t^T da     db[0] += sum_n da     dx_t = da @ W^T
        dU += h_{t-1}^T du   db[1] += sum_n du   dh_{t-1} += du @ U^T

The weight gradients sum over every step; as for the LSTM, step 1 and 1b's
input products are done for all steps at once, outside the loop.

**Simple RNN** (Keras's ``SimpleRNN``, tanh): ``h_t = tanh(x_t @ W + h_{t-1} @ U + b)``,
and backward ``dp = dh_t * (1 - h_t^2)``, ``dW += x_t^T dp``, ``dU += h_{t-1}^T dp``,
``db += sum_n dp``, ``dx_t = dp @ W^T``, ``dh_{t-1} = dp @ U^T``.

Both take batch-major ``x`` (N, T, D) and return ``(ys, h)``: every step's
state (N, T, H) and the last one (N, H).

**Masks** (``mask`` (N, T), False: padding; :mod:`scratchnet.ops.masks`): a
masked step keeps the state, ``h_t = m_t ? h_new : h_{t-1}``, as Keras's; its
output is Keras's (``seen_t ? h_t : 0``). Backward it is the identity:
``dh_{t-1} = dh_t`` and its ``da``, ``du`` (``dp`` for the simple RNN) are 0,
so a padded step adds nothing to the weights' gradients. ``backprop(dys, dh)`` takes the
gradients of both (either may be None) and returns
``(dx, dkernel, drecurrent_kernel, dbias, dh0)``.

**Backends.** As for the LSTM, the ops run step 1's input GEMM (and 1b's) over all T*N rows
themselves, time-major (:func:`_sequence`), and hand the loops over time to the backend:
``gru_recurrence`` / ``gru_backward_recurrence`` and ``simple_rnn_recurrence`` /
``simple_rnn_backward_recurrence`` (``GRUReference`` below is the reference's, step for step the
derivations above; the Numba backend's are ``kernels/numba/gru.py``).
"""
from __future__ import annotations

from .._checks import as_float_arrays, check_grad, check_rank
from ..backend import get_backend
from ..recording import Cost, nbytes
from ..recording import op as recorded_op
from .masks import keras_outputs, sequence_mask


class GRUReference:
    """The reference backend's GRU and simple RNN loops over time (the contract's ``gru_recurrence``, ...): the
    steps of the module docstring, on time-major stacks. A masked row keeps its state; backward it is the identity."""

    def gru_recurrence(self, a_seq, recurrent_kernel, bias, h0, mask_seq=None):
        """Steps 1-3 for t = 0 .. T-1, given the input part ``x_t @ kernel`` of every a_t."""
        xp = self.xp
        T, N, _ = a_seq.shape
        H = recurrent_kernel.shape[0]
        h_seq = xp.empty((T + 1, N, H), dtype=a_seq.dtype)
        gates_seq = xp.empty((T, N, 3 * H), dtype=a_seq.dtype)
        uh_seq = xp.empty((T, N, H), dtype=a_seq.dtype)
        h_seq[0] = h0
        for t in range(T):
            h = h_seq[t]
            a = a_seq[t] + bias[0]                                       # 1
            u = self.gemm(h, recurrent_kernel) + bias[1]
            z = self.sigmoid(a[:, :H] + u[:, :H])                        # 2
            r = self.sigmoid(a[:, H:2 * H] + u[:, H:2 * H])
            g = xp.tanh(a[:, 2 * H:] + r * u[:, 2 * H:])
            h_new = z * h + (1 - z) * g                                  # 3
            h_seq[t + 1] = h_new if mask_seq is None else xp.where(mask_seq[t][:, None], h_new, h)
            gates_seq[t, :, :H], gates_seq[t, :, H:2 * H], gates_seq[t, :, 2 * H:] = z, r, g
            uh_seq[t] = u[:, 2 * H:]
        return h_seq, gates_seq, uh_seq

    def gru_backward_recurrence(self, dy_seq, dh, recurrent_kernel, h_seq, gates_seq, uh_seq, mask_seq=None):
        """Steps 3b, 2b, 1b for t = T-1 down to 0, then the recurrent weight's and the biases' sums."""
        xp = self.xp
        T, N, H3 = gates_seq.shape
        H = H3 // 3
        da_seq = xp.empty((T, N, H3), dtype=gates_seq.dtype)
        du_seq = xp.empty((T, N, H3), dtype=gates_seq.dtype)
        for t in range(T - 1, -1, -1):
            if dy_seq is not None:  # h_t feeds the output y_t and step t+1 (dh holds the latter)
                dh = dh + dy_seq[t]
            z, r, g = gates_seq[t, :, :H], gates_seq[t, :, H:2 * H], gates_seq[t, :, 2 * H:]
            dg = dh * (1 - z)                                            # 3b
            dz = dh * (h_seq[t] - g)
            dp_h = dg * (1 - g * g)                                      # 2b
            dr = dp_h * uh_seq[t]
            da = xp.concatenate([dz * z * (1 - z), dr * r * (1 - r), dp_h], axis=1)
            du = xp.concatenate([da[:, :2 * H], dp_h * r], axis=1)
            if mask_seq is not None:  # a masked row is the identity: no da, du; dh goes to h_{t-1} as it is
                keep = mask_seq[t][:, None]
                da, du = xp.where(keep, da, 0), xp.where(keep, du, 0)
            da_seq[t], du_seq[t] = da, du
            dh_prev = dh * z + self.gemm(du, recurrent_kernel, trans_b=True)  # 1b: both paths into h_{t-1}
            dh = dh_prev if mask_seq is None else xp.where(keep, dh_prev, dh)
        # 1b, for the weights: each sums over every step, so one GEMM (or sum) over (T*N) rows.
        du = du_seq.reshape(T * N, H3)
        drecurrent_kernel = self.gemm(h_seq[:T].reshape(T * N, H), du, trans_a=True)
        dbias = xp.stack([da_seq.reshape(T * N, H3).sum(axis=0), du.sum(axis=0)])
        return da_seq, drecurrent_kernel, dbias, dh

    def simple_rnn_recurrence(self, a_seq, recurrent_kernel, bias, h0, mask_seq=None):
        """``h_t = tanh(x_t @ kernel + bias + h_{t-1} @ recurrent_kernel)`` for t = 0 .. T-1, given every ``x_t @ kernel``."""
        xp = self.xp
        T, N, H = a_seq.shape
        h_seq = xp.empty((T + 1, N, H), dtype=a_seq.dtype)
        h_seq[0] = h0
        for t in range(T):
            h_new = xp.tanh((a_seq[t] + bias) + self.gemm(h_seq[t], recurrent_kernel))
            h_seq[t + 1] = h_new if mask_seq is None else xp.where(mask_seq[t][:, None], h_new, h_seq[t])
        return h_seq

    def simple_rnn_backward_recurrence(self, dy_seq, dh, recurrent_kernel, h_seq, mask_seq=None):
        """``dp_t = dh_t (1 - h_t^2)`` and ``dh_{t-1} = dp_t @ recurrent_kernel.T`` for t = T-1 down to 0, then the sums."""
        xp = self.xp
        T, N, H = h_seq.shape[0] - 1, h_seq.shape[1], h_seq.shape[2]
        dp_seq = xp.empty((T, N, H), dtype=h_seq.dtype)
        for t in range(T - 1, -1, -1):
            if dy_seq is not None:
                dh = dh + dy_seq[t]
            dp = dh * (1 - h_seq[t + 1] * h_seq[t + 1])  # h_t = tanh(p_t); a masked row's dp is dropped below
            if mask_seq is not None:  # a masked row is the identity: no dp, dh goes to h_{t-1} as it is
                keep = mask_seq[t][:, None]
                dp = xp.where(keep, dp, 0)
            dp_seq[t] = dp
            dh_prev = self.gemm(dp, recurrent_kernel, trans_b=True)
            dh = dh_prev if mask_seq is None else xp.where(keep, dh_prev, dh)
        dp = dp_seq.reshape(T * N, H)
        return dp_seq, self.gemm(h_seq[:T].reshape(T * N, H), dp, trans_a=True), dp.sum(axis=0), dh


def _check(op, x, kernel, recurrent_kernel, bias, h0, gates, bias_shape):
    check_rank(op, "x", x, 3, "[N, T, D]")
    N, T, D = x.shape
    if T < 1:
        raise ValueError(f"{op}: x must have at least one time step, got shape {tuple(x.shape)}")
    check_rank(op, "kernel", kernel, 2, f"[D, {gates}H]")
    check_rank(op, "recurrent_kernel", recurrent_kernel, 2, f"[H, {gates}H]")
    H = recurrent_kernel.shape[0]
    shapes = (f"x: {tuple(x.shape)}, kernel: {tuple(kernel.shape)}, recurrent_kernel: {tuple(recurrent_kernel.shape)}, "
              f"bias: {tuple(bias.shape)}")
    if recurrent_kernel.shape[1] != gates * H or kernel.shape != (D, gates * H) or bias.shape != bias_shape(H):
        raise ValueError(f"{op}: the weights must be kernel (D, {gates}H), recurrent_kernel (H, {gates}H) and bias "
                         f"{bias_shape('H')} for x of depth D; got {shapes}")
    if h0 is not None and tuple(h0.shape) != (N, H):
        raise ValueError(f"{op}: h0 must have shape (N, H) = {(N, H)}, got {tuple(h0.shape)} ({shapes})")
    return N, T, D, H


def _backprop_args(op, be, dys, dh, ys, h):
    dys = None if dys is None else check_grad(op, dys, ys, be, name="dys")
    dh = None if dh is None else check_grad(op, dh, h, be, name="dh")
    return dys, dh


def _sequence(op, be, x, kernel, h0, mask, H, recurrence, backward_recurrence):
    """What :func:`gru` and :func:`simple_rnn` share: step 1's input GEMM over every step (time-major), the
    backend's loop over time (``recurrence(a_seq, h0, mask_seq) -> (h_seq, *saved)``), Keras's outputs, and a
    ``backprop`` that runs ``backward_recurrence(dy_seq, dh, h_seq, *saved, mask_seq) -> (da_seq, drecurrent_kernel,
    dbias, dh0)`` and 1b's input GEMMs over every step."""
    xp = be.xp
    N, T, D = x.shape
    mask = sequence_mask(op, be, mask, N, T)
    mask_seq = None if mask is None else xp.ascontiguousarray(mask.T)  # (T, N), time-major
    h0 = xp.zeros((N, H), dtype=x.dtype) if h0 is None else h0
    x_seq = be.swap_batch_time(x)  # time-major: the loops read one contiguous (N, G) block per step
    G = kernel.shape[1]
    h_seq, *saved = recurrence(be.gemm(x_seq.reshape(T * N, D), kernel).reshape(T, N, G), h0, mask_seq)
    ys, dys_of = keras_outputs(xp, be.swap_batch_time(h_seq[1:]), mask)
    h = h_seq[T].copy()

    def backprop(dys, dh=None):
        dys, dh = _backprop_args(op, be, dys, dh, ys, h)
        dys = dys_of(dys)
        dy_seq = None if dys is None else be.swap_batch_time(xp.ascontiguousarray(dys))
        dh = xp.zeros((N, H), dtype=x.dtype) if dh is None else dh
        da_seq, drecurrent_kernel, dbias, dh0 = backward_recurrence(dy_seq, dh, h_seq, *saved, mask_seq)
        da = da_seq.reshape(T * N, G)
        dx = be.swap_batch_time(be.gemm(da, kernel, trans_b=True).reshape(T, N, D))  # 1b, for every step at once
        dkernel = be.gemm(x_seq.reshape(T * N, D), da, trans_a=True)
        return dx, dkernel, drecurrent_kernel, dbias, dh0

    return (ys, h), backprop


def gru_cost(x, kernel, recurrent_kernel, bias, h0=None, mask=None):
    N, T, D = x.shape
    H = recurrent_kernel.shape[0]
    products = 2.0 * T * N * (D + H) * 3 * H
    return Cost(flops=products + 12.0 * T * N * H, bytes=nbytes(x, kernel, recurrent_kernel, bias) + 5 * T * N * H * 4,
                backward_flops=2 * products + 20.0 * T * N * H,
                backward_bytes=2 * nbytes(x, kernel, recurrent_kernel, bias) + 8 * T * N * H * 4)


@recorded_op("gru", cost=gru_cost)
def gru(x, kernel, recurrent_kernel, bias, h0=None, mask=None):
    """A GRU (Keras's, ``reset_after=True``) over ``x`` (N, T, D): ``((ys, h), backprop)``, derived above.

    ``kernel`` (D, 3H), ``recurrent_kernel`` (H, 3H), ``bias`` (2, 3H), gates z, r, h;
    ``h0`` (N, H), zeros when None; ``mask`` (N, T) boolean, optional (Keras's: a False step keeps the state).
    ``backprop(dys, dh=None) -> (dx, dkernel, drecurrent_kernel, dbias, dh0)``.
    """
    be = get_backend()
    x, kernel, recurrent_kernel, bias, h0 = as_float_arrays(
        "gru", be, x=x, kernel=kernel, recurrent_kernel=recurrent_kernel, bias=bias, h0=h0)
    N, T, D, H = _check("gru", x, kernel, recurrent_kernel, bias, h0, 3, lambda H: (2, 3 * H))

    def recurrence(a_seq, h0, mask_seq):
        return be.gru_recurrence(a_seq, recurrent_kernel, bias, h0, mask_seq)

    def backward_recurrence(dy_seq, dh, h_seq, gates_seq, uh_seq, mask_seq):
        return be.gru_backward_recurrence(dy_seq, dh, recurrent_kernel, h_seq, gates_seq, uh_seq, mask_seq)

    return _sequence("gru", be, x, kernel, h0, mask, H, recurrence, backward_recurrence)


def simple_rnn_cost(x, kernel, recurrent_kernel, bias, h0=None, mask=None):
    N, T, D = x.shape
    H = recurrent_kernel.shape[0]
    products = 2.0 * T * N * (D + H) * H
    return Cost(flops=products + 4.0 * T * N * H, bytes=nbytes(x, kernel, recurrent_kernel, bias) + 2 * T * N * H * 4,
                backward_flops=2 * products + 4.0 * T * N * H,
                backward_bytes=2 * nbytes(x, kernel, recurrent_kernel, bias) + 3 * T * N * H * 4)


@recorded_op("simple_rnn", cost=simple_rnn_cost)
def simple_rnn(x, kernel, recurrent_kernel, bias, h0=None, mask=None):
    """Keras's ``SimpleRNN`` (tanh) over ``x`` (N, T, D): ``((ys, h), backprop)``, derived above.

    ``kernel`` (D, H), ``recurrent_kernel`` (H, H), ``bias`` (H,); ``h0`` (N, H), zeros when None;
    ``mask`` (N, T) boolean, optional, as for :func:`gru`.
    ``backprop(dys, dh=None) -> (dx, dkernel, drecurrent_kernel, dbias, dh0)``.
    """
    be = get_backend()
    x, kernel, recurrent_kernel, bias, h0 = as_float_arrays(
        "simple_rnn", be, x=x, kernel=kernel, recurrent_kernel=recurrent_kernel, bias=bias, h0=h0)
    N, T, D, H = _check("simple_rnn", x, kernel, recurrent_kernel, bias, h0, 1, lambda H: (H,))

    def recurrence(a_seq, h0, mask_seq):
        return (be.simple_rnn_recurrence(a_seq, recurrent_kernel, bias, h0, mask_seq),)

    def backward_recurrence(dy_seq, dh, h_seq, mask_seq):
        return be.simple_rnn_backward_recurrence(dy_seq, dh, recurrent_kernel, h_seq, mask_seq)

    return _sequence("simple_rnn", be, x, kernel, h0, mask, H, recurrence, backward_recurrence)
