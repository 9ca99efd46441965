"""Long short-term memory layer over a whole sequence, in the Keras layout.

Notation::

    N, T, D      batch, time steps, input features
    H            units (the size of h and c)
    4H           the four gate blocks of z, kernel and bias, in Keras order
                 i, f, c, o (input, forget, candidate, output); the candidate
                 is called g below, to keep it apart from the cell state c
    kernel       (D, 4H), recurrent_kernel (H, 4H), bias (4H,): the Keras weights
                 (in this file "kernel" is only ever that weight)
    x_t, h_t     step t's input (N, D) and output (N, H); h_{-1} = h0, c_{-1} = c0
    *_seq        a time-major stack the backend methods work on: x_seq (T, N, D),
                 h_seq and c_seq (T+1, N, H) with h_seq[t + 1] = h_t and h_seq[0] = h0

Gate order is Keras's, so weights load straight from
``tf.keras.layers.LSTM.get_weights()``.

Forward, for t = 0 .. T-1::

    1: z_t = x_t @ kernel + h_{t-1} @ recurrent_kernel + bias               (N, 4H)
    2: i = sigmoid(z_i),  f = sigmoid(z_f),  g = tanh(z_g),  o = sigmoid(z_o)
    3: c_t = f * c_{t-1} + i * g
    4: h_t = o * tanh(c_t)                                                   (the output y_t)

Backward: backpropagation through time, for t = T-1 down to 0. Each backward
step is numbered after the forward step it undoes, with a ``b`` for
"backward": ``3b`` is the gradient through step 3, and they run in reverse
order, 4b, 3b, 2b, 1b. The same numbers label the code here, in
``kernels/lstm_numba.py`` and in ``kernels/lstm.cu``. ``dh`` and ``dc`` are
the gradients of the current ``h_t`` and ``c_t``; step t+1 has already sent
back its share of them (its 1b and 3b)::

    4b: h_t is used twice, as the output y_t and by step t+1's step 1, so its
        gradient is the sum of both:  dh = dy_t + (dh from step t+1's 1b).
        Then through h_t = o * tanh(c_t):
            do = dh * tanh(c_t)
            dc = (dc from step t+1's 3b) + dh * o * (1 - tanh(c_t)^2)
    3b: through c_t = f * c_{t-1} + i * g:
            di = dc * g,   df = dc * c_{t-1},   dg = dc * i,   dc_{t-1} = dc * f   (sent to step t-1)
    2b: through the nonlinearities, sigmoid'(z) = s (1 - s) and tanh'(z) = 1 - g^2:
            dz_i = di * i (1 - i),   dz_f = df * f (1 - f),   dz_g = dg * (1 - g^2),   dz_o = do * o (1 - o)
    1b: through z_t = x_t @ kernel + h_{t-1} @ recurrent_kernel + bias:
            dh_{t-1} = dz_t @ recurrent_kernel.T                               (sent to step t-1)
            dx_t     = dz_t @ kernel.T
        The weights are shared by every step, so their gradients sum over t
        (and over n, as in a dense layer):
            dkernel[d, k]           = sum_{t, n} x_t[n, d] * dz_t[n, k]
            drecurrent_kernel[j, k] = sum_{t, n} h_{t-1}[n, j] * dz_t[n, k]
            dbias[k]                = sum_{t, n} dz_t[n, k]
        computed after the loop as one GEMM each over all T*N rows.

After step 0, the dh_{-1} and dc_{-1} sent back are the gradients of h0 and c0.

Steps 2-4 are one backend method (``lstm_gates_forward``, and 4b-2b
``lstm_gates_backward``), the elementwise hot loop the Numba and CuPy
backends fuse; step 1 is GEMMs, left to BLAS. The loop over time is a backend
method too (``lstm_forward`` / ``lstm_backward``), so that the Numba backend
can run it on preallocated buffers.
"""
from __future__ import annotations

from .._checks import as_float_arrays, check_grad, check_rank
from ..backend import get_backend
from ..recording import Cost, nbytes
from ..recording import op as recorded_op


