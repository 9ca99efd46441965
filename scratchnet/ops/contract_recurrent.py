"""The backend contract's recurrent kernels (LSTM, GRU, simple RNN), with their shapes.

Part of :class:`scratchnet.ops.contract.Ops`, which lists each of these functions as a method of its own
(``lstm_forward = recurrent.lstm_forward``): kept here so that the contract's module stays short. Everything the
contract's docstring says holds for them; ``*_seq`` names a time-major stack (``x_seq[t]`` is step t's input)
and ``H`` the number of units.
"""
from __future__ import annotations


def swap_batch_time(self, a):
    """``a`` (N, T, F) as a new C-contiguous (T, N, F) array, ``out[t, n] = a[n, t]``; its own inverse.

    The LSTM's layer is batch-major, as Keras's; its kernels are time-major.
    """
    raise NotImplementedError

def lstm_gates_forward(self, z, c_prev):
    """Steps 2-4 of one LSTM step (``scratchnet/ops/lstm.py``): gates, cell, output.

    z : (N, 4H), pre-activations in Keras gate order i, f, c (candidate g), o;  c_prev : (N, H)
    returns (h, c, gates) : (N, H), (N, H), (N, 4H) with
        ``gates = [sigmoid(z_i), sigmoid(z_f), tanh(z_g), sigmoid(z_o)]``,
        ``c = f*c_prev + i*g`` and ``h = o*tanh(c)``.
    """
    raise NotImplementedError

def lstm_gates_backward(self, dh, dc, c_prev, c, gates):
    """Steps 4b, 3b, 2b: the backward of :meth:`lstm_gates_forward`.

    dh : (N, H), the total gradient of h_t;  dc : (N, H), the gradient of c_t from step t+1
    c_prev, c : (N, H);  gates : (N, 4H), from the forward
    returns (dz, dc_prev) : (N, 4H), (N, H)
    """
    raise NotImplementedError

def lstm_forward(self, x_seq, kernel, recurrent_kernel, bias, h0, c0, mask_seq=None):
    """Steps 1-4 over a whole time-major sequence.

    x_seq : (T, N, D);  kernel : (D, 4H);  recurrent_kernel : (H, 4H);  bias : (4H,);  h0, c0 : (N, H)
    mask_seq : (T, N) boolean or None; a False row keeps its state: ``h_seq[t + 1] = h_seq[t]``, same for c
    returns (h_seq, c_seq, gates_seq) : (T+1, N, H), (T+1, N, H), (T, N, 4H);
        ``h_seq[0] = h0`` and ``h_seq[t + 1] = h_t`` (likewise ``c_seq``);
        ``gates_seq[t]`` is step t's ``gates``, kept for the backward.
    """
    raise NotImplementedError

def lstm_recurrence(self, z_seq, recurrent_kernel, bias, h0, c0, mask_seq=None):
    """Steps 1-4 over a time-major sequence whose input projection is already made.

    z_seq : (T, N, 4H), ``x_t @ kernel`` for every step (the embedded LSTM gathers it from a projected
        table). It is handed over: the kernel may overwrite it and return it as ``gates_seq`` (the one
        exception to "every returned array is new", since nobody else holds it).
    recurrent_kernel, bias, h0, c0, mask_seq : as for :meth:`lstm_forward`
    returns (h_seq, c_seq, gates_seq) : as :meth:`lstm_forward`, which is
        ``lstm_recurrence(x_seq @ kernel, ...)``.
    """
    raise NotImplementedError

def lstm_backward_recurrence(self, dy_seq, dh, dc, recurrent_kernel, h_seq, c_seq, gates_seq, mask_seq=None):
    """Backpropagation through time down to the pre-activations: :meth:`lstm_backward` without its input GEMMs.

    Arguments as for :meth:`lstm_backward`.
    returns (dz_seq, drecurrent_kernel, dbias, dh0, dc0) : (T, N, 4H), (H, 4H), (4H,), (N, H), (N, H);
        ``dz_seq[t]`` is the gradient of step t's pre-activations z_t, from which
        ``dkernel = sum_t x_t.T @ dz_t`` and ``dx_t = dz_t @ kernel.T``.
    """
    raise NotImplementedError

