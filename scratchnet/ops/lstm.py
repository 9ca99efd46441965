"""Long short-term memory layer over a whole sequence, in the Keras layout.

Gate order is Keras's ``i, f, c, o`` (input, forget, cell candidate, output),
so weights load straight from ``tf.keras.layers.LSTM.get_weights()``. For each
step ``t``::

    1: Z_t = X_t @ kernel + h_{t-1} @ recurrent_kernel + bias     (N, 4H)
    2: i, f, o = sigmoid(Z_i, Z_f, Z_o);  g = tanh(Z_c)
    3: c_t = f * c_{t-1} + i * g
    4: h_t = o * tanh(c_t)

Steps 2-4 are the elementwise "gates" kernel, the hot loop the Numba and CuPy
backends fuse; step 1 is GEMMs, left to BLAS. The loop over time is a kernel
too (``lstm_forward`` / ``lstm_backward``), so that the Numba backend can run
it on preallocated buffers.
"""
from __future__ import annotations

from .._checks import as_float_arrays, check_grad, check_rank
from ..backend import get_backend


class LSTMKernels:
    """Reference kernels: the whole sequence forward and backward, and the
    elementwise part of one time step they are built on."""

    def lstm_gates_forward(self, Z, c_prev):
        """Gate nonlinearities and cell update of one step (steps 2-4 above).

        Parameters
        ----------
        Z : array of shape (N, 4H)
            Pre-activations in Keras order ``i, f, c, o``.
        c_prev : array of shape (N, H)

        Returns
        -------
        h : array of shape (N, H)
        c : array of shape (N, H)
        G : array of shape (N, 4H)
            The activated gates ``[sigmoid(Z_i), sigmoid(Z_f), tanh(Z_c), sigmoid(Z_o)]``,
            kept for the backward pass.
        """
        xp = self.xp
        H = c_prev.shape[1]
        G = self.sigmoid(Z)
        G[:, 2 * H : 3 * H] = xp.tanh(Z[:, 2 * H : 3 * H])
        i, f, g, o = G[:, :H], G[:, H : 2 * H], G[:, 2 * H : 3 * H], G[:, 3 * H :]
        c = f * c_prev + i * g
        h = o * xp.tanh(c)
        return h, c, G

    def lstm_gates_backward(self, dh, dc, c_prev, c, G):
        """Backward of :meth:`lstm_gates_forward`.

        Parameters
        ----------
        dh : array of shape (N, H)
            Total gradient into ``h_t`` (from the output and from step t+1).
        dc : array of shape (N, H)
            Gradient into ``c_t`` from step t+1.
        c_prev, c : arrays of shape (N, H)
        G : array of shape (N, 4H), from the forward pass

        Returns
        -------
        dZ : array of shape (N, 4H)
        dc_prev : array of shape (N, H)
        """
        xp = self.xp
        H = c.shape[1]
        i, f, g, o = G[:, :H], G[:, H : 2 * H], G[:, 2 * H : 3 * H], G[:, 3 * H :]
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
        dZ = xp.empty_like(G)
        dZ[:, :H] = d_i * i * (1 - i)
        dZ[:, H : 2 * H] = d_f * f * (1 - f)
        dZ[:, 2 * H : 3 * H] = d_g * (1 - g * g)
        dZ[:, 3 * H :] = d_o * o * (1 - o)
        return dZ, dc_prev

    def lstm_forward(self, X, kernel, recurrent_kernel, bias, h0, c0):
        """Steps 1-4 over a whole time-major sequence.

        Parameters
        ----------
        X : array of shape (T, N, D)
            Time-major, so each step reads and writes contiguous (N, .) blocks.
        kernel : array of shape (D, 4H)
        recurrent_kernel : array of shape (H, 4H)
        bias : array of shape (4H,)
        h0, c0 : arrays of shape (N, H)

        Returns
        -------
        Hs, Cs : arrays of shape (T + 1, N, H)
            ``Hs[0]`` is ``h0`` and ``Hs[t + 1]`` is ``h_t``; likewise ``Cs``.
            Keeping ``h0`` in the buffer makes the recurrent weight gradient one
            GEMM over all steps.
        Gs : array of shape (T, N, 4H)
            Every step's activated gates, for :meth:`lstm_backward`.
        """
        xp = self.xp
        T, N, D = X.shape
        H = recurrent_kernel.shape[0]
        Hs = xp.empty((T + 1, N, H), dtype=X.dtype)
        Cs = xp.empty((T + 1, N, H), dtype=X.dtype)
        Hs[0], Cs[0] = h0, c0
        # 1: the input part of Z_t for all steps at once, in one GEMM.
        Zs = self.gemm(X.reshape(T * N, D), kernel).reshape(T, N, 4 * H)
        Zs += bias
        Gs = xp.empty((T, N, 4 * H), dtype=X.dtype)
        for t in range(T):
            # 1: ... plus the recurrent part, which needs h_{t-1}
            Zs[t] += self.gemm(Hs[t], recurrent_kernel)
            # 2-4: gates, c_t, h_t
            Hs[t + 1], Cs[t + 1], Gs[t] = self.lstm_gates_forward(Zs[t], Cs[t])
        return Hs, Cs, Gs

    def lstm_backward(self, dYs, dh, dc, X, kernel, recurrent_kernel, Hs, Cs, Gs):
        """Backward of :meth:`lstm_forward`, step T-1 down to step 0.

        Parameters
        ----------
        dYs : array of shape (T, N, H), or None
            Gradient of every step's output ``h_t`` (time-major); ``None`` when
            only the final state is used.
        dh, dc : arrays of shape (N, H)
            Gradients of the final state ``h_{T-1}``, ``c_{T-1}``.
        X, kernel, recurrent_kernel
            As for :meth:`lstm_forward`.
        Hs, Cs, Gs
            What :meth:`lstm_forward` returned.

        Returns
        -------
        dX : array of shape (T, N, D)
        dkernel : array of shape (D, 4H)
        drecurrent_kernel : array of shape (H, 4H)
        dbias : array of shape (4H,)
        dh0, dc0 : arrays of shape (N, H)
        """
        xp = self.xp
        T, N, D = X.shape
        H = recurrent_kernel.shape[0]
        dZs = xp.empty((T, N, 4 * H), dtype=X.dtype)
        dH, dC = dh, dc
        for t in range(T - 1, -1, -1):
            # 4b: h_t feeds the output ys[:, t] and step t+1 (dH holds the latter).
            if dYs is not None:
                dH = dH + dYs[t]
            # 2b-4b: back through the gates and the cell update.
            dZs[t], dC = self.lstm_gates_backward(dH, dC, Cs[t], Cs[t + 1], Gs[t])
            # 1b: Z_t = ... + h_{t-1} @ recurrent_kernel, so h_{t-1} gets dZ_t @ recurrent_kernel.T
            dH = self.gemm(dZs[t], recurrent_kernel, trans_b=True)
        # 1b, for the weights: each sums over every step, so one GEMM over (T*N) rows each.
        dZ = dZs.reshape(T * N, 4 * H)
        dkernel = self.gemm(X.reshape(T * N, D), dZ, trans_a=True)
        drecurrent_kernel = self.gemm(Hs[:T].reshape(T * N, H), dZ, trans_a=True)
        dbias = dZ.sum(axis=0)
        dX = self.gemm(dZ, kernel, trans_b=True).reshape(T, N, D)
        # After step 0, dH and dC are the gradients of the initial state.
        return dX, dkernel, drecurrent_kernel, dbias, dH, dC


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
        raise ValueError(f"lstm: bias must have shape ({4 * H},) to match recurrent_kernel {tuple(recurrent_kernel.shape)}, got {tuple(bias.shape)}")
    if T < 1:
        raise ValueError(f"lstm: x must have at least one time step, got shape {tuple(x.shape)}")
    for name, s in (("h0", h0), ("c0", c0)):
        if s is not None and tuple(s.shape) != (N, H):
            raise ValueError(f"lstm: {name} must have shape (N, H) = ({N}, {H}), got {tuple(s.shape)}")


