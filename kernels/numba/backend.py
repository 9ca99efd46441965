"""The Numba CPU backend: NumPy arrays, hot kernels compiled by ``@njit``.

``NumbaOps`` is one plain class. Every method of the contract
(``scratchnet/ops/contract.py``) is here, in the contract's order, and says
where its work is done:

- a fast kernel: the method calls a function of this folder, one module per
  op family (``conv.py``, ``dense.py``, ...), which splits the work between
  the cores (``kernels/runtime/threads.py``) and multiplies through the BLAS
  that ``kernels/runtime/blas.py`` chose;
- no fast kernel: the method is the reference's own code, named here
  (``native = ReferenceOps.native``). It runs on this backend, so the calls it
  makes (``self.gemm``, ``self.lstm_recurrence``) reach the fast kernels;
- a fast kernel that takes only some inputs (integer labels, contiguous
  arrays): it returns ``NotImplemented`` for the others, and the method then
  runs the reference's code, explicitly.

Kernels compile on first call (``cache=True`` keeps them on disk between
runs). Building the backend also tells glibc to keep freed blocks for reuse
(``kernels/runtime/memory.py``): otherwise every step pays thousands of page
faults for arrays it has already had.
"""
from __future__ import annotations

import numpy

from scratchnet.ops.conv import conv2d_algorithm
from scratchnet.ops.reference import ReferenceOps
from scratchnet.ops.shapes import conv_output_size

from ..runtime.memory import keep_freed_memory
from . import conv, dense, dropout, embedding, gru, losses, lstm, normalization, pooling, special, updates
from .winograd import Winograd


