"""2-D convolution (NHWC input, HWIO weights) as im2col + one GEMM.

Notation::

    N, H, W, C    batch, input height, width, channels
    kh, kw, O     window height, width, output channels: w has shape (kh, kw, C, O)
    sh, sw        strides;  pads = (top, bottom, left, right)
    OH, OW        output height, width (``scratchnet/ops/shapes.py``)
    xpad          x with the zero padding added: (N, H + top + bottom, W + left + right, C)
    n, oh, ow     an output position;  i, j: an offset in the window;  c, o: channels
    ih, iw        a position in the (padded) input: ih = oh*sh + i, iw = ow*sw + j

Forward (cross-correlation, as ``tf.nn.conv2d``)::

    y[n, oh, ow, o] = sum_{i, j, c} xpad[n, oh*sh + i, ow*sw + j, c] * w[i, j, c, o] + b[o]

As one GEMM: ``im2col`` copies the window of every output position into a row,
``cols[(n, oh, ow), (i, j, c)] = xpad[n, oh*sh + i, ow*sw + j, c]``, so that
``y = cols @ w2 + b`` with ``w2 = w.reshape(kh*kw*C, O)``.

Backward. ``y`` is linear in ``w`` and in ``x``; each gradient sums the
incoming ``dy`` over every output the entry took part in::

    dw[i, j, c, o] = sum_{n, oh, ow} xpad[n, oh*sh + i, ow*sw + j, c] * dy[n, oh, ow, o]
                   -> dw2 = cols.T @ dy2                        (dy2 = dy.reshape(N*OH*OW, O))

    dxpad[n, ih, iw, c] = sum_{oh, ow, i, j, o : oh*sh + i = ih, ow*sw + j = iw} dy[n, oh, ow, o] * w[i, j, c, o]
                   -> dcols = dy2 @ w2.T, then dxpad = col2im(dcols), and dx = dxpad without the padding

``col2im`` is the adjoint (the transpose) of ``im2col``: im2col copies each
pixel into every row whose window covers it, so col2im adds every row back
onto the pixels it came from, and overlapping windows sum. As linear maps,
``<im2col(x), d> = <x, col2im(d)>`` for all ``x``, ``d`` (tested).

Read the other way, ``dx`` is a transposed convolution (what
``tf.nn.conv2d_transpose`` computes) of ``dy`` with the same ``w``: spread
``dy`` out by the strides (``sh - 1`` zeros between rows, ``sw - 1`` between
columns), pad it by ``kh - 1 - top`` above, ``kw - 1 - left`` to the left
(and so on), and cross-correlate with ``w`` turned 180 degrees in (i, j) and
with its C and O axes swapped. ``col2im(dy2 @ w2.T)`` computes exactly that,
without the zeros.

The whole forward and backward are backend kernels (``conv2d_forward``,
``conv2d_backward``), so a CPU backend can run them a few images at a time,
with an im2col matrix that stays in cache (``kernels/numba/conv.py``).

Two options let a kernel skip memory passes. ``activation="relu"`` fuses
``y = max(conv + b, 0)`` into the forward (the backward then masks ``dy`` by
``y > 0`` first, ReLU's derivative, see ``activations.py``), so no separate
ReLU reads and writes the whole output. ``need_dx=False`` says that nobody
wants ``dx`` (the input is data, as for a model's first layer): the
``dcols`` GEMM and col2im are skipped, and ``backprop`` returns ``None`` for it.

**Which algorithm.** Everything above is the direct algorithm: every output
is the plain sum of its window's products. The numba backend also has
Winograd F(4x4, 5x5) (``kernels/numba/winograd.py``) for stride-1 5x5
convolutions, 6.25 times fewer multiplications and a result equal up to
rounding, but not bit for bit where the sum is exactly zero.
``conv_algorithm`` (``scratchnet/_config.py``) or the environment variable
``SCRATCHNET_CONV_ALGORITHM`` chooses: ``auto`` (Winograd for float32 where
it applies, direct for float64, the reference-grade dtype), ``direct`` or
``winograd`` (an error where it cannot apply). :func:`conv2d_algorithm`
makes that choice for each call; the backward pass of a call runs the
algorithm its forward pass ran.
"""
from __future__ import annotations

import numpy

