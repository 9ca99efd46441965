"""2-D max and average pooling (NHWC), with TensorFlow's padding and tie rules, and their global forms.

Notation::

    N, H, W, C    batch, input height, width, channels
    kh, kw        window height, width;  sh, sw: strides
    pads          (top, bottom, left, right): window positions outside the input, which never win
    OH, OW        output height, width (``scratchnet/ops/shapes.py``)
    n, oh, ow, c  an output position;  i, j: an offset in the window
    ih, iw        an input position: ih = oh*sh + i - top, iw = ow*sw + j - left

Forward: every output is the largest input of its window, and the forward
records where it came from::

    y[n, oh, ow, c] = x[n, ih*, iw*, c],   (ih*, iw*) = argmax over the window of x[n, ., ., c]

Backward. Away from ties, ``y[n, oh, ow, c]`` is ``x`` at its argmax and does
not move when any other input moves a little, so ``∂y[n, oh, ow, c] /
∂x[n, ih, iw, c]`` is 1 at the argmax and 0 elsewhere. The chain rule then
routes each output's gradient to that one input, and an input that wins
several (overlapping) windows adds their gradients::

    dx[n, ih, iw, c] = sum_{oh, ow : argmax(n, oh, ow, c) = (ih, iw)} dy[n, oh, ow, c]

At a tie the max has no derivative, only a choice of one. Ties are common
(after a ReLU a whole window is often zero), so the choice is part of the
contract: the gradient goes, whole, to the FIRST maximum in row-major window
order (smallest i, then smallest j), as TensorFlow does. It is never split
between the tied inputs.

Average pooling. Each output is the mean of the window's positions INSIDE
the input; under SAME the padded positions are not counted (as
``tf.nn.avg_pool2d``), so a border window of 2 real cells out of 4 divides
by 2. With ``rows(oh) = min(oh*sh - top + kh, H) - max(oh*sh - top, 0)`` and
``cols(ow)`` likewise, the divisor is::

    count[oh, ow] = rows(oh) * cols(ow)       (>= 1: TensorFlow's padding never fills a whole window)
    y[n, oh, ow, c] = sum_{i, j : (ih, iw) inside} x[n, ih, iw, c] / count[oh, ow]

Backward. ``y`` is linear in ``x``: ``∂y[n, oh, ow, c] / ∂x[n, ih, iw, c]``
is ``1 / count[oh, ow]`` when (ih, iw) lies in the window of (oh, ow), and 0
otherwise (or for another n or c). The chain rule sums over the windows that
contain the input::

    dx[n, ih, iw, c] = sum_{oh, ow : (ih, iw) in window(oh, ow)} dy[n, oh, ow, c] / count[oh, ow]

that is, every output spreads ``dy / count`` evenly over its window's real
cells, and overlapping windows add. There are no ties and no kinks: the
derivative exists everywhere, and finite differences check it exactly.

Global pooling is the same op with one window the size of the image
(``ksize = (H, W)``, VALID): :func:`global_avg_pool2d` and
:func:`global_max_pool2d` are written so, and drop the two unit axes unless
``keepdims``.
"""
from __future__ import annotations

from .._checks import as_float_arrays, check_grad, check_padding, check_rank, pair
from ..backend import get_backend
from ..recording import Cost, nbytes
from ..recording import op as recorded_op
from .shapes import conv_output_size, padding_2d


def window_counts(xp, H, W, OH, OW, kh, kw, sh, sw, pads, dtype):
    """``count[oh, ow]``, the (OH, OW) numbers of real (unpadded) input cells in each window, in ``dtype``."""
    top, _, left, _ = pads
    ih0 = xp.arange(OH) * sh - top
    iw0 = xp.arange(OW) * sw - left
    rows = xp.minimum(ih0 + kh, H) - xp.maximum(ih0, 0)
    cols = xp.minimum(iw0 + kw, W) - xp.maximum(iw0, 0)
    return (rows[:, None] * cols[None, :]).astype(dtype)