class LSTMReference:
    """The reference backend's LSTM methods: the whole sequence forward and backward,
    and the elementwise part of one time step they are built on."""

    def swap_batch_time(self, a):
        """(N, T, F) <-> (T, N, F), a contiguous copy."""
        return self.xp.ascontiguousarray(a.transpose(1, 0, 2))

    def lstm_gates_forward(self, z, c_prev):
        """Steps 2-4 as array expressions."""
        xp = self.xp
        H = c_prev.shape[1]
        # 2: sigmoid over all four blocks, then tanh over the candidate block.
        gates = self.sigmoid(z)
        gates[:, 2 * H : 3 * H] = xp.tanh(z[:, 2 * H : 3 * H])
        i, f, g, o = gates[:, :H], gates[:, H : 2 * H], gates[:, 2 * H : 3 * H], gates[:, 3 * H :]
        c = f * c_prev + i * g  # 3
        h = o * xp.tanh(c)  # 4
        return h, c, gates

    def lstm_gates_backward(self, dh, dc, c_prev, c, gates):
        """Steps 4b, 3b, 2b as array expressions (``dh`` already holds dy_t)."""
        xp = self.xp
        H = c.shape[1]
        i, f, g, o = gates[:, :H], gates[:, H : 2 * H], gates[:, 2 * H : 3 * H], gates[:, 3 * H :]
        tanh_c = xp.tanh(c)
        # 4b: h = o * tanh(c): c receives dh through tanh, on top of step t+1's dc.
        d_o = dh * tanh_c
        dc = dc + dh * o * (1 - tanh_c * tanh_c)
        # 3b: c = f * c_prev + i * g
        d_i = dc * g
        d_f = dc * c_prev
        d_g = dc * i
        dc_prev = dc * f
        # 2b: through the nonlinearities: sigmoid' = s (1 - s), tanh' = 1 - t^2.
        dz = xp.empty_like(gates)
        dz[:, :H] = d_i * i * (1 - i)
        dz[:, H : 2 * H] = d_f * f * (1 - f)
        dz[:, 2 * H : 3 * H] = d_g * (1 - g * g)
        dz[:, 3 * H :] = d_o * o * (1 - o)
        return dz, dc_prev

    def lstm_forward(self, x_seq, kernel, recurrent_kernel, bias, h0, c0):
        """Steps 1-4 for t = 0 .. T-1; keeping ``h0`` in ``h_seq`` makes the recurrent
        weight gradient one GEMM over all steps."""
        xp = self.xp
        T, N, D = x_seq.shape
        H = recurrent_kernel.shape[0]
        h_seq = xp.empty((T + 1, N, H), dtype=x_seq.dtype)
        c_seq = xp.empty((T + 1, N, H), dtype=x_seq.dtype)
        h_seq[0], c_seq[0] = h0, c0
        # 1: the input part of z_t for all steps at once, in one GEMM.
        z_seq = self.gemm(x_seq.reshape(T * N, D), kernel).reshape(T, N, 4 * H)
        z_seq += bias
        gates_seq = xp.empty((T, N, 4 * H), dtype=x_seq.dtype)
        for t in range(T):
            # 1: ... plus the recurrent part, which needs h_{t-1} (h_seq[t]).
            z_seq[t] += self.gemm(h_seq[t], recurrent_kernel)
            # 2-4: gates, c_t, h_t
            h_seq[t + 1], c_seq[t + 1], gates_seq[t] = self.lstm_gates_forward(z_seq[t], c_seq[t])
        return h_seq, c_seq, gates_seq

    def lstm_backward(self, dy_seq, dh, dc, x_seq, kernel, recurrent_kernel, h_seq, c_seq, gates_seq,
                      need_dx=True):
        """Steps 4b, 3b, 2b, 1b for t = T-1 down to 0, then 1b's weight sums as three GEMMs."""
        xp = self.xp
        T, N, D = x_seq.shape
        H = recurrent_kernel.shape[0]
        dz_seq = xp.empty((T, N, 4 * H), dtype=x_seq.dtype)
        # dh, dc: the gradients of h_t and c_t; at t = T-1, those of the final state.
        for t in range(T - 1, -1, -1):
            # 4b: h_t feeds the output y_t and step t+1 (dh holds the latter).
            if dy_seq is not None:
                dh = dh + dy_seq[t]
            # 4b, 3b, 2b: back through the gates and the cell update.
            dz_seq[t], dc = self.lstm_gates_backward(dh, dc, c_seq[t], c_seq[t + 1], gates_seq[t])
            # 1b: z_t = ... + h_{t-1} @ recurrent_kernel, so h_{t-1} gets dz_t @ recurrent_kernel.T
            dh = self.gemm(dz_seq[t], recurrent_kernel, trans_b=True)
        # 1b, for the weights and the inputs: each sums over every step, so one GEMM over (T*N) rows each.
        dz = dz_seq.reshape(T * N, 4 * H)
        dkernel = self.gemm(x_seq.reshape(T * N, D), dz, trans_a=True)
        drecurrent_kernel = self.gemm(h_seq[:T].reshape(T * N, H), dz, trans_a=True)
        dbias = dz.sum(axis=0)
        dx_seq = self.gemm(dz, kernel, trans_b=True).reshape(T, N, D) if need_dx else None
        # After step 0, dh and dc are the gradients of the initial state.
        return dx_seq, dkernel, drecurrent_kernel, dbias, dh, dc