from .._checks import as_float_arrays, check_grad, check_padding, check_rank, pair
from .._config import CONV_ALGORITHM_ENV, conv_algorithm, get_conv_algorithm
from ..backend import get_backend
from ..recording import Cost, nbytes
from ..recording import op as recorded_op
from .activations import check_fused_activation
from .shapes import conv_output_size, padding_2d


def conv2d_algorithm(be, x, w, sh, sw):
    """``"winograd"`` or ``"direct"``: the algorithm ``conv2d`` runs on backend ``be`` for these operands.

    From this thread's setting (``scratchnet/_config.py``): ``direct`` is
    always direct; ``auto`` is Winograd for a float32 convolution that the
    backend's Winograd applies to (``be.winograd``, the numba backend's), else
    direct; ``winograd`` is Winograd, and a ValueError naming the shapes where
    the backend has none or it does not apply: never another algorithm than
    the one asked for.
    """
    setting = get_conv_algorithm()
    if setting == "direct":
        return "direct"
    winograd = getattr(be, "winograd", None)
    fits = winograd is not None and winograd.applies(x, w, sh, sw)
    if setting == "winograd":
        if not fits:
            raise ValueError(_winograd_refused(be, x, w, sh, sw, winograd))
        return "winograd"
    return "winograd" if fits and x.dtype == numpy.float32 else "direct"


def _winograd_refused(be, x, w, sh, sw, winograd):
    """Why ``conv_algorithm("winograd")`` cannot run this convolution, and what to do instead."""
    asked = f"conv2d: the convolution algorithm is 'winograd' (conv_algorithm() or {CONV_ALGORITHM_ENV})"
    if winograd is None:
        why = f"the {getattr(be, 'name', type(be).__name__)} backend has no Winograd convolution (the numba backend has one)"
    else:
        why = winograd.requirement
    shapes = f"x: {tuple(x.shape)}, w: {tuple(w.shape)}, strides: {(sh, sw)}"
    return f"{asked}, but {why}; got {shapes}. Choose 'auto' (Winograd where it applies) or 'direct'"