class PoolingReference:
    """Reference kernels for max and average pooling."""

    def max_pool2d_forward(self, x, kh, kw, sh, sw, pads):
        """One strided slice per window offset (i, j); a later offset wins only when strictly greater."""
        xp = self.xp
        top, bottom, left, right = pads
        N, H, W, C = x.shape
        OH, OW = conv_output_size(x.shape, kh, kw, sh, sw, pads)
        # The padded values are never read as candidates (``inside`` masks
        # them), so zero padding is as good as -inf and keeps -inf inputs exact.
        xpad = xp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
        y = xp.zeros((N, OH, OW, C), dtype=x.dtype)
        argmax = xp.full((N, OH, OW, C), -1, dtype=xp.int64)
        ih0 = xp.arange(OH) * sh - top  # input row of each window's top edge
        iw0 = xp.arange(OW) * sw - left  # input column of each window's left edge
        # Visit the window offsets in row-major order; a later offset wins
        # only when strictly greater, so the first maximum is kept.
        for i in range(kh):
            ih = ih0 + i
            for j in range(kw):
                iw = iw0 + j
                inside = ((ih >= 0) & (ih < H))[:, None] & ((iw >= 0) & (iw < W))[None, :]  # (OH, OW)
                v = xpad[:, i : i + sh * OH : sh, j : j + sw * OW : sw, :]
                take = inside[None, :, :, None] & ((v > y) | (argmax < 0))
                y = xp.where(take, v, y)
                argmax = xp.where(take, (ih[:, None] * W + iw[None, :])[None, :, :, None], argmax)
        return y, argmax

    def max_pool2d_backward(self, dy, argmax, x_shape):
        """``dx[n, argmax[n, oh, ow, c], c] += dy[n, oh, ow, c]``, on the (N, H*W, C) view of ``dx``."""
        xp = self.xp
        N, H, W, C = x_shape
        dx = xp.zeros((N, H * W, C), dtype=dy.dtype)
        n = xp.arange(N)[:, None, None, None]
        c = xp.arange(C)[None, None, None, :]
        # add.at, not ``dx[idx] += dy``: overlapping windows may share a
        # winner, and each of them must add its gradient.
        xp.add.at(dx, (n, argmax, c), dy)
        return dx.reshape(x_shape)

    def avg_pool2d_forward(self, x, kh, kw, sh, sw, pads):
        """One strided slice per window offset (i, j), summed, then divided by the real cells of each window."""
        xp = self.xp
        top, bottom, left, right = pads
        N, H, W, C = x.shape
        OH, OW = conv_output_size(x.shape, kh, kw, sh, sw, pads)
        # Zero padding adds nothing to a sum; the divisor leaves it out (window_counts).
        xpad = xp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
        total = xp.zeros((N, OH, OW, C), dtype=x.dtype)
        for i in range(kh):
            for j in range(kw):
                total += xpad[:, i : i + sh * OH : sh, j : j + sw * OW : sw, :]
        count = window_counts(xp, H, W, OH, OW, kh, kw, sh, sw, pads, x.dtype)
        return total / count[None, :, :, None]

    def avg_pool2d_backward(self, dy, x_shape, kh, kw, sh, sw, pads):
        """``dxpad[n, oh*sh + i, ow*sw + j, c] += dy[n, oh, ow, c] / count[oh, ow]`` for every offset, then crop."""
        xp = self.xp
        top, bottom, left, right = pads
        N, H, W, C = x_shape
        _, OH, OW, _ = dy.shape
        g = dy / window_counts(xp, H, W, OH, OW, kh, kw, sh, sw, pads, dy.dtype)[None, :, :, None]
        dxpad = xp.zeros((N, H + top + bottom, W + left + right, C), dtype=dy.dtype)
        # Within one offset the strided slice hits distinct cells, so ``+=`` is
        # exact; the loop over offsets adds the overlaps.
        for i in range(kh):
            for j in range(kw):
                dxpad[:, i : i + sh * OH : sh, j : j + sw * OW : sw, :] += g
        # What fell on the padding is dropped.
        return xp.ascontiguousarray(dxpad[:, top : top + H, left : left + W, :])


