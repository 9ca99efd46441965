"""The CuPy GPU backend: CuPy arrays, cuBLAS GEMMs and the CUDA C kernels.

``CupyOps`` is one plain class with every method of the contract
(``scratchnet/ops/contract.py``). The hot ones launch the kernels in
``kernels/cuda/*.cu``: each allocates its outputs, makes its inputs
C-contiguous (the kernels index flat memory) and launches one kernel; the
``.cu`` files compile on first use (``kernels/cuda/compiler.py``). The others
are the reference's own code, named here (``conv2d_forward =
ReferenceOps.conv2d_forward``): it is written against ``self.xp``, so it runs
on CuPy as it is, and its calls (``self.im2col``, ``self.gemm``) reach the
kernels here. The in-place parameter updates of the optimizers
(``scratchnet/ops/updates.py``) run as one kernel each (``kernels/cuda/updates.cu``).

This is the only module that imports CuPy, and nothing imports it until the
``cupy`` backend is selected.
"""
from __future__ import annotations

import os

import cupy
import numpy

from scratchnet import random as _random
from scratchnet.ops.shapes import conv_output_size
from scratchnet.ops.reference import ReferenceOps

from . import compiler as cuda

# Threads per block of the elementwise kernels, and a cap on the grid: the
# kernels loop grid-stride, so a capped grid still covers any size.
BLOCK = 256
MAX_GRID = 1 << 16