class ConvReference:
    """Reference kernels for conv2d: the whole forward and backward, and the
    ``im2col`` / ``col2im`` pair they are built on. They are the direct
    algorithm, the only one here: under ``conv_algorithm("winograd")`` they
    raise rather than run it (:func:`conv2d_algorithm`)."""

    def conv2d_forward(self, x, w, b, sh, sw, pads, relu=False):
        """``y = im2col(x) @ w2 + b``, one GEMM; then ``max(y, 0)`` when ``relu``."""
        conv2d_algorithm(self, x, w, sh, sw)  # "direct", or the error
        xp = self.xp
        kh, kw, C, O = w.shape
        OH, OW = conv_output_size(x.shape, kh, kw, sh, sw, pads)
        cols = self.im2col(x, kh, kw, sh, sw, pads)  # (N*OH*OW, kh*kw*C)
        y = self.gemm(cols, w.reshape(kh * kw * C, O))
        if b is not None:
            y += b
        if relu:
            y = xp.maximum(y, 0)
        return y.reshape(x.shape[0], OH, OW, O)

    def conv2d_backward(self, dy, x, w, y, sh, sw, pads, relu=False, need_dx=True):
        """``dw = cols.T @ g2``, ``db = sum g2`` and ``dx = col2im(g2 @ w2.T)`` (derived in the module
        docstring), with ``g = dy * (y > 0)`` after a fused ReLU, else ``g = dy``.

        The im2col matrix is built again rather than kept from the forward
        pass: it is a copy, cheap next to the GEMMs, and keeping it would hold
        kh*kw times the input's memory from the forward pass to the backward.
        """
        conv2d_algorithm(self, x, w, sh, sw)  # "direct", or the error
        kh, kw, C, O = w.shape
        cols = self.im2col(x, kh, kw, sh, sw, pads)
        g2 = (dy * (y > 0) if relu else dy).reshape(-1, O)
        # dw[i, j, c, o] = sum_{n, oh, ow} cols[(n, oh, ow), (i, j, c)] * g[n, oh, ow, o]
        dw = self.gemm(cols, g2, trans_a=True).reshape(w.shape)
        db = g2.sum(axis=0)  # db[o] = sum_{n, oh, ow} g[n, oh, ow, o]
        if not need_dx:
            return None, dw, db
        # dcols[(n, oh, ow), (i, j, c)] = sum_o g[n, oh, ow, o] * w[i, j, c, o]; col2im sums it onto the pixels.
        dcols = self.gemm(g2, w.reshape(kh * kw * C, O), trans_b=True)
        dx = self.col2im(dcols, x.shape, kh, kw, sh, sw, pads)
        return dx, dw, db

    def im2col(self, x, kh, kw, sh, sw, pads):
        """One strided slice per window offset (i, j): a loop over kh*kw, not over pixels."""
        xp = self.xp
        top, bottom, left, right = pads
        N, H, W, C = x.shape
        OH, OW = conv_output_size(x.shape, kh, kw, sh, sw, pads)
        xpad = xp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
        cols = xp.empty((N, OH, OW, kh, kw, C), dtype=x.dtype)
        for i in range(kh):
            for j in range(kw):
                # cols[n, oh, ow, i, j, c] = xpad[n, oh*sh + i, ow*sw + j, c]
                cols[:, :, :, i, j, :] = xpad[:, i : i + sh * OH : sh, j : j + sw * OW : sw, :]
        return cols.reshape(N * OH * OW, kh * kw * C)

    def col2im(self, cols, x_shape, kh, kw, sh, sw, pads):
        """The same slices as :meth:`im2col`, added (``+=``) instead of copied, then the padding cut off."""
        xp = self.xp
        top, bottom, left, right = pads
        N, H, W, C = x_shape
        OH, OW = conv_output_size(x_shape, kh, kw, sh, sw, pads)
        cols = cols.reshape(N, OH, OW, kh, kw, C)
        dxpad = xp.zeros((N, H + top + bottom, W + left + right, C), dtype=cols.dtype)
        for i in range(kh):
            for j in range(kw):
                # dxpad[n, oh*sh + i, ow*sw + j, c] += cols[n, oh, ow, i, j, c]: windows that overlap add up.
                dxpad[:, i : i + sh * OH : sh, j : j + sw * OW : sw, :] += cols[:, :, :, i, j, :]
        return dxpad[:, top : top + H, left : left + W, :]


def conv2d_cost(x, w, b=None, strides=1, padding="VALID", activation=None, need_dx=True, dilations=1):
    """FLOPs and bytes of :func:`conv2d`: ``2 N OH OW kh kw C O`` forward, twice that backward
    (dx and dw; once without dx). A dilated kernel counts its zeros too: that is the work done."""
    kh, kw, C, O = w.shape
    dh, dw = pair("conv2d", "dilations", dilations)
    kh, kw = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    OH, OW, _ = padding_2d("conv2d", x.shape, (kh, kw), pair("conv2d", "strides", strides), padding)
    N = x.shape[0]
    macs = N * OH * OW * kh * kw * C * O
    y_bytes = N * OH * OW * O * x.dtype.itemsize
    return Cost(flops=2.0 * macs, bytes=nbytes(x, w, b) + y_bytes,
                backward_flops=(4.0 if need_dx else 2.0) * macs + (N * OH * OW * O if b is not None else 0),
                backward_bytes=(2 if need_dx else 1) * nbytes(x) + 2 * nbytes(w, b) + 2 * y_bytes)


