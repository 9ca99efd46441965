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
``kernels/numba/lstm.py`` and in ``kernels/cuda/lstm.cu``. ``dh`` and ``dc`` are
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

An LSTM over an embedding (``embedding_lstm``). When the input is a lookup,
``x_t[n] = table[ids[n, t]]`` from a (V, D) table, step 1's input part is a
lookup too, since a row of a product is the product of the row::

    x_t[n] @ kernel = table[ids[n, t]] @ kernel = (table @ kernel)[ids[n, t]]

so the table is projected once, (V, D) @ (D, 4H), and each position gathers
a row of the projection: V*D*4H multiply-adds instead of N*T*D*4H. The
backward uses the same identity. With ``G[v] = sum of dz_t[n] over the
positions where ids[n, t] == v`` (the embedding's scatter-add applied to
dz, a (V, 4H) table)::

    dkernel = sum_{t, n} x_t[n].T dz_t[n] = table.T @ G                  (D, 4H)
    dtable[v] = sum_{ids[n, t] == v} dz_t[n] @ kernel.T = (G @ kernel.T)[v]   (V, D)

so neither the (N*T, D) inputs nor their gradient are ever formed, and both
input GEMMs over N*T rows become GEMMs over V rows. It pays when V < N*T (a
character model: V = 103 symbols against 100 x 50 = 5,000 positions a
batch); ``Sequential`` runs an ``Embedding`` followed by an ``LSTM`` this
way when it does (``LSTM.forward_after``). The results equal the
lookup-then-LSTM up to the order of float additions.

Masks (``mask[n, t]`` False: padding; ``scratchnet/ops/masks.py``). A masked step keeps
the state, ``h_t = h_{t-1}`` and ``c_t = c_{t-1}``, as Keras's; backward it is the identity:
``dz_t = 0``, and ``dh`` (dy_t included) and ``dc`` pass to step t-1 unchanged, so a padded
step adds nothing to the weights' gradients. ``docs/derivations/lstm.md`` derives it.