def _window_args(op, be, x, ksize, strides, padding):
    """The checked arguments of a pooling op: ``x`` as a float array, ``(kh, kw)``, ``(sh, sw)`` and the pads."""
    (x,) = as_float_arrays(op, be, x=x)
    check_rank(op, "x", x, 4, "[N, H, W, C]")
    kh, kw = pair(op, "ksize", ksize)
    sh, sw = pair(op, "strides", strides)
    padding = check_padding(op, padding, explicit=True)
    shapes = f"x: {tuple(x.shape)}, ksize: {(kh, kw)}"
    if not isinstance(padding, str):
        (top, bottom), (left, right) = padding
        if max(top, bottom) > kh // 2 or max(left, right) > kw // 2:
            # Every window must hold a real cell (a max of padding alone, or a mean of no cells, is no answer).
            raise ValueError(f"{op}: explicit padding {padding} ((top, bottom), (left, right)) must be at most half the "
                             f"window ({kh // 2} rows, {kw // 2} columns) on each side ({shapes}), as PyTorch's pools")
    _, _, pads = padding_2d(op, x.shape, (kh, kw), (sh, sw), padding, shapes)
    return x, (kh, kw), (sh, sw), pads


def _window_sizes(op, x, ksize, strides, padding):
    """``(windows, cells per window, bytes of x and y)`` of a pooling op, for its cost formula."""
    kh, kw = pair(op, "ksize", ksize)
    OH, OW, _ = padding_2d(op, x.shape, (kh, kw), pair(op, "strides", strides), padding)
    N, _, _, C = x.shape
    windows = N * OH * OW * C
    return windows, kh * kw, nbytes(x) + windows * x.dtype.itemsize


def max_pool2d_cost(x, ksize, strides, padding="VALID"):
    """Comparisons and bytes of :func:`max_pool2d`: one comparison per window element; memory-bound."""
    windows, window_size, io_bytes = _window_sizes("max_pool2d", x, ksize, strides, padding)
    return Cost(flops=float(windows * window_size), bytes=io_bytes, backward_flops=float(windows),
                backward_bytes=io_bytes)


@recorded_op("max_pool2d", cost=max_pool2d_cost)
def max_pool2d(x, ksize, strides, padding="VALID"):
    """Max pooling, as ``tf.nn.max_pool2d`` computes it.

    Parameters
    ----------
    x : array of shape (N, H, W, C)
    ksize : int or (kh, kw)
    strides : int or (sh, sw)
    padding : "VALID", "SAME", int, (ph, pw) or ((top, bottom), (left, right))
        TensorFlow's rule for the names (see :func:`scratchnet.ops.shapes.tf_padding`);
        an explicit padding at most half the window per side (PyTorch's rule).
        Padded positions never win.

    Returns
    -------
    y : array of shape (N, OH, OW, C)
        ``y[n, oh, ow, c] = max_{i, j} x[n, oh*sh + i - top, ow*sw + j - left, c]``
        over the positions inside the input.
    backprop : callable
        ``backprop(dy) -> dx``: each ``dy`` entry goes to the first maximum of
        its window (row-major order); overlapping windows add up (derived in
        the module docstring).
    """
    op = "max_pool2d"
    be = get_backend()
    x, (kh, kw), (sh, sw), pads = _window_args(op, be, x, ksize, strides, padding)

    y, argmax = be.max_pool2d_forward(x, kh, kw, sh, sw, pads)

    def backprop(dy):
        dy = check_grad(op, dy, y, be)
        return be.max_pool2d_backward(dy, argmax, x.shape)

    return y, backprop


def avg_pool2d_cost(x, ksize, strides, padding="VALID"):
    """Additions and bytes of :func:`avg_pool2d`: one addition per window element each way; memory-bound."""
    windows, window_size, io_bytes = _window_sizes("avg_pool2d", x, ksize, strides, padding)
    window_flops = float(windows * (window_size + 1))  # the sum, then one division
    return Cost(flops=window_flops, bytes=io_bytes, backward_flops=window_flops, backward_bytes=io_bytes)