def _check_inputs(x, kernel, recurrent_kernel, bias, h0, c0):
    check_rank("lstm", "x", x, 3, "[N, T, D]")
    check_rank("lstm", "kernel", kernel, 2, "[D, 4H]")
    check_rank("lstm", "recurrent_kernel", recurrent_kernel, 2, "[H, 4H]")
    check_rank("lstm", "bias", bias, 1, "[4H]")
    N, T, D = x.shape
    H = recurrent_kernel.shape[0]
    if recurrent_kernel.shape[1] != 4 * H:
        raise ValueError(
            f"lstm: recurrent_kernel must have shape (H, 4H), got {tuple(recurrent_kernel.shape)}"
        )
    if tuple(kernel.shape) != (D, 4 * H):
        raise ValueError(
            f"lstm: kernel must have shape (D, 4H) = ({D}, {4 * H}) to match x and recurrent_kernel "
            f"(x: {tuple(x.shape)}, kernel: {tuple(kernel.shape)}, recurrent_kernel: {tuple(recurrent_kernel.shape)})"
        )
    if tuple(bias.shape) != (4 * H,):
        raise ValueError(
            f"lstm: bias must have shape ({4 * H},) to match recurrent_kernel {tuple(recurrent_kernel.shape)}, "
            f"got {tuple(bias.shape)}"
        )
    if T < 1:
        raise ValueError(f"lstm: x must have at least one time step, got shape {tuple(x.shape)}")
    for name, s in (("h0", h0), ("c0", c0)):
        if s is not None and tuple(s.shape) != (N, H):
            raise ValueError(f"lstm: {name} must have shape (N, H) = ({N}, {H}), got {tuple(s.shape)}")


def lstm_cost(x, kernel, recurrent_kernel, bias, h0=None, c0=None, need_dx=True):
    """FLOPs and bytes of :func:`lstm`: per step the gate GEMM ``2 N (D + H) 4H`` plus ~10 N H elementwise;
    backward twice the GEMMs (the inputs' and the weights' gradients; the inputs' only with ``need_dx``)."""
    N, T, D = x.shape
    H = recurrent_kernel.shape[0]
    gemm = 2.0 * T * N * (D + H) * 4 * H
    dx_gemm = 0.0 if need_dx else 2.0 * T * N * D * 4 * H
    pointwise = 10.0 * T * N * H
    states = T * N * 6 * H * x.dtype.itemsize  # h, c and the four gates of every step
    return Cost(flops=gemm + pointwise, bytes=nbytes(x, kernel, recurrent_kernel, bias) + states,
                backward_flops=2 * gemm - dx_gemm + 2 * pointwise,
                backward_bytes=2 * nbytes(x, kernel, recurrent_kernel, bias) + 2 * states)


@recorded_op("lstm", cost=lstm_cost)
def lstm(x, kernel, recurrent_kernel, bias, h0=None, c0=None, need_dx=True):
    """Run an LSTM over a batch of sequences.

    Parameters
    ----------
    x : array of shape (N, T, D)
    kernel : array of shape (D, 4H)
    recurrent_kernel : array of shape (H, 4H)
    bias : array of shape (4H,)
        Gate blocks in Keras order ``i, f, c, o``.
    h0, c0 : arrays of shape (N, H), optional
        Initial state; zeros when absent.
    need_dx : bool
        False when nobody wants the input's gradient: ``backprop`` then
        returns ``None`` for ``dx`` and skips its GEMM.

    Returns
    -------
    (ys, h, c) : arrays of shapes (N, T, H), (N, H), (N, H)
        Every step's output, and the final hidden and cell state.
    backprop : callable
        ``backprop(dys, dh=None, dc=None) -> (dx, dkernel, drecurrent_kernel, dbias, dh0, dc0)``.
        ``dys`` (N, T, H) may be ``None`` when only the final state is used;
        ``dh``, ``dc`` (N, H) are gradients of the final state. The module
        docstring derives every step.
    """
    be = get_backend()
    xp = be.xp
    x, kernel, recurrent_kernel, bias, h0, c0 = as_float_arrays(
        "lstm", be, x=x, kernel=kernel, recurrent_kernel=recurrent_kernel, bias=bias, h0=h0, c0=c0
    )
    _check_inputs(x, kernel, recurrent_kernel, bias, h0, c0)
    N, T, D = x.shape
    H = recurrent_kernel.shape[0]
    dtype = x.dtype

    def time_major(a):  # (N, T, .) <-> (T, N, .): the backend reads one contiguous (N, .) block per step
        return be.swap_batch_time(a)

    zeros = lambda: xp.zeros((N, H), dtype=dtype)  # noqa: E731
    x_seq = time_major(x)
    h_seq, c_seq, gates_seq = be.lstm_forward(
        x_seq, kernel, recurrent_kernel, bias, zeros() if h0 is None else h0, zeros() if c0 is None else c0
    )
    ys = time_major(h_seq[1:])
    h, c = h_seq[T].copy(), c_seq[T].copy()

    def backprop(dys, dh=None, dc=None):
        dh = zeros() if dh is None else check_grad("lstm", dh, h, be, name="dh")
        dc = zeros() if dc is None else check_grad("lstm", dc, c, be, name="dc")
        dy_seq = None if dys is None else time_major(check_grad("lstm", dys, ys, be, name="dys"))
        dx_seq, dkernel, drecurrent_kernel, dbias, dh0, dc0 = be.lstm_backward(
            dy_seq, dh, dc, x_seq, kernel, recurrent_kernel, h_seq, c_seq, gates_seq, bool(need_dx)
        )
        dx = time_major(dx_seq) if dx_seq is not None else None
        return dx, dkernel, drecurrent_kernel, dbias, dh0, dc0

    return (ys, h, c), backprop