Steps 2-4 are one backend method (``lstm_gates_forward``, and 4b-2b
``lstm_gates_backward``), the elementwise hot loop the Numba and CuPy
backends fuse; step 1 is GEMMs, left to BLAS. The loops over time are backend
methods too (``lstm_recurrence`` / ``lstm_backward_recurrence``, which
``lstm_forward`` / ``lstm_backward`` wrap with step 1's input GEMMs), so that
the Numba backend can run them on preallocated buffers.
"""
from __future__ import annotations

from .._checks import as_float_arrays, check_grad, check_ids, check_rank
from ..backend import get_backend
from .masks import keras_outputs, sequence_mask
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

    def lstm_forward(self, x_seq, kernel, recurrent_kernel, bias, h0, c0, mask_seq=None):
        """Step 1's input part for all steps at once, in one GEMM, then the recurrence."""
        T, N, D = x_seq.shape
        z_seq = self.gemm(x_seq.reshape(T * N, D), kernel).reshape(T, N, kernel.shape[1])
        return self.lstm_recurrence(z_seq, recurrent_kernel, bias, h0, c0, mask_seq)

    def lstm_recurrence(self, z_seq, recurrent_kernel, bias, h0, c0, mask_seq=None):
        """Steps 1-4 for t = 0 .. T-1, given the input part of every z_t; keeping ``h0`` in
        ``h_seq`` makes the recurrent weight gradient one GEMM over all steps. A row whose
        ``mask_seq[t]`` is False keeps its h and c (the module docstring's masks)."""
        xp = self.xp
        T, N, _ = z_seq.shape
        H = recurrent_kernel.shape[0]
        h_seq = xp.empty((T + 1, N, H), dtype=z_seq.dtype)
        c_seq = xp.empty((T + 1, N, H), dtype=z_seq.dtype)
        h_seq[0], c_seq[0] = h0, c0
        z_seq += bias
        gates_seq = xp.empty((T, N, 4 * H), dtype=z_seq.dtype)
        for t in range(T):
            # 1: ... plus the recurrent part, which needs h_{t-1} (h_seq[t]).
            z_seq[t] += self.gemm(h_seq[t], recurrent_kernel)
            # 2-4: gates, c_t, h_t
            h, c, gates_seq[t] = self.lstm_gates_forward(z_seq[t], c_seq[t])
            if mask_seq is not None:  # a masked row carries h_{t-1}, c_{t-1}
                keep = mask_seq[t][:, None]
                h, c = xp.where(keep, h, h_seq[t]), xp.where(keep, c, c_seq[t])
            h_seq[t + 1], c_seq[t + 1] = h, c
        return h_seq, c_seq, gates_seq

    def lstm_backward_recurrence(self, dy_seq, dh, dc, recurrent_kernel, h_seq, c_seq, gates_seq, mask_seq=None):
        """Steps 4b, 3b, 2b, 1b for t = T-1 down to 0, then the recurrent weight's and the bias's sums.
        A masked row of step t is the identity: dz_t = 0, and dh, dc pass to step t-1 unchanged."""
        xp = self.xp
        T, N, G = gates_seq.shape
        H = recurrent_kernel.shape[0]
        dz_seq = xp.empty((T, N, G), dtype=gates_seq.dtype)
        # dh, dc: the gradients of h_t and c_t; at t = T-1, those of the final state.
        for t in range(T - 1, -1, -1):
            # 4b: h_t feeds the output y_t and step t+1 (dh holds the latter).
            if dy_seq is not None:
                dh = dh + dy_seq[t]
            # 4b, 3b, 2b: back through the gates and the cell update.
            dz, dc_prev = self.lstm_gates_backward(dh, dc, c_seq[t], c_seq[t + 1], gates_seq[t])
            if mask_seq is not None:  # a masked row: no dz, and its dh and dc go to step t-1 as they are
                keep = mask_seq[t][:, None]
                dz, dc_prev = xp.where(keep, dz, 0), xp.where(keep, dc_prev, dc)
            dz_seq[t], dc = dz, dc_prev
            # 1b: z_t = ... + h_{t-1} @ recurrent_kernel, so h_{t-1} gets dz_t @ recurrent_kernel.T
            dh_prev = self.gemm(dz_seq[t], recurrent_kernel, trans_b=True)
            dh = dh_prev if mask_seq is None else xp.where(keep, dh_prev, dh)
        # 1b, for the weights: each sums over every step, so one GEMM (or sum) over (T*N) rows.
        dz = dz_seq.reshape(T * N, G)
        drecurrent_kernel = self.gemm(h_seq[:T].reshape(T * N, H), dz, trans_a=True)
        dbias = dz.sum(axis=0)
        # After step 0, dh and dc are the gradients of the initial state.
        return dz_seq, drecurrent_kernel, dbias, dh, dc

    def lstm_backward(self, dy_seq, dh, dc, x_seq, kernel, recurrent_kernel, h_seq, c_seq, gates_seq,
                      need_dx=True, mask_seq=None):
        """The recurrence's backward, then 1b's input GEMMs over all (T*N) rows."""
        T, N, D = x_seq.shape
        dz_seq, drecurrent_kernel, dbias, dh0, dc0 = self.lstm_backward_recurrence(
            dy_seq, dh, dc, recurrent_kernel, h_seq, c_seq, gates_seq, mask_seq)
        dz = dz_seq.reshape(T * N, -1)
        dkernel = self.gemm(x_seq.reshape(T * N, D), dz, trans_a=True)
        dx_seq = self.gemm(dz, kernel, trans_b=True).reshape(T, N, D) if need_dx else None
        return dx_seq, dkernel, drecurrent_kernel, dbias, dh0, dc0


def _check_inputs(x, kernel, recurrent_kernel, bias, h0, c0):
    check_rank("lstm", "x", x, 3, "[N, T, D]")
    if x.shape[1] < 1:
        raise ValueError(f"lstm: x must have at least one time step, got shape {tuple(x.shape)}")
    _check_weights("lstm", x.shape, f"x: {tuple(x.shape)}", kernel, recurrent_kernel, bias, h0, c0)


def _check_weights(op, x_shape, what, kernel, recurrent_kernel, bias, h0, c0):
    """The weights and initial state of an LSTM over inputs of shape ``x_shape`` (N, T, D); ``what`` names the input."""
    check_rank(op, "kernel", kernel, 2, "[D, 4H]")
    check_rank(op, "recurrent_kernel", recurrent_kernel, 2, "[H, 4H]")
    check_rank(op, "bias", bias, 1, "[4H]")
    N, T, D = x_shape
    H = recurrent_kernel.shape[0]
    if recurrent_kernel.shape[1] != 4 * H:
        raise ValueError(f"{op}: recurrent_kernel must have shape (H, 4H), got {tuple(recurrent_kernel.shape)}")
    if tuple(kernel.shape) != (D, 4 * H):
        raise ValueError(f"{op}: kernel must have shape (D, 4H) = ({D}, {4 * H}) to match the input and "
                         f"recurrent_kernel ({what}, kernel: {tuple(kernel.shape)}, recurrent_kernel: "
                         f"{tuple(recurrent_kernel.shape)})")
    if tuple(bias.shape) != (4 * H,):
        raise ValueError(f"{op}: bias must have shape ({4 * H},) to match recurrent_kernel "
                         f"{tuple(recurrent_kernel.shape)}, got {tuple(bias.shape)}")
    for name, s in (("h0", h0), ("c0", c0)):
        if s is not None and tuple(s.shape) != (N, H):
            raise ValueError(f"{op}: {name} must have shape (N, H) = ({N}, {H}), got {tuple(s.shape)}")


def lstm_cost(x, kernel, recurrent_kernel, bias, h0=None, c0=None, need_dx=True, mask=None):
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
def lstm(x, kernel, recurrent_kernel, bias, h0=None, c0=None, need_dx=True, mask=None):
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
    mask : boolean array of shape (N, T), optional
        Keras's RNN mask: a step where it is False keeps the state, and
        outputs the previous output (:mod:`scratchnet.ops.masks`).

    Returns
    -------
    (ys, h, c) : arrays of shapes (N, T, H), (N, H), (N, H)
        Every step's output, and the final hidden and cell state (carried
        through masked steps).
    backprop : callable
        ``backprop(dys, dh=None, dc=None) -> (dx, dkernel, drecurrent_kernel, dbias, dh0, dc0)``.
        ``dys`` (N, T, H) may be ``None`` when only the final state is used;
        ``dh``, ``dc`` (N, H) are gradients of the final state. The module
        docstring derives every step.
    """
    be = get_backend()
    x, kernel, recurrent_kernel, bias, h0, c0 = as_float_arrays(
        "lstm", be, x=x, kernel=kernel, recurrent_kernel=recurrent_kernel, bias=bias, h0=h0, c0=c0)
    _check_inputs(x, kernel, recurrent_kernel, bias, h0, c0)
    N, T, D = x.shape
    mask = sequence_mask("lstm", be, mask, N, T)
    mask_seq = None if mask is None else be.xp.ascontiguousarray(mask.T)  # (T, N), time-major
    x_seq = be.swap_batch_time(x)  # time-major: the backend reads one contiguous (N, D) block per step

    def forward(h0, c0):
        return be.lstm_forward(x_seq, kernel, recurrent_kernel, bias, h0, c0, mask_seq)

    def backward(dy_seq, dh, dc, h_seq, c_seq, gates_seq):
        dx_seq, dkernel, drecurrent_kernel, dbias, dh0, dc0 = be.lstm_backward(
            dy_seq, dh, dc, x_seq, kernel, recurrent_kernel, h_seq, c_seq, gates_seq, bool(need_dx), mask_seq)
        dx = be.swap_batch_time(dx_seq) if dx_seq is not None else None
        return dx, dkernel, drecurrent_kernel, dbias, dh0, dc0

    return _run("lstm", be, N, T, recurrent_kernel.shape[0], x.dtype, h0, c0, mask, forward, backward)


def _run(op, be, N, T, H, dtype, h0, c0, mask, forward, backward):
    """The part :func:`lstm` and :func:`embedding_lstm` share: zero initial states, batch-major
    outputs (Keras's at masked steps), and a ``backprop`` that checks its gradients and hands them to ``backward``."""
    xp = be.xp

    def zeros():
        return xp.zeros((N, H), dtype=dtype)

    h_seq, c_seq, gates_seq = forward(zeros() if h0 is None else h0, zeros() if c0 is None else c0)
    ys, dys_of = keras_outputs(xp, be.swap_batch_time(h_seq[1:]), mask)  # (T, N, H) -> (N, T, H)
    h, c = h_seq[T].copy(), c_seq[T].copy()

    def backprop(dys, dh=None, dc=None):
        dh = zeros() if dh is None else check_grad(op, dh, h, be, name="dh")
        dc = zeros() if dc is None else check_grad(op, dc, c, be, name="dc")
        dys = None if dys is None else dys_of(check_grad(op, dys, ys, be, name="dys"))
        dy_seq = None if dys is None else be.swap_batch_time(xp.ascontiguousarray(dys))
        return backward(dy_seq, dh, dc, h_seq, c_seq, gates_seq)

    return (ys, h, c), backprop


def embedding_lstm_cost(ids, table, kernel, recurrent_kernel, bias, h0=None, c0=None, need_dtable=True,
                        mask=None):
    """FLOPs and bytes of :func:`embedding_lstm`: the table's projection and its two gradient GEMMs
    over V rows, the recurrence as in :func:`lstm_cost`, a gather and a scatter-add of 4H per position."""
    N, T = ids.shape
    V, D = table.shape
    H = recurrent_kernel.shape[0]
    projection = 2.0 * V * D * 4 * H
    recurrent = 2.0 * T * N * H * 4 * H
    pointwise = 10.0 * T * N * H
    rows = T * N * 4 * H * table.dtype.itemsize  # a gathered (or scattered) row of 4H per position
    states = T * N * 6 * H * table.dtype.itemsize
    weights = nbytes(table, kernel, recurrent_kernel, bias)
    return Cost(flops=projection + recurrent + pointwise, bytes=weights + rows + states,
                backward_flops=(2 if need_dtable else 1) * projection + 2 * recurrent + 2 * pointwise + T * N * 4 * H,
                backward_bytes=2 * weights + 2 * rows + 2 * states)


@recorded_op("embedding_lstm", cost=embedding_lstm_cost)
def embedding_lstm(ids, table, kernel, recurrent_kernel, bias, h0=None, c0=None, need_dtable=True, mask=None):
    """An LSTM over the embedding of ``ids``: :func:`lstm` of ``table[ids]``, computed without forming it.

    The module docstring derives it: the table is projected once
    (``table @ kernel``) and each position gathers its row of the
    projection; backward, a scatter-add of the pre-activations' gradient
    into V rows gives both the kernel's and the table's gradient. Worth it
    when the vocabulary V is smaller than the N*T positions of a batch.

    Parameters
    ----------
    ids : integer array of shape (N, T), each in ``[0, V)``
    table : array of shape (V, D)
    kernel, recurrent_kernel, bias, h0, c0, mask : as for :func:`lstm`
    need_dtable : bool
        False when nobody wants the table's gradient (a frozen table):
        ``backprop`` then returns ``None`` for it and skips its GEMM.

    Returns
    -------
    (ys, h, c) : as for :func:`lstm`
    backprop : callable
        ``backprop(dys, dh=None, dc=None) -> (dtable, dkernel, drecurrent_kernel, dbias, dh0, dc0)``,
        ``dtable`` of shape (V, D) (rows no id picked are zero), or ``None`` with ``need_dtable=False``.
    """
    be = get_backend()
    xp = be.xp
    table, kernel, recurrent_kernel, bias, h0, c0 = as_float_arrays(
        "embedding_lstm", be, table=table, kernel=kernel, recurrent_kernel=recurrent_kernel, bias=bias, h0=h0, c0=c0)
    check_rank("embedding_lstm", "table", table, 2, "[V, D]")
    V, D = table.shape
    ids = check_ids("embedding_lstm", be, "ids", ids, V, f"table has {V} rows")
    check_rank("embedding_lstm", "ids", ids, 2, "[N, T]")
    N, T = ids.shape
    if T < 1:
        raise ValueError(f"embedding_lstm: ids must have at least one time step, got shape {tuple(ids.shape)}")
    _check_weights("embedding_lstm", (N, T, D), f"ids: {tuple(ids.shape)}, table: {tuple(table.shape)}",
                   kernel, recurrent_kernel, bias, h0, c0)
    ids_seq = xp.ascontiguousarray(ids.T)  # (T, N), time-major as the kernels are
    mask = sequence_mask("embedding_lstm", be, mask, N, T)
    mask_seq = None if mask is None else xp.ascontiguousarray(mask.T)

    def forward(h0, c0):
        projected = be.gemm(table, kernel)  # (V, 4H): row v is table[v] @ kernel
        z_seq = xp.take(projected, ids_seq, axis=0)  # (T, N, 4H): x_t @ kernel for every step
        return be.lstm_recurrence(z_seq, recurrent_kernel, bias, h0, c0, mask_seq)

    def backward(dy_seq, dh, dc, h_seq, c_seq, gates_seq):
        dz_seq, drecurrent_kernel, dbias, dh0, dc0 = be.lstm_backward_recurrence(
            dy_seq, dh, dc, recurrent_kernel, h_seq, c_seq, gates_seq, mask_seq)
        G = be.embedding_backward(ids_seq, dz_seq, V)  # (V, 4H): dz summed over the positions of each id
        dkernel = be.gemm(table, G, trans_a=True)
        dtable = be.gemm(G, kernel, trans_b=True) if need_dtable else None
        return dtable, dkernel, drecurrent_kernel, dbias, dh0, dc0

    return _run("embedding_lstm", be, N, T, recurrent_kernel.shape[0], table.dtype, h0, c0, mask, forward,
                backward)