@recorded_op("avg_pool2d", cost=avg_pool2d_cost)
def avg_pool2d(x, ksize, strides, padding="VALID"):
    """Average pooling, as ``tf.nn.avg_pool2d`` computes it.

    Parameters
    ----------
    x : array of shape (N, H, W, C)
    ksize : int or (kh, kw)
    strides : int or (sh, sw)
    padding : "VALID", "SAME", int, (ph, pw) or ((top, bottom), (left, right))
        TensorFlow's rule for the names (see :func:`scratchnet.ops.shapes.tf_padding`);
        an explicit padding at most half the window per side. Padded positions
        are not counted in the mean (TensorFlow's SAME rule; PyTorch's
        ``count_include_pad=False``).

    Returns
    -------
    y : array of shape (N, OH, OW, C)
        ``y[n, oh, ow, c] = sum_{i, j} x[n, oh*sh + i - top, ow*sw + j - left, c] / count[oh, ow]``
        over the positions inside the input, ``count[oh, ow]`` of them.
    backprop : callable
        ``backprop(dy) -> dx``: ``dx[n, ih, iw, c] = sum over the windows
        (oh, ow) holding (ih, iw) of dy[n, oh, ow, c] / count[oh, ow]``
        (derived in the module docstring).
    """
    op = "avg_pool2d"
    be = get_backend()
    x, (kh, kw), (sh, sw), pads = _window_args(op, be, x, ksize, strides, padding)

    y = be.avg_pool2d_forward(x, kh, kw, sh, sw, pads)

    def backprop(dy):
        dy = check_grad(op, dy, y, be)
        return be.avg_pool2d_backward(dy, x.shape, kh, kw, sh, sw, pads)

    return y, backprop


def _global_pool(op, pool, x, keepdims):
    """``pool`` with one VALID window of the whole (H, W) image; ``(N, C)`` unless ``keepdims``."""
    be = get_backend()
    (x,) = as_float_arrays(op, be, x=x)
    check_rank(op, "x", x, 4, "[N, H, W, C]")
    if not isinstance(keepdims, bool):
        raise ValueError(f"{op}: keepdims must be True or False, got {keepdims!r}")
    N, H, W, C = x.shape
    y, backprop = pool(x, (H, W), 1, "VALID")
    y = y.reshape((N, 1, 1, C) if keepdims else (N, C))

    def backprop_global(dy):
        return backprop(check_grad(op, dy, y, be).reshape(N, 1, 1, C))

    return y, backprop_global


def global_avg_pool2d(x, keepdims=False):
    """The mean over each image's height and width: :func:`avg_pool2d` with one (H, W) window.

    x : (N, H, W, C);  returns ``(y, backprop)`` with y : (N, C), or (N, 1, 1, C) when ``keepdims``,
    ``y[n, c] = sum_{ih, iw} x[n, ih, iw, c] / (H*W)``;  ``backprop(dy) -> dx = dy[n, c] / (H*W)`` everywhere.
    The profiler and the TensorBoard graph see one ``avg_pool2d``.
    """
    return _global_pool("global_avg_pool2d", avg_pool2d, x, keepdims)


def global_max_pool2d(x, keepdims=False):
    """The max over each image's height and width: :func:`max_pool2d` with one (H, W) window.

    x : (N, H, W, C);  returns ``(y, backprop)`` with y : (N, C), or (N, 1, 1, C) when ``keepdims``.
    ``backprop(dy)`` sends ``dy[n, c]`` whole to the FIRST maximum of the image in row-major
    order, max_pool2d's tie rule. (Keras's ``GlobalMaxPooling2D`` reduces with ``reduce_max``,
    whose gradient splits a tie evenly; away from ties the two agree.)
    """
    return _global_pool("global_max_pool2d", max_pool2d, x, keepdims)