@recorded_op("conv2d", cost=conv2d_cost)
def conv2d(x, w, b=None, strides=1, padding="VALID", activation=None, need_dx=True, dilations=1):
    """2-D cross-correlation, as ``tf.nn.conv2d`` computes it.

    Parameters
    ----------
    x : array of shape (N, H, W, C)
    w : array of shape (kh, kw, C, O)
        The weights (Keras's ``kernel``) in TensorFlow's HWIO layout.
    b : array of shape (O,), optional
    strides : int or (sh, sw)
    padding : "VALID", "SAME", int, (ph, pw) or ((top, bottom), (left, right))
        TensorFlow's rule for the names: SAME gives ``OH = ceil(H / sh)`` with
        the odd padded row (column) at the bottom (right). An explicit padding
        adds those zeros (PyTorch's ``padding=``; TensorFlow's explicit list).
    activation : {None, "relu"}
        ``"relu"`` returns ``max(y, 0)``, fused into the kernel.
    need_dx : bool
        False when nobody wants the input's gradient (``backprop`` then returns
        ``None`` for ``dx`` and skips its work).
    dilations : int or (dh, dw)
        The kernel's taps ``dh`` rows and ``dw`` columns apart (TensorFlow's
        ``dilations``, Keras's ``dilation_rate``); with strides 1 only, as Keras.
        Computed exactly as the convolution with the kernel spread out by zeros,
        ``wd[i*dh, j*dw] = w[i, j]`` (size ``(kh-1)*dh+1``), whose backward gives
        ``dw = dwd[::dh, ::dw]``: the zeros' products add nothing, at the price
        of computing them.

    The algorithm (direct, or Winograd for some float32 convolutions) is
    chosen by ``conv_algorithm`` / ``$SCRATCHNET_CONV_ALGORITHM`` (module
    docstring): float64 is the exact sum unless ``"winograd"`` is asked for.

    Returns
    -------
    y : array of shape (N, OH, OW, O)
        ``y[n, oh, ow, o] = sum_{i, j, c} xpad[n, oh*sh + i, ow*sw + j, c] * w[i, j, c, o] + b[o]``
        (then ``max(y, 0)`` for ``activation="relu"``)
    backprop : callable
        ``backprop(dy) -> (dx, dw, db)``, ``db[o] = sum_{n, oh, ow} dy[n, oh, ow, o]``
        (``None`` without a bias); ``dx`` and ``dw`` are derived in the module docstring.
        After a ReLU, ``dy`` is first multiplied by ``y > 0``.
    """
    op = "conv2d"
    be = get_backend()
    x, w, b = as_float_arrays(op, be, x=x, w=w, b=b)
    check_rank(op, "x", x, 4, "[N, H, W, C]")
    check_rank(op, "w", w, 4, "[kh, kw, C, O]")
    kh, kw, C, O = w.shape
    if min(w.shape) < 1:
        raise ValueError(f"{op}: w must have no empty dimension, got w: {tuple(w.shape)}")
    if x.shape[3] != C:
        raise ValueError(
            f"{op}: x has {x.shape[3]} channels but w expects {C} (x: {tuple(x.shape)}, w: {tuple(w.shape)})"
        )
    if b is not None and tuple(b.shape) != (O,):
        raise ValueError(f"{op}: b must have shape ({O},) to match w {tuple(w.shape)}, got {tuple(b.shape)}")
    sh, sw = pair(op, "strides", strides)
    dh, dwid = pair(op, "dilations", dilations)
    if (dh, dwid) != (1, 1) and (sh, sw) != (1, 1):
        raise ValueError(f"{op}: dilations {(dh, dwid)} with strides {(sh, sw)}: a dilated convolution takes "
                         "strides 1 (as Keras's Conv2D and TensorFlow's CPU kernel)")
    padding = check_padding(op, padding, explicit=True)
    relu = check_fused_activation(op, activation)
    shapes = f"x: {tuple(x.shape)}, w: {tuple(w.shape)}"
    wk = w
    if (dh, dwid) != (1, 1):  # the kernel spread out by zeros (docstring)
        wk = be.xp.zeros(((kh - 1) * dh + 1, (kw - 1) * dwid + 1, C, O), dtype=w.dtype)
        wk[::dh, ::dwid] = w
        shapes += f", dilations: {(dh, dwid)}, so the kernel spans {wk.shape[0]}x{wk.shape[1]}"
    _, _, pads = padding_2d(op, x.shape, wk.shape[:2], (sh, sw), padding, shapes)

    setting = get_conv_algorithm()  # the conv_algorithm setting the forward runs under
    y = be.conv2d_forward(x, wk, b, sh, sw, pads, relu)

    def backprop(dy):
        dy = check_grad(op, dy, y, be)
        with conv_algorithm(setting):  # the backward of the algorithm that ran, even outside its ``with``
            dx, dwk, db = be.conv2d_backward(dy, x, wk, y, sh, sw, pads, relu, bool(need_dx))
        if wk is not w:
            dwk = be.xp.ascontiguousarray(dwk[::dh, ::dwid])
        return dx, dwk, (db if b is not None else None)

    return y, backprop