def lstm(x, kernel, recurrent_kernel, bias, h0=None, c0=None):
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

    Returns
    -------
    (ys, h, c) : arrays of shapes (N, T, H), (N, H), (N, H)
        Every step's output, and the final hidden and cell state.
    backprop : callable
        ``backprop(dys, dh=None, dc=None) -> (dx, dkernel, drecurrent_kernel, dbias, dh0, dc0)``.
        ``dys`` (N, T, H) may be ``None`` when only the final state is used;
        ``dh``, ``dc`` (N, H) are gradients of the final state.
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

    # The kernels work time-major: one contiguous (N, .) block per step.
    X = xp.ascontiguousarray(x.transpose(1, 0, 2))
    zeros = lambda: xp.zeros((N, H), dtype=dtype)  # noqa: E731
    Hs, Cs, Gs = be.lstm_forward(
        X, kernel, recurrent_kernel, bias, zeros() if h0 is None else h0, zeros() if c0 is None else c0
    )
    ys = xp.ascontiguousarray(Hs[1:].transpose(1, 0, 2))
    h, c = Hs[T].copy(), Cs[T].copy()

    def backprop(dys, dh=None, dc=None):
        dH = zeros() if dh is None else check_grad("lstm", dh, h, be, name="dh")
        dC = zeros() if dc is None else check_grad("lstm", dc, c, be, name="dc")
        dYs = None
        if dys is not None:
            dys = check_grad("lstm", dys, ys, be, name="dys")
            dYs = xp.ascontiguousarray(dys.transpose(1, 0, 2))
        dX, dkernel, drecurrent_kernel, dbias, dh0, dc0 = be.lstm_backward(
            dYs, dH, dC, X, kernel, recurrent_kernel, Hs, Cs, Gs
        )
        dx = xp.ascontiguousarray(dX.transpose(1, 0, 2))
        return dx, dkernel, drecurrent_kernel, dbias, dh0, dc0

    return (ys, h, c), backprop
