"""The backend contract: every kernel a backend provides, with its shapes, in one class.

The ops (``scratchnet/ops/<family>.py``) check their inputs and hold the math of forward and backward; whatever
is worth making fast they hand to the current backend through the methods listed here. Three backends implement
:class:`Ops`:

- ``ReferenceOps`` (``scratchnet/ops/reference.py``): every kernel in plain NumPy, written to be read; the
  oracle of the tests. Its code sits beside each op, one class per family (``conv.py``'s ``ConvReference``).
- ``NumbaOps`` (``kernels/numba/backend.py``): the hot kernels compiled by Numba, the others the reference's
  code, named method by method.
- ``CupyOps`` (``kernels/cuda/backend.py``): the hot kernels in CUDA C, the others the reference's code run on
  CuPy arrays, named the same way.

The two fast backends are plain classes with every method listed here: a fast kernel has exactly the signature
given here, a method without one is the reference's function itself (``sigmoid = ReferenceOps.sigmoid``), and no
public method is added that is not listed here (``tests/test_backend.py`` checks all three). Kernels take and
return arrays of the backend's own type (``xp.ndarray``), already checked by the op: they do not validate. Every
array a kernel returns is new, never an input, a view of one or a buffer it keeps: the layers hold a backward's
weight gradients as ``.grad`` without a copy (``Parameter.accumulate(g, fresh=True)``). One input is handed over
instead: the ``z_seq`` of :meth:`Ops.lstm_recurrence`, which the kernel may overwrite and return as
``gates_seq`` (the op made it and holds no other reference).

Notation::

    N          batch size (of a dense, conv or LSTM input)
    M          rows of logits (all leading positions of the op, N or N*T), or of a normalization's x
    H, W, C    input height, width, channels (NHWC images)
    kh, kw     window height and width;  sh, sw: strides
    OH, OW     output height and width;  O: output channels
    pads       (top, bottom, left, right) zero padding around the input
    T, D       time steps and input features of a sequence;  H: LSTM units
    V, D       embedding rows (vocabulary size) and width
    K          classes of the logits

In the LSTM kernels ``H`` is the number of units (it is the image height only in the conv and pooling kernels),
and ``*_seq`` names a time-major stack: ``x_seq[t]`` is the input of step ``t``.
"""
from __future__ import annotations

from . import contract_recurrent as recurrent


#: Fused kernels a backend may offer beyond the contract, asked for by name by an optimizer (``fused_update.py``:
#: SGD's L2 + step + moving average in one pass). A backend without them is complete: the plain steps run instead.
OPTIONAL_KERNELS = ("sgd_l2_ema_update", "sgd_l2_ema_apply")


