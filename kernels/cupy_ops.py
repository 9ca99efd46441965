"""The CuPy GPU backend: CuPy arrays, cuBLAS GEMMs and the CUDA C kernels.

``CupyOps`` inherits every reference kernel (they are written against
``self.xp``, so they run on CuPy as they are) and overrides the hot ones with
the kernels in ``kernels/*.cu``, with the signatures of the contract
(``scratchnet/ops/contract.py``). Each override
allocates its outputs, makes its inputs C-contiguous (the kernels index flat
memory) and launches one kernel; the ``.cu`` files compile on first use
(``kernels/cuda.py``).

This is the only module that imports CuPy, and nothing imports it until the
``cupy`` backend is selected.
"""
from __future__ import annotations

import cupy
import numpy

from scratchnet import random as _random
from scratchnet.ops.shapes import conv_output_size
from scratchnet.ops.reference import ReferenceOps

from . import cuda

# Threads per block of the elementwise kernels, and a cap on the grid: the
# kernels loop grid-stride, so a capped grid still covers any size.
BLOCK = 256
MAX_GRID = 1 << 16


def _grid(n):
    return (min(-(-n // BLOCK), MAX_GRID),)


def _ints(*values):
    # The kernels take sizes as 64-bit ``index_t``; a Python int would be
    # passed as whatever CuPy guesses, so the type is made explicit.
    return tuple(numpy.int64(v) for v in values)


class CupyOps(ReferenceOps):
    """GPU backend: the reference kernels on CuPy, the hot ones in CUDA C."""

    name = "cupy"
    xp = cupy

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

    def _launch(self, source, kernel, dtype, grid, block, args):
        """Run ``kernel`` of ``<source>.cu`` compiled for ``dtype``."""
        cuda.function(source, kernel, dtype)(grid, block, args)

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

    # --- max pooling (pooling.cu) ------------------------------------------

    def maxpool_forward(self, x, kh, kw, sh, sw, pads):
        top, _, left, _ = pads
        N, H, W, C = x.shape
        OH, OW = conv_output_size(x.shape, kh, kw, sh, sw, pads)
        x = cupy.ascontiguousarray(x)
        y = cupy.empty((N, OH, OW, C), dtype=x.dtype)
        argmax = cupy.empty((N, OH, OW, C), dtype=cupy.int64)
        sizes = _ints(N, H, W, C, kh, kw, sh, sw, top, left, OH, OW)
        self._elementwise("pooling", "maxpool_forward", x.dtype, y.size, (x, y, argmax, *sizes))
        return y, argmax

    def maxpool_backward(self, dy, argmax, x_shape):
        N, H, W, C = x_shape
        _, OH, OW, _ = dy.shape
        dy = cupy.ascontiguousarray(dy)
        argmax = cupy.ascontiguousarray(argmax, dtype=cupy.int64)
        dx = cupy.zeros((N, H, W, C), dtype=dy.dtype)
        sizes = _ints(N, H, W, C, OH, OW)
        self._elementwise("pooling", "maxpool_backward", dy.dtype, dy.size, (dy, argmax, dx, *sizes))
        return dx

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

    def lstm_gates_backward(self, dh, dc, c_prev, c, gates):
        N, H = c.shape
        dtype = gates.dtype
        dh, dc, c_prev, c, gates = (cupy.ascontiguousarray(a, dtype=dtype) for a in (dh, dc, c_prev, c, gates))
        dz = cupy.empty((N, 4 * H), dtype=dtype)
        dc_prev = cupy.empty((N, H), dtype=dtype)
        args = (dh, dc, c_prev, c, gates, dz, dc_prev, *_ints(N, H))
        self._elementwise("lstm", "lstm_gates_backward", dtype, N * H, args)
        return dz, dc_prev

    # --- embedding (embedding.cu) ------------------------------------------

    def embedding_backward(self, ids, dy, vocab_size):
        D = dy.shape[-1]
        ids = cupy.ascontiguousarray(ids.reshape(-1), dtype=cupy.int64)
        dy = cupy.ascontiguousarray(dy.reshape(-1, D))
        dtable = cupy.zeros((vocab_size, D), dtype=dy.dtype)
        args = (ids, dy, dtable, *_ints(ids.size, D, vocab_size))
        self._elementwise("embedding", "embedding_backward", dy.dtype, dy.size, args)
        return dtable

    # --- softmax cross-entropy (losses.cu) ---------------------------------

    def softmax_xent_forward(self, logits, labels):
        if labels.ndim != 1:
            # Soft labels are a plain reduction the reference does well enough.
            return super().softmax_xent_forward(logits, labels)
        M, K = logits.shape
        logits = cupy.ascontiguousarray(logits)
        labels = cupy.ascontiguousarray(labels, dtype=cupy.int64)
        losses = cupy.empty((M,), dtype=logits.dtype)
        probs = cupy.empty((M, K), dtype=logits.dtype)
        if M == 0:
            return losses, probs
        # One block per row, as wide as the row (a power of two, 32 to 256).
        block = min(256, max(32, 1 << (int(K) - 1).bit_length()))
        grid = min(M, MAX_GRID)
        args = (logits, labels, losses, probs, *_ints(M, K))
        self._launch("losses", "softmax_xent_forward", logits.dtype, (grid,), (block,), args)
        return losses, probs

    def softmax_xent_backward(self, probs, labels, scale):
        if labels.ndim != 1:
            return super().softmax_xent_backward(probs, labels, scale)
        M, K = probs.shape
        probs = cupy.ascontiguousarray(probs)
        labels = cupy.ascontiguousarray(labels, dtype=cupy.int64)
        dlogits = cupy.empty((M, K), dtype=probs.dtype)
        args = (probs, labels, dlogits, probs.dtype.type(scale), *_ints(M, K))
        self._elementwise("losses", "softmax_xent_backward", probs.dtype, dlogits.size, args)
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