def lstm_backward(self, dy_seq, dh, dc, x_seq, kernel, recurrent_kernel, h_seq, c_seq, gates_seq,
                  need_dx=True, mask_seq=None):
    """Backpropagation through time: the backward of :meth:`lstm_forward`, step T-1 down to 0.

    dy_seq : (T, N, H), the gradient of every output h_t, or None when only the final state is used
    dh, dc : (N, H), the gradients of the final h_{T-1}, c_{T-1}
    x_seq, kernel, recurrent_kernel : as for the forward;  h_seq, c_seq, gates_seq : what it returned
    need_dx : False when nobody wants ``dx_seq`` (the model's input): it is not computed
    mask_seq : the forward's; a masked row of step t has ``dz_t = 0`` and hands dh, dc to step t-1 unchanged
    returns (dx_seq, dkernel, drecurrent_kernel, dbias, dh0, dc0) :
        (T, N, D) or None, (D, 4H), (H, 4H), (4H,), (N, H), (N, H)
    """
    raise NotImplementedError


def gru_recurrence(self, a_seq, recurrent_kernel, bias, h0, mask_seq=None):
    """Steps 1-3 of the GRU (``scratchnet/ops/gru.py``, Keras's ``reset_after=True``) over a time-major
    sequence whose input projection is already made.

    a_seq : (T, N, 3H), ``x_t @ kernel`` for every step, gate blocks z, r, h (the bias not added). Handed
        over as :func:`lstm_recurrence`'s ``z_seq`` is: the kernel may overwrite it and return it as ``gates_seq``.
    recurrent_kernel : (H, 3H);  bias : (2, 3H), row 0 the input bias, row 1 the recurrent one;  h0 : (N, H)
    mask_seq : (T, N) boolean or None; a False row keeps its state: ``h_seq[t + 1] = h_seq[t]``
    returns (h_seq, gates_seq, uh_seq) : (T+1, N, H), (T, N, 3H), (T, N, H);
        ``h_seq[0] = h0`` and ``h_seq[t + 1] = h_t``; ``gates_seq[t] = [z_t, r_t, g_t]`` and
        ``uh_seq[t] = h_{t-1} @ recurrent_kernel[:, 2H:] + bias[1, 2H:]`` (u_h, the reset gate's operand),
        kept for the backward.
    """
    raise NotImplementedError


def gru_backward_recurrence(self, dy_seq, dh, recurrent_kernel, h_seq, gates_seq, uh_seq, mask_seq=None):
    """Backpropagation through time of :func:`gru_recurrence`, step T-1 down to 0 (steps 3b, 2b, 1b).

    dy_seq : (T, N, H), the gradient of every output h_t, or None;  dh : (N, H), that of the final state
    recurrent_kernel, mask_seq : the forward's;  h_seq, gates_seq, uh_seq : what it returned
    A masked row of step t has ``da_t = du_t = 0`` and hands ``dh`` to step t-1 unchanged.
    returns (da_seq, drecurrent_kernel, dbias, dh0) : (T, N, 3H), (H, 3H), (2, 3H), (N, H);
        ``da_seq[t]`` is the gradient of step t's input part ``a_t = x_t @ kernel + bias[0]``, from which
        ``dkernel = sum_t x_t.T @ da_t`` and ``dx_t = da_t @ kernel.T``.
    """
    raise NotImplementedError


def simple_rnn_recurrence(self, a_seq, recurrent_kernel, bias, h0, mask_seq=None):
    """Keras's ``SimpleRNN`` (tanh, ``scratchnet/ops/gru.py``) over a time-major sequence whose input projection
    is already made: ``h_t = tanh(a_t + bias + h_{t-1} @ recurrent_kernel)``.

    a_seq : (T, N, H), ``x_t @ kernel`` for every step (read only);  recurrent_kernel : (H, H);  bias : (H,)
    h0 : (N, H);  mask_seq : (T, N) boolean or None; a False row keeps its state: ``h_seq[t + 1] = h_seq[t]``
    returns h_seq : (T+1, N, H), ``h_seq[0] = h0`` and ``h_seq[t + 1] = h_t``
    """
    raise NotImplementedError


def simple_rnn_backward_recurrence(self, dy_seq, dh, recurrent_kernel, h_seq, mask_seq=None):
    """Backpropagation through time of :func:`simple_rnn_recurrence`, step T-1 down to 0.

    dy_seq : (T, N, H) or None;  dh : (N, H), the final state's gradient;  h_seq : what the forward returned
    A masked row of step t has ``dp_t = 0`` and hands ``dh`` to step t-1 unchanged.
    returns (dp_seq, drecurrent_kernel, dbias, dh0) : (T, N, H), (H, H), (H,), (N, H); ``dp_seq[t]`` is the
        gradient of step t's pre-activation, from which ``dkernel = sum_t x_t.T @ dp_t`` and ``dx_t = dp_t @ kernel.T``.
    """
    raise NotImplementedError