class Ops:
    """What every backend provides. Read top to bottom: arrays, then one block per op family.

    Every method here raises ``NotImplementedError``; ``ReferenceOps`` implements them all.
    """

    name: str  # "numpy", "numba" or "cupy"
    xp = None  # the array module: numpy or cupy

    # --- arrays ----------------------------------------------------------------

    def native(self, op, name, a):
        """``a`` as this backend's array type, for argument ``name`` of op ``op``.

        Lists and Python scalars are converted (to float32 for Python floats, as in TensorFlow). An array of
        another backend is an error, never a silent copy (:meth:`_refuse_foreign`).
        """
        raise NotImplementedError

    def _refuse_foreign(self, op, name, a):
        """Raise ``ValueError`` when ``a`` is an array of another backend; the hook of :meth:`native`."""
        raise NotImplementedError

    # --- dense -----------------------------------------------------------------

    def gemm(self, A, B, trans_a=False, trans_b=False):
        """Matrix product ``op(A) @ op(B)``, where ``op`` transposes when asked.

        A : (P, Q), or (Q, P) when ``trans_a``
        B : (Q, R), or (R, Q) when ``trans_b``
        returns : (P, R), ``out[p, r] = sum_q op(A)[p, q] * op(B)[q, r]``
        """
        raise NotImplementedError

    def dense_forward(self, x, w, b, relu=False):
        """``y = x @ w + b``, then ``max(y, 0)`` when ``relu`` (the fused epilogue).

        x : (N, C);  w : (C, K);  b : (K,) or None
        returns y : (N, K)
        """
        raise NotImplementedError

    def dense_backward(self, dy, x, w, y, relu=False, need_dx=True):
        """Gradients of :meth:`dense_forward`.

        dy : (N, K);  x, w : as for the forward;  y : (N, K), the forward's output
            (read only when ``relu``: ``g = dy * (y > 0)``, else ``g = dy``)
        need_dx : False when nobody wants ``dx`` (the model's input): it is not computed
        returns (dx, dw, db) : (N, C) or None, (C, K), (K,) with
            ``dx = g @ w.T``, ``dw = x.T @ g``, ``db = sum_n g[n]``
        """
        raise NotImplementedError

    # --- activations -----------------------------------------------------------

    def sigmoid(self, x):
        """Elementwise ``1 / (1 + exp(-x))``, without overflow for large ``|x|``.

        x : any shape;  returns : x's shape
        """
        raise NotImplementedError

    def erf(self, x):
        """Elementwise error function ``erf(x) = 2/sqrt(pi) int_0^x exp(-t^2) dt``, in ``x``'s dtype (GELU's CDF).

        x : any shape;  returns : x's shape
        """
        raise NotImplementedError

    # --- conv2d ----------------------------------------------------------------

    def im2col(self, x, kh, kw, sh, sw, pads):
        """Unroll every (kh, kw) window of the padded ``x`` into one row.

        x : (N, H, W, C)
        returns cols : (N*OH*OW, kh*kw*C),
            ``cols[(n, oh, ow), (i, j, c)] = xpad[n, oh*sh + i, ow*sw + j, c]``,
            so ``cols @ w.reshape(kh*kw*C, O)`` is the convolution with an HWIO ``w``.
        """
        raise NotImplementedError

    def col2im(self, cols, x_shape, kh, kw, sh, sw, pads):
        """The adjoint (transpose) of :meth:`im2col`: add every row back onto its window.

        cols : (N*OH*OW, kh*kw*C);  x_shape : (N, H, W, C), the unpadded input's
        returns dx : (N, H, W, C),
            ``dx[n, ih, iw, c] = sum of cols[(n, oh, ow), (i, j, c)] over oh*sh + i - top = ih,
            ow*sw + j - left = iw``; what falls on the padding is dropped.
        Adjoint: ``sum(im2col(x) * d) == sum(x * col2im(d))`` for every ``x``, ``d``.
        """
        raise NotImplementedError

    def conv2d_forward(self, x, w, b, sh, sw, pads, relu=False):
        """2-D cross-correlation plus bias, as ``tf.nn.conv2d``; then ``max(y, 0)`` when ``relu``.

        x : (N, H, W, C);  w : (kh, kw, C, O), HWIO;  b : (O,) or None
        returns y : (N, OH, OW, O),
            ``y[n, oh, ow, o] = sum_{i, j, c} xpad[n, oh*sh + i, ow*sw + j, c] * w[i, j, c, o] + b[o]``
        """
        raise NotImplementedError

    def conv2d_backward(self, dy, x, w, y, sh, sw, pads, relu=False, need_dx=True):
        """Gradients of :meth:`conv2d_forward` with respect to ``x``, ``w`` and the bias.

        dy : (N, OH, OW, O);  x, w, sh, sw, pads, relu : as for the forward
        y : (N, OH, OW, O), the forward's output (read only when ``relu``:
            ``g = dy * (y > 0)``, else ``g = dy``)
        need_dx : False when nobody wants ``dx`` (the model's input): it is not computed
        returns (dx, dw, db) : (N, H, W, C) or None, (kh, kw, C, O), (O,);
            ``db[o] = sum_{n, oh, ow} g[n, oh, ow, o]``
        """
        raise NotImplementedError

    # --- max pooling -----------------------------------------------------------

    def max_pool2d_forward(self, x, kh, kw, sh, sw, pads):
        """Max over each (kh, kw) window, and where it was.

        x : (N, H, W, C); padded positions belong to the windows but never win.
        returns (y, argmax) : (N, OH, OW, C) each; ``argmax`` is int64, the flat
            index ``ih*W + iw`` in the unpadded input of the FIRST maximum in
            row-major window order (TensorFlow's tie rule).
        """
        raise NotImplementedError

    def max_pool2d_backward(self, dy, argmax, x_shape):
        """Send each output's gradient to its window's maximum.

        dy, argmax : (N, OH, OW, C);  x_shape : (N, H, W, C)
        returns dx : (N, H, W, C), ``dx[n, ih, iw, c] = sum of dy[n, oh, ow, c]
            over the windows whose argmax is ih*W + iw``
        """
        raise NotImplementedError

    # --- average pooling -------------------------------------------------------

    def avg_pool2d_forward(self, x, kh, kw, sh, sw, pads):
        """Mean over each (kh, kw) window of the cells inside the input.

        x : (N, H, W, C); padded positions belong to the windows but are not counted.
        returns y : (N, OH, OW, C), ``y[n, oh, ow, c] = sum of the window's real cells / count[oh, ow]``,
            ``count`` the number of them (``scratchnet.ops.pooling.window_counts``).
        """
        raise NotImplementedError

    def avg_pool2d_backward(self, dy, x_shape, kh, kw, sh, sw, pads):
        """Spread each output's gradient evenly over its window's real cells.

        dy : (N, OH, OW, C);  x_shape : (N, H, W, C);  kh, kw, sh, sw, pads : as for the forward
        returns dx : (N, H, W, C), ``dx[n, ih, iw, c] = sum of dy[n, oh, ow, c] / count[oh, ow]
            over the windows that hold (ih, iw)``
        """
        raise NotImplementedError

    # --- recurrent layers: LSTM, GRU, simple RNN (their shapes in ``contract_recurrent.py``) ---

    swap_batch_time = recurrent.swap_batch_time
    lstm_gates_forward = recurrent.lstm_gates_forward
    lstm_gates_backward = recurrent.lstm_gates_backward
    lstm_forward = recurrent.lstm_forward
    lstm_recurrence = recurrent.lstm_recurrence
    lstm_backward_recurrence = recurrent.lstm_backward_recurrence
    lstm_backward = recurrent.lstm_backward
    gru_recurrence = recurrent.gru_recurrence
    gru_backward_recurrence = recurrent.gru_backward_recurrence
    simple_rnn_recurrence = recurrent.simple_rnn_recurrence
    simple_rnn_backward_recurrence = recurrent.simple_rnn_backward_recurrence

    # --- embedding -------------------------------------------------------------

    def embedding_backward(self, ids, dy, vocab_size):
        """Scatter-add: the gradient of the table of ``y = table[ids]``.

        ids : integers of any shape;  dy : ids.shape + (D,);  vocab_size : V
        returns dtable : (V, D), ``dtable[v] = sum of dy[p] over positions p with ids[p] == v``
            (repeated ids add up; rows never picked are zero).
        """
        raise NotImplementedError

    # --- dropout ---------------------------------------------------------------

    def dropout_mask(self, shape, rate, seed, dtype):
        """A random mask: 0 with probability ``rate``, ``1 / (1 - rate)`` otherwise.

        shape : tuple of int;  rate : float in [0, 1);  dtype : float32 or float64
        seed : int, the same mask each time, or None to draw from ``scratchnet.random``
        returns mask : ``shape`` and ``dtype``
        """
        raise NotImplementedError

    def dropout_forward(self, x, rate, seed):
        """``y = x * mask`` with ``mask`` drawn as :meth:`dropout_mask` draws it (the same numbers).

        x : any shape;  rate, seed : as for :meth:`dropout_mask`
        returns (y, mask) : x's shape and dtype each
        """
        raise NotImplementedError

    # --- softmax cross-entropy -------------------------------------------------

    def softmax_cross_entropy_forward(self, logits, labels):
        """Per-row cross-entropy of ``softmax(logits)`` against the labels, and the probabilities.

        logits : (M, K);  labels : int (M,) class ids, or float (M, K) distributions
        returns (losses, probs) : (M,), (M, K),
            ``losses[m] = -sum_k t[m, k] * log softmax(logits[m])_k`` with ``t`` the
            one-hot labels or the distribution; ``probs = softmax(logits)``.
        """
        raise NotImplementedError

    def softmax_cross_entropy_backward(self, probs, labels, scale):
        """Gradient of ``scale * sum_m losses[m]`` with respect to the logits.

        probs : (M, K), from the forward;  labels : as for the forward;  scale : float
        returns dlogits : (M, K), ``scale * (probs - t)``
        """
        raise NotImplementedError

    # --- layer and batch normalization ------------------------------------------

    def normalization_forward(self, x, gamma, beta, epsilon, per_channel):
        """``y = (x - mean) / sqrt(var + epsilon) * gamma + beta`` over each set (``scratchnet/ops/normalization.py``).

        x : (M, C);  gamma, beta : (C,) or None;  epsilon : float > 0;  per_channel : sets are columns, else rows
        returns (y, mean, var) : (M, C), (C,) or (M,) each: var biased and two-pass (the mean of ``(x - mean)^2``)
        """
        raise NotImplementedError

    def normalization_backward(self, dy, x, mean, var, gamma, beta, epsilon, per_channel):
        """Gradients of :meth:`normalization_forward`: ``dx = s (g - mean(g) - xhat mean(g xhat))`` over each set,
        ``g = dy gamma``, ``s = 1 / sqrt(var + epsilon)``, ``xhat = (x - mean) s`` (made again from ``x``).

        dy, x : (M, C);  mean, var : the forward's;  the others as for it
        returns (dx, dgamma, dbeta) : (M, C), (C,) or None (no gamma), (C,) or None (no beta)
        """
        raise NotImplementedError

    # --- parameter updates (``scratchnet/ops/updates.py``) ----------------------
    # In place, on arrays of one shape and dtype; each returns None (but the two sum_of_squares kernels). A fused
    # update is an optimizer's choice (scratchnet/fused_update.py asks the backend for SGD's), not the contract's.

    def scaled_add(self, y, x, alpha):
        """``y += alpha * x``: plain SGD's step (``alpha = -lr``), an L2 penalty's gradient.

        y, x : the same shape;  alpha : float
        """
        raise NotImplementedError

    def moving_average_update(self, shadow, value, decay):
        """``shadow -= (1 - decay) * (shadow - value)``: one step of an exponential moving average.

        shadow, value : the same shape;  decay : float in [0, 1]
        """
        raise NotImplementedError

    def sum_of_squares(self, x):
        """``sum(x**2)`` as a Python float: an L2 penalty without its temporary ``x * x``.

        x : any shape;  returns : float
        """
        raise NotImplementedError

    def sum_of_squares_on_device(self, x):
        """:meth:`sum_of_squares` left where it was computed: a 0-d float64 array of the backend's module
        (a NumPy scalar on the CPU backends). On a GPU nothing waits for the device; a training step reads
        its sums with the loss and the checks in its one transfer (``scratchnet.model.step.train_step``).

        x : any shape;  returns : a 0-d float64 array
        """
        raise NotImplementedError

    def sgd_momentum_update(self, w, g, m, lr, momentum, nesterov):
        """Keras's SGD with momentum: ``m = momentum m - lr g``, then ``w += m``, or
        ``w += momentum m - lr g`` when ``nesterov``.

        w, g, m : the same shape;  lr, momentum : float;  nesterov : bool
        """
        raise NotImplementedError

    def momentum_update(self, w, g, a, lr, momentum, nesterov):
        """TensorFlow 1's momentum: ``a = momentum a + g``, then ``w -= lr a``, or
        ``w -= lr (g + momentum a)`` when ``nesterov``.

        w, g, a : the same shape;  lr, momentum : float;  nesterov : bool
        """
        raise NotImplementedError

    def adam_update(self, w, g, m, v, alpha, beta_1, beta_2, epsilon):
        """One Adam step: ``m += (1 - beta_1) (g - m)``, ``v += (1 - beta_2) (g^2 - v)``,
        ``w -= alpha m / (sqrt(v) + epsilon)`` (``alpha`` holds the bias correction).

        w, g, m, v : the same shape;  alpha, beta_1, beta_2, epsilon : float
        """
        raise NotImplementedError