def _grid(n):
    return (min(-(-n // BLOCK), MAX_GRID),)


# The most threads a block may have on any CUDA GPU.
MAX_BLOCK = 1024


def _ints(*values):
    # The kernels take sizes as 64-bit ``index_t``; a Python int would be
    # passed as whatever CuPy guesses, so the type is made explicit.
    return tuple(numpy.int64(v) for v in values)


class CupyOps:
    """GPU backend: the reference kernels on CuPy, the hot ones in CUDA C."""

    name = "cupy"
    xp = cupy

    #: The scatter-adds of the embedding's and max pooling's backward (several dy entries to one
    #: input) sort the positions first and sum each target in position order: the same bits on
    #: every run, so a resumed training run equals an uninterrupted one on the GPU too. Float
    #: atomics are faster but add in the order the threads arrive; ``SCRATCHNET_CUPY_ATOMIC_SCATTER=1``
    #: (or setting this to True) asks for them.
    atomic_scatter = os.environ.get("SCRATCHNET_CUPY_ATOMIC_SCATTER", "") not in ("", "0")

    __repr__ = ReferenceOps.__repr__
    native = ReferenceOps.native  # (xp.asarray, and _refuse_foreign below)

    def _refuse_foreign(self, op, name, a):
        """A NumPy array is an error here, never a silent copy.

        A host array reaching a GPU op is almost always a forgotten transfer,
        and copying it quietly would hide a host-device copy per step.
        """
        if isinstance(a, numpy.ndarray):
            raise ValueError(
                f"{op}: {name} is a NumPy array {tuple(a.shape)} but the backend is 'cupy'; "
                f"move it to the GPU with cupy.asarray({name}) first"
            )

    def _block_limit(self, source, kernel):
        """The most threads per block ``kernel`` can take.

        ``softmax_cross_entropy_forward`` reduces in a shared buffer of
        ``SOFTMAX_CE_MAX_THREADS`` entries, one per thread, fixed at compile time: a
        wider block would write past it. The number is read from
        ``losses.cu`` itself, so the launcher and the kernel cannot disagree;
        a buffer sized at launch (``extern __shared__``) has no such bound.
        """
        if (source, kernel) == ("losses", "softmax_cross_entropy_forward") and not cuda.uses_dynamic_shared_memory("losses"):
            limit = cuda.source_define("losses", "SOFTMAX_CE_MAX_THREADS")
            if limit is None:
                raise RuntimeError("kernels/cuda/losses.cu: no SOFTMAX_CE_MAX_THREADS and no extern __shared__ buffer; "
                                   "the launcher cannot tell how wide a block may be")
            return limit
        return MAX_BLOCK

    def _launch(self, source, kernel, dtype, grid, block, args, shared_mem=0):
        """Run ``kernel`` of ``<source>.cu`` compiled for ``dtype``, after checking the block against its bound."""
        limit = self._block_limit(source, kernel)
        if block[0] > limit:
            raise ValueError(f"{source}.cu {kernel}: a block of {block[0]} threads, but the kernel takes at most "
                             f"{limit} (its shared buffer's length)")
        cuda.function(source, kernel, dtype)(grid, block, args, shared_mem=shared_mem)

    def _elementwise(self, source, kernel, dtype, n, args):
        """Launch a grid-stride kernel over ``n`` items (nothing when ``n`` is 0)."""
        if n > 0:
            self._launch(source, kernel, dtype, _grid(n), (BLOCK,), args)

    # --- dense -------------------------------------------------------------

    def gemm(self, A, B, trans_a=False, trans_b=False):
        """``op(A) @ op(B)`` as one cuBLAS GEMM.

        ``A.T`` is a view; cuBLAS takes it as a transpose flag, so nothing is copied.
        """
        return cupy.matmul(A.T if trans_a else A, B.T if trans_b else B)

    # The reference's code on CuPy: its GEMMs are cuBLAS's (gemm above).
    dense_forward = ReferenceOps.dense_forward
    dense_backward = ReferenceOps.dense_backward
    sigmoid = ReferenceOps.sigmoid

    def erf(self, x):
        """``erf(x)`` elementwise on the device (``activations.cu``): the reference's is a host loop."""
        x = cupy.ascontiguousarray(x)
        y = cupy.empty_like(x)
        self._elementwise("activations", "erf_kernel", x.dtype, x.size, (x, y, numpy.int64(x.size)))
        return y

    # --- conv (conv.cu) ----------------------------------------------------

    def im2col(self, x, kh, kw, sh, sw, pads):
        top, _, left, _ = pads
        N, H, W, C = x.shape
        OH, OW = conv_output_size(x.shape, kh, kw, sh, sw, pads)
        x = cupy.ascontiguousarray(x)
        cols = cupy.empty((N * OH * OW, kh * kw * C), dtype=x.dtype)
        sizes = _ints(N, H, W, C, kh, kw, sh, sw, top, left, OH, OW)
        self._elementwise("conv", "im2col", x.dtype, cols.size, (x, cols, *sizes))
        return cols

    def col2im(self, cols, x_shape, kh, kw, sh, sw, pads):
        top, _, left, _ = pads
        N, H, W, C = x_shape
        OH, OW = conv_output_size(x_shape, kh, kw, sh, sw, pads)
        cols = cupy.ascontiguousarray(cols)
        dx = cupy.empty((N, H, W, C), dtype=cols.dtype)
        sizes = _ints(N, H, W, C, kh, kw, sh, sw, top, left, OH, OW)
        self._elementwise("conv", "col2im", cols.dtype, dx.size, (cols, dx, *sizes))
        return dx

    # The reference's im2col + GEMM, through im2col, col2im and gemm here.
    conv2d_forward = ReferenceOps.conv2d_forward
    conv2d_backward = ReferenceOps.conv2d_backward

    # --- max pooling (pooling.cu) ------------------------------------------

    def max_pool2d_forward(self, x, kh, kw, sh, sw, pads):
        top, _, left, _ = pads
        N, H, W, C = x.shape
        OH, OW = conv_output_size(x.shape, kh, kw, sh, sw, pads)
        x = cupy.ascontiguousarray(x)
        y = cupy.empty((N, OH, OW, C), dtype=x.dtype)
        argmax = cupy.empty((N, OH, OW, C), dtype=cupy.int64)
        sizes = _ints(N, H, W, C, kh, kw, sh, sw, top, left, OH, OW)
        self._elementwise("pooling", "max_pool2d_forward", x.dtype, y.size, (x, y, argmax, *sizes))
        return y, argmax

    def max_pool2d_backward(self, dy, argmax, x_shape):
        """The scatter-add of ``dy`` to the winners, in a fixed order (see :attr:`atomic_scatter`)."""
        N, H, W, C = x_shape
        _, OH, OW, _ = dy.shape
        dy = cupy.ascontiguousarray(dy)
        argmax = cupy.ascontiguousarray(argmax, dtype=cupy.int64)
        dx = cupy.zeros((N, H, W, C), dtype=dy.dtype)
        sizes = _ints(N, H, W, C, OH, OW)
        if self.atomic_scatter:
            self._elementwise("pooling", "max_pool2d_backward_atomic", dy.dtype, dy.size, (dy, argmax, dx, *sizes))
            return dx
        # Where each dy entry goes (a flat index into dx), sorted stably: each dx entry then sums its run in order.
        keys = cupy.empty(dy.shape, dtype=cupy.int64)
        self._elementwise("pooling", "max_pool2d_backward_keys", dy.dtype, dy.size, (argmax, keys, *sizes))
        order = cupy.argsort(keys.reshape(-1), kind="stable")
        args = (dy, keys, order, dx, *_ints(dy.size, dx.size))
        self._elementwise("pooling", "max_pool2d_backward", dy.dtype, dy.size, args)
        return dx

    avg_pool2d_forward = ReferenceOps.avg_pool2d_forward
    avg_pool2d_backward = ReferenceOps.avg_pool2d_backward

    # --- LSTM step (lstm.cu): steps 2-4 and 4b-2b of scratchnet/ops/lstm.py ---

    def lstm_gates_forward(self, z, c_prev):
        N, H = c_prev.shape
        z = cupy.ascontiguousarray(z)
        c_prev = cupy.ascontiguousarray(c_prev, dtype=z.dtype)
        h = cupy.empty((N, H), dtype=z.dtype)
        c = cupy.empty((N, H), dtype=z.dtype)
        gates = cupy.empty((N, 4 * H), dtype=z.dtype)
        self._elementwise("lstm", "lstm_gates_forward", z.dtype, N * H, (z, c_prev, h, c, gates, *_ints(N, H)))
        return h, c, gates

    def lstm_recurrence(self, z_seq, recurrent_kernel, bias, h0, c0, mask_seq=None):
        """Steps 1-4 for t = 0 .. T-1: per step one GEMM into a buffer made once, and one kernel.

        With a mask it is the reference's loop (whose gate step is :meth:`lstm_gates_forward`'s kernel),
        which carries a masked row's state with one ``where`` per step.

        The reference's step allocates the GEMM's output, adds it to ``z_seq[t]``,
        launches the gate kernel into three new arrays and copies them into the
        sequences. Here cuBLAS writes ``h_{t-1} @ recurrent_kernel`` into ``zr``
        (``out=``, one buffer per sequence), and ``lstm_step_forward`` adds it to
        ``z_seq[t]`` as it reads it, writing the gates over ``z_seq[t]`` (handed
        over, see the contract) and ``h_t``, ``c_t`` into their rows of ``h_seq``
        and ``c_seq``.
        """
        if mask_seq is not None:
            return ReferenceOps.lstm_recurrence(self, z_seq, recurrent_kernel, bias, h0, c0, mask_seq)
        T, N, G = z_seq.shape
        H = G // 4
        dtype = z_seq.dtype
        z_seq = cupy.ascontiguousarray(z_seq)
        z_seq += bias  # step 1's bias, for every step in one launch
        recurrent_kernel = cupy.ascontiguousarray(recurrent_kernel, dtype=dtype)
        h_seq = cupy.empty((T + 1, N, H), dtype=dtype)
        c_seq = cupy.empty((T + 1, N, H), dtype=dtype)
        h_seq[0], c_seq[0] = h0, c0
        zr = cupy.empty((N, G), dtype=dtype)
        sizes = _ints(N, H)
        for t in range(T):
            cupy.matmul(h_seq[t], recurrent_kernel, out=zr)
            self._elementwise("lstm", "lstm_step_forward", dtype, N * H,
                              (z_seq[t], zr, c_seq[t], h_seq[t + 1], c_seq[t + 1], *sizes))
        return h_seq, c_seq, z_seq

    def lstm_gates_backward(self, dh, dc, c_prev, c, gates):
        N, H = c.shape
        dtype = gates.dtype
        dh, dc, c_prev, c, gates = (cupy.ascontiguousarray(a, dtype=dtype) for a in (dh, dc, c_prev, c, gates))
        dz = cupy.empty((N, 4 * H), dtype=dtype)
        dc_prev = cupy.empty((N, H), dtype=dtype)
        args = (dh, dc, c_prev, c, gates, dz, dc_prev, *_ints(N, H))
        self._elementwise("lstm", "lstm_gates_backward", dtype, N * H, args)
        return dz, dc_prev

    # The reference's, around the kernels above.
    swap_batch_time = ReferenceOps.swap_batch_time
    lstm_forward = ReferenceOps.lstm_forward
    lstm_backward_recurrence = ReferenceOps.lstm_backward_recurrence
    lstm_backward = ReferenceOps.lstm_backward
    gru_recurrence, gru_backward_recurrence = ReferenceOps.gru_recurrence, ReferenceOps.gru_backward_recurrence
    simple_rnn_recurrence, simple_rnn_backward_recurrence = ReferenceOps.simple_rnn_recurrence, ReferenceOps.simple_rnn_backward_recurrence

    # --- embedding (embedding.cu) ------------------------------------------

    def embedding_backward(self, ids, dy, vocab_size):
        """The scatter-add of ``dy``'s rows into the table's, in a fixed order (see :attr:`atomic_scatter`)."""
        D = dy.shape[-1]
        ids = cupy.ascontiguousarray(ids.reshape(-1), dtype=cupy.int64)
        dy = cupy.ascontiguousarray(dy.reshape(-1, D))
        dtable = cupy.zeros((vocab_size, D), dtype=dy.dtype)
        sizes = _ints(ids.size, D, vocab_size)
        if self.atomic_scatter:
            self._elementwise("embedding", "embedding_backward_atomic", dy.dtype, dy.size, (ids, dy, dtable, *sizes))
            return dtable
        order = cupy.argsort(ids, kind="stable")  # equal ids side by side, in position order
        self._elementwise("embedding", "embedding_backward", dy.dtype, dy.size, (ids, order, dy, dtable, *sizes))
        return dtable

    # --- softmax cross-entropy (losses.cu) ---------------------------------

    def softmax_cross_entropy_forward(self, logits, labels):
        if labels.ndim != 1:
            # Soft labels are a plain reduction the reference does well enough.
            return ReferenceOps.softmax_cross_entropy_forward(self, logits, labels)
        M, K = logits.shape
        logits = cupy.ascontiguousarray(logits)
        labels = cupy.ascontiguousarray(labels, dtype=cupy.int64)
        losses = cupy.empty((M,), dtype=logits.dtype)
        probs = cupy.empty((M, K), dtype=logits.dtype)
        if M == 0:
            return losses, probs
        # One block per row, as wide as the row: a power of two from 32 to the kernel's bound.
        limit = self._block_limit("losses", "softmax_cross_entropy_forward")
        block = min(limit, max(32, 1 << (int(K) - 1).bit_length()))
        # A buffer sized at launch holds one entry per thread.
        shared = block * logits.dtype.itemsize if cuda.uses_dynamic_shared_memory("losses") else 0
        grid = min(M, MAX_GRID)
        args = (logits, labels, losses, probs, *_ints(M, K))
        self._launch("losses", "softmax_cross_entropy_forward", logits.dtype, (grid,), (block,), args, shared_mem=shared)
        return losses, probs

    def softmax_cross_entropy_backward(self, probs, labels, scale):
        if labels.ndim != 1:
            return ReferenceOps.softmax_cross_entropy_backward(self, probs, labels, scale)
        M, K = probs.shape
        probs = cupy.ascontiguousarray(probs)
        labels = cupy.ascontiguousarray(labels, dtype=cupy.int64)
        dlogits = cupy.empty((M, K), dtype=probs.dtype)
        args = (probs, labels, dlogits, probs.dtype.type(scale), *_ints(M, K))
        self._elementwise("losses", "softmax_cross_entropy_backward", probs.dtype, dlogits.size, args)
        return dlogits

    # --- dropout (dropout.cu) ----------------------------------------------

    def dropout_mask(self, shape, rate, seed, dtype):
        """The mask drawn on the device by a counter-based hash of ``(seed, index)``.

        No host draw and no host-device copy per step. A seed gives the same
        mask every time on the GPU (in float32 and float64 alike), but not the
        mask the CPU backends draw with ``numpy.random``. ``seed=None`` draws
        the kernel's seed from ``scratchnet.random``, so seeding that global
        generator still makes a GPU run reproducible.
        """
        dtype = numpy.dtype(dtype)
        if seed is None:
            seed = int(_random.generator().integers(1 << 63))
        mask = cupy.empty(shape, dtype=dtype)
        # The kernel keeps an entry when its uniform 53-bit draw >= rate * 2^53.
        threshold = numpy.uint64(round(float(rate) * (1 << 53)))
        keep_value = dtype.type(1 / (1 - rate))
        args = (mask, numpy.int64(mask.size), numpy.uint64(int(seed) % (1 << 64)), threshold, keep_value)
        self._elementwise("dropout", "dropout_mask", dtype, mask.size, args)
        return mask

    dropout_forward = ReferenceOps.dropout_forward  # x * dropout_mask(...), the mask drawn above

    # --- layer and batch normalization: the reference's, on CuPy arrays ----

    normalization_forward = ReferenceOps.normalization_forward
    normalization_backward = ReferenceOps.normalization_backward

    # --- in-place parameter updates (updates.cu) ---------------------------

    def _fusable(self, *arrays):
        """Whether the update kernels can run on ``arrays``: CuPy arrays of one float dtype and shape, C-contiguous.

        Anything else (a float16 parameter, a transposed view) takes the
        reference's array expressions, which handle every layout.
        """
        first = arrays[0]
        return (first.dtype.name in cuda.REAL_TYPES and all(
            isinstance(a, cupy.ndarray) and a.dtype == first.dtype and a.shape == first.shape
            and a.flags.c_contiguous for a in arrays))

    def _update(self, kernel, w, arrays, scalars, ints=()):
        """Launch ``updates.cu``'s ``kernel`` over ``w.size`` entries; the float scalars in ``w``'s dtype."""
        real = w.dtype.type
        args = (*arrays, *(real(v) for v in scalars), *(numpy.int32(i) for i in ints), numpy.int64(w.size))
        self._elementwise("updates", kernel, w.dtype, w.size, args)

    def scaled_add(self, y, x, alpha):
        if not self._fusable(y, x):
            return ReferenceOps.scaled_add(self, y, x, alpha)
        self._update("scaled_add", y, (y, x), (alpha,))

    def moving_average_update(self, shadow, value, decay):
        if not self._fusable(shadow, value):
            return ReferenceOps.moving_average_update(self, shadow, value, decay)
        self._update("moving_average_update", shadow, (shadow, value), (1 - decay,))

    sum_of_squares = ReferenceOps.sum_of_squares
    sum_of_squares_on_device = ReferenceOps.sum_of_squares_on_device

    def sgd_l2_ema_update(self, w, g, lr, l2, shadow, decay):
        """One kernel for the penalty's gradient, the SGD step and the moving average.

        The penalty's sum is computed (one reduction, one wait for the
        device) only when ``l2`` is set; without it the step does not wait.
        A training step on this backend calls :meth:`sgd_l2_ema_apply`
        instead, having summed the weights before its one transfer.
        """
        total = self.sum_of_squares(w) if l2 else 0.0
        self.sgd_l2_ema_apply(w, g, lr, l2, shadow, decay)
        return total

    def sgd_l2_ema_apply(self, w, g, lr, l2, shadow, decay):
        """:meth:`sgd_l2_ema_update`'s kernel alone: no sum, no wait."""
        arrays = (w, g) if shadow is None else (w, g, shadow)
        if not self._fusable(*arrays):
            return ReferenceOps.sgd_l2_ema_apply(self, w, g, lr, l2, shadow, decay)
        self._update("sgd_l2_ema_update", w, (w, g, w if shadow is None else shadow),
                     (-lr, 2 * l2, 1 - decay), (bool(l2), shadow is not None))

    def sgd_momentum_update(self, w, g, m, lr, momentum, nesterov):
        """Keras's SGD with momentum in one kernel (the array expressions: five launches, two temporaries)."""
        if not self._fusable(w, g, m):
            return ReferenceOps.sgd_momentum_update(self, w, g, m, lr, momentum, nesterov)
        self._update("sgd_momentum_update", w, (w, g, m), (lr, momentum), (bool(nesterov),))

    def momentum_update(self, w, g, a, lr, momentum, nesterov):
        """TensorFlow 1's momentum in one kernel."""
        if not self._fusable(w, g, a):
            return ReferenceOps.momentum_update(self, w, g, a, lr, momentum, nesterov)
        self._update("momentum_update", w, (w, g, a), (lr, momentum), (bool(nesterov),))

    def adam_update(self, w, g, m, v, alpha, beta_1, beta_2, epsilon):
        """Adam in one kernel, where the array expressions take about eight launches and four temporaries."""
        if not self._fusable(w, g, m, v):
            return ReferenceOps.adam_update(self, w, g, m, v, alpha, beta_1, beta_2, epsilon)
        self._update("adam_update", w, (w, g, m, v), (alpha, 1 - beta_1, 1 - beta_2, epsilon))