class NumbaOps:
    """CPU backend: the reference's kernels, with the hot ones compiled by Numba (module docstring)."""

    name = "numba"
    xp = numpy

    #: Bytes of im2col matrix per chunk and core in the direct convolution (``conv.py``).
    chunk_bytes = conv.CHUNK_BYTES
    #: Rows per part at least in the LSTM's time loops (``lstm.py``).
    min_rows = lstm.MIN_ROWS
    #: Stride-1 5x5 convolutions can go through Winograd F(4x4, 5x5) (``winograd.py``): in float32 by
    #: default, in float64 only when asked for (``conv2d_algorithm``, in ``scratchnet/ops/conv.py``).
    winograd = Winograd()

    def __init__(self):
        keep_freed_memory()

    __repr__ = ReferenceOps.__repr__

    # --- arrays ----------------------------------------------------------------

    native = ReferenceOps.native
    _refuse_foreign = ReferenceOps._refuse_foreign

    # --- dense -----------------------------------------------------------------

    def gemm(self, A, B, trans_a=False, trans_b=False):
        return dense.gemm(A, B, trans_a, trans_b)

    def dense_forward(self, x, w, b, relu=False):
        return dense.dense_forward(x, w, b, relu)

    def dense_backward(self, dy, x, w, y, relu=False, need_dx=True):
        return dense.dense_backward(dy, x, w, y, relu, need_dx)

    # --- activations -----------------------------------------------------------

    sigmoid = ReferenceOps.sigmoid

    def erf(self, x):
        return special.erf(x)

    # --- conv2d ----------------------------------------------------------------

    def im2col(self, x, kh, kw, sh, sw, pads):
        return conv.im2col(x, kh, kw, sh, sw, pads)

    def col2im(self, cols, x_shape, kh, kw, sh, sw, pads):
        return conv.col2im(cols, x_shape, kh, kw, sh, sw, pads)

    def conv2d_forward(self, x, w, b, sh, sw, pads, relu=False):
        if conv2d_algorithm(self, x, w, sh, sw) == "winograd":
            OH, OW = conv_output_size(x.shape, 5, 5, 1, 1, pads)
            return self.winograd.forward(x, w, b, pads, OH, OW, relu)
        return conv.conv2d_forward(x, w, b, sh, sw, pads, relu, self.chunk_bytes)

    def conv2d_backward(self, dy, x, w, y, sh, sw, pads, relu=False, need_dx=True):
        if conv2d_algorithm(self, x, w, sh, sw) == "winograd":
            return self.winograd.backward(dy, x, w, y, pads, relu, need_dx)
        return conv.conv2d_backward(dy, x, w, y, sh, sw, pads, relu, need_dx, self.chunk_bytes)

    # --- max pooling -----------------------------------------------------------

    def max_pool2d_forward(self, x, kh, kw, sh, sw, pads):
        return pooling.max_pool2d_forward(x, kh, kw, sh, sw, pads)

    def max_pool2d_backward(self, dy, argmax, x_shape):
        return pooling.max_pool2d_backward(dy, argmax, x_shape)

    # --- average pooling -------------------------------------------------------

    def avg_pool2d_forward(self, x, kh, kw, sh, sw, pads):
        return pooling.avg_pool2d_forward(x, kh, kw, sh, sw, pads)

    def avg_pool2d_backward(self, dy, x_shape, kh, kw, sh, sw, pads):
        return pooling.avg_pool2d_backward(dy, x_shape, kh, kw, sh, sw, pads)

    # --- LSTM ------------------------------------------------------------------
    # The time loops are Numba's (lstm.py); lstm_forward and lstm_backward are the reference's,
    # whose input GEMMs go through self.gemm and whose loops through the two recurrences here.

    def swap_batch_time(self, a):
        out = lstm.swap_batch_time(a)
        return ReferenceOps.swap_batch_time(self, a) if out is NotImplemented else out

    lstm_gates_forward = ReferenceOps.lstm_gates_forward
    lstm_gates_backward = ReferenceOps.lstm_gates_backward
    lstm_forward = ReferenceOps.lstm_forward

    def lstm_recurrence(self, z_seq, recurrent_kernel, bias, h0, c0, mask_seq=None):
        out = lstm.lstm_recurrence(z_seq, recurrent_kernel, bias, h0, c0, self.min_rows, mask_seq)
        if out is NotImplemented:
            return ReferenceOps.lstm_recurrence(self, z_seq, recurrent_kernel, bias, h0, c0, mask_seq)
        return out

    def lstm_backward_recurrence(self, dy_seq, dh, dc, recurrent_kernel, h_seq, c_seq, gates_seq, mask_seq=None):
        out = lstm.lstm_backward_recurrence(dy_seq, dh, dc, recurrent_kernel, h_seq, c_seq, gates_seq, self.min_rows,
                                            mask_seq)
        if out is NotImplemented:
            return ReferenceOps.lstm_backward_recurrence(self, dy_seq, dh, dc, recurrent_kernel, h_seq, c_seq,
                                                         gates_seq, mask_seq)
        return out

    lstm_backward = ReferenceOps.lstm_backward

    # --- GRU and simple RNN ----------------------------------------------------
    # The time loops are Numba's (gru.py); the ops run the input GEMMs around them, through self.gemm.

    def gru_recurrence(self, a_seq, recurrent_kernel, bias, h0, mask_seq=None):
        out = gru.gru_recurrence(a_seq, recurrent_kernel, bias, h0, self.min_rows, mask_seq)
        if out is NotImplemented:
            return ReferenceOps.gru_recurrence(self, a_seq, recurrent_kernel, bias, h0, mask_seq)
        return out

    def gru_backward_recurrence(self, dy_seq, dh, recurrent_kernel, h_seq, gates_seq, uh_seq, mask_seq=None):
        out = gru.gru_backward_recurrence(dy_seq, dh, recurrent_kernel, h_seq, gates_seq, uh_seq, self.min_rows,
                                          mask_seq)
        if out is NotImplemented:
            return ReferenceOps.gru_backward_recurrence(self, dy_seq, dh, recurrent_kernel, h_seq, gates_seq, uh_seq,
                                                        mask_seq)
        return out

    def simple_rnn_recurrence(self, a_seq, recurrent_kernel, bias, h0, mask_seq=None):
        out = gru.simple_rnn_recurrence(a_seq, recurrent_kernel, bias, h0, self.min_rows, mask_seq)
        if out is NotImplemented:
            return ReferenceOps.simple_rnn_recurrence(self, a_seq, recurrent_kernel, bias, h0, mask_seq)
        return out

    def simple_rnn_backward_recurrence(self, dy_seq, dh, recurrent_kernel, h_seq, mask_seq=None):
        out = gru.simple_rnn_backward_recurrence(dy_seq, dh, recurrent_kernel, h_seq, self.min_rows, mask_seq)
        if out is NotImplemented:
            return ReferenceOps.simple_rnn_backward_recurrence(self, dy_seq, dh, recurrent_kernel, h_seq, mask_seq)
        return out

    # --- embedding -------------------------------------------------------------

    def embedding_backward(self, ids, dy, vocab_size):
        return embedding.embedding_backward(ids, dy, vocab_size)

    # --- dropout ---------------------------------------------------------------

    def dropout_mask(self, shape, rate, seed, dtype):
        return dropout.dropout_mask(shape, rate, seed, dtype)

    def dropout_forward(self, x, rate, seed):
        return dropout.dropout_forward(x, rate, seed)

    # --- softmax cross-entropy (fast for integer labels) --------------------------

    def softmax_cross_entropy_forward(self, logits, labels):
        out = losses.softmax_cross_entropy_forward(logits, labels)
        return ReferenceOps.softmax_cross_entropy_forward(self, logits, labels) if out is NotImplemented else out

    def softmax_cross_entropy_backward(self, probs, labels, scale):
        out = losses.softmax_cross_entropy_backward(probs, labels, scale)
        return ReferenceOps.softmax_cross_entropy_backward(self, probs, labels, scale) if out is NotImplemented else out

    # --- layer and batch normalization ---------------------------------------------

    def normalization_forward(self, x, gamma, beta, epsilon, per_channel):
        return normalization.normalization_forward(x, gamma, beta, epsilon, per_channel)

    def normalization_backward(self, dy, x, mean, var, gamma, beta, epsilon, per_channel):
        return normalization.normalization_backward(dy, x, mean, var, gamma, beta, epsilon, per_channel)

    # --- parameter updates (fast for contiguous arrays) ---------------------------

    def scaled_add(self, y, x, alpha):
        if updates.scaled_add(y, x, alpha) is NotImplemented:
            ReferenceOps.scaled_add(self, y, x, alpha)

    def moving_average_update(self, shadow, value, decay):
        if updates.moving_average_update(shadow, value, decay) is NotImplemented:
            ReferenceOps.moving_average_update(self, shadow, value, decay)

    def sum_of_squares(self, x):
        s = updates.sum_of_squares(x)
        return ReferenceOps.sum_of_squares(self, x) if s is NotImplemented else s

    sum_of_squares_on_device = ReferenceOps.sum_of_squares_on_device

    def sgd_l2_ema_update(self, w, g, lr, l2, shadow, decay):
        s = updates.sgd_l2_ema_update(w, g, lr, l2, shadow, decay)
        return ReferenceOps.sgd_l2_ema_update(self, w, g, lr, l2, shadow, decay) if s is NotImplemented else s

    sgd_l2_ema_apply = ReferenceOps.sgd_l2_ema_apply
    sgd_momentum_update = ReferenceOps.sgd_momentum_update
    momentum_update = ReferenceOps.momentum_update

    def adam_update(self, w, g, m, v, alpha, beta_1, beta_2, epsilon):
        if updates.adam_update(w, g, m, v, alpha, beta_1, beta_2, epsilon) is NotImplemented:
            ReferenceOps.adam_update(self, w, g, m, v, alpha, beta_1, beta_2, epsilon)
