"""The transposed convolution: conv2d's input gradient, run forward (``tf.nn.conv2d_transpose``).

A convolution ``z = conv2d(u, w)`` maps ``u`` (N, OH, OW, F) to ``z`` (N, H, W, C) linearly; its input
gradient is the transpose of that map, ``du = conv2d_dx(dz, w)`` (derived on the conv2d page:
``dcols = dz2 @ w2.T``, then ``du = col2im(dcols)``). The *transposed convolution* of ``x`` (N, H, W, C)
is exactly that map applied to ``x``: it goes from the small image back to the large one, and is what
a decoder or a generator uses to upsample::

    cols = x2 @ w2.T                      x2 = x as (N*H*W, C), w2 = w as (kh*kw*F, C)
    y    = col2im(cols)                   (N, OH, OW, F): each input pixel adds w times itself into a
                                          kh x kw patch of the output, patches s apart, overlaps summed

with ``w`` of shape (kh, kw, F, C) (TensorFlow's and Keras's layout for a transposed convolution:
output channels before input channels). The output size is Keras's (:func:`conv2d_transpose_output_shape`),
and the padding is the one a convolution of the output by the same window would have, so that
convolving ``y`` gives back ``H x W``: col2im adds the patches onto the padded output and cuts the
padding off. Each axis, with ``p`` the ``output_padding``:

    SAME      OH = H * s                          without output_padding
              OH = (H - 1) * s + kh % 2 + p       with it; the padding is TensorFlow's SAME rule on OH
    VALID     OH = (H - 1) * s + kh + p           p defaults to max(kh, s) - kh (H * s when kh < s)
    explicit  OH = (H - 1) * s + kh - top - bottom + p     p defaults to 0 (PyTorch's ConvTranspose2d)

``output_padding`` (``0 <= p < s``) adds ``p`` rows at the bottom (columns at the right) that no
patch reaches: the rows a convolution of the output with stride ``s`` would skip. It resolves the
ambiguity of a strided convolution, which maps ``s`` neighbouring input sizes to one output size.

Backward. ``y`` is linear in ``x`` and in ``w``, and the map from ``x`` to ``y`` is the transpose of the
convolution ``C``: ``y = C^T x``. So its input gradient is the convolution itself,
``dx = C dy = conv2d(dy, w)``: im2col of ``dy`` times ``w2``. And ``dw``: ``y`` depends on ``w2`` through
``cols = x2 @ w2.T``, so ``dw2 = dcols.T @ x2`` with ``dcols = im2col(dy)`` (col2im's adjoint)::

    dcols = im2col(dy)                    (N*H*W, kh*kw*F)
    dx    = dcols @ w2                    (N*H*W, C) -> (N, H, W, C): conv2d(dy, w), forward
    dw    = (dcols.T @ x2)                (kh*kw*F, C) -> (kh, kw, F, C)
    db    = sum of dy over N, OH, OW

The forward of one is the backward of the other; both run through the backend's ``im2col``,
``col2im`` and ``gemm``, the kernels the convolution already uses.
"""
from __future__ import annotations

import numbers

from .._checks import as_float_arrays, check_grad, check_padding, check_rank, pair
from ..backend import get_backend
from ..recording import Cost, nbytes
from ..recording import op as recorded_op
from .shapes import conv_output_size, explicit_pads, tf_padding_2d


def check_output_padding(op, output_padding, strides):
    """``(ph, pw)`` from None, an int or a pair of ints ``0 <= p < s`` (Keras's and PyTorch's rule); None stays None."""
    if output_padding is None:
        return None
    values = (output_padding, output_padding) if isinstance(output_padding, numbers.Integral) else output_padding
    if not isinstance(values, (tuple, list)) or len(values) != 2 or any(
            isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0 for v in values):
        raise ValueError(f"{op}: output_padding must be None, a non-negative int or a pair of them, "
                         f"got {output_padding!r}")
    if any(v >= s for v, s in zip(values, strides)):
        raise ValueError(f"{op}: output_padding {tuple(values)} must be smaller than the strides {tuple(strides)} "
                         f"(each axis)")
    return int(values[0]), int(values[1])


def conv2d_transpose_output_shape(op, x_shape, ksize, strides, padding, output_padding, F):
    """``(y_shape, pads)``: the output's shape (Keras's sizes, see the module) and its padding (top, bottom,
    left, right), such that a convolution of ``y_shape`` padded by ``pads`` has ``x_shape``'s H and W.

    ``padding`` is "SAME", "VALID" or explicit (:func:`~scratchnet.ops.shapes.explicit_pads`);
    ``output_padding`` None or ``(ph, pw)`` already checked.
    """
    N, H, W, _ = x_shape
    (kh, kw), (sh, sw) = ksize, strides
    ph, pw = (None, None) if output_padding is None else output_padding
    if isinstance(padding, str):
        if padding == "SAME":
            OH = H * sh if ph is None else (H - 1) * sh + kh % 2 + ph
            OW = W * sw if pw is None else (W - 1) * sw + kw % 2 + pw
        else:
            OH = (H - 1) * sh + kh + (max(kh, sh) - kh if ph is None else ph)
            OW = (W - 1) * sw + kw + (max(kw, sw) - kw if pw is None else pw)
        y_shape = (N, OH, OW, F)
        _, _, pads = tf_padding_2d(op, y_shape, (kh, kw), (sh, sw), padding) if OH > 0 and OW > 0 else (0, 0, None)
    else:
        pads = explicit_pads(op, padding)
        top, bottom, left, right = pads
        OH = (H - 1) * sh + kh - top - bottom + (ph or 0)
        OW = (W - 1) * sw + kw - left - right + (pw or 0)
        y_shape = (N, OH, OW, F)
    if OH < 1 or OW < 1 or conv_output_size(y_shape, kh, kw, sh, sw, pads) != (H, W):
        raise ValueError(f"{op}: padding {padding!r} and output_padding {output_padding} give an output of "
                         f"{OH}x{OW}, which a {kh}x{kw} convolution with strides ({sh}, {sw}) does not map back to "
                         f"the input's {H}x{W} (x: {tuple(x_shape)})")
    return y_shape, pads


def conv2d_transpose_cost(x, w, b=None, strides=1, padding="VALID", output_padding=None):
    """FLOPs and bytes of :func:`conv2d_transpose`: ``2 N H W kh kw F C`` forward, twice that backward."""
    kh, kw, F, C = w.shape
    N, H, W, _ = x.shape
    macs = N * H * W * kh * kw * F * C
    sh, sw = pair("conv2d_transpose", "strides", strides)
    y_bytes = N * ((H - 1) * sh + kh) * ((W - 1) * sw + kw) * F * x.dtype.itemsize  # about: the padding aside
    return Cost(flops=2.0 * macs, bytes=nbytes(x, w, b) + y_bytes, backward_flops=4.0 * macs,
                backward_bytes=2 * nbytes(x) + 2 * nbytes(w, b) + 2 * y_bytes)


@recorded_op("conv2d_transpose", cost=conv2d_transpose_cost)
def conv2d_transpose(x, w, b=None, strides=1, padding="VALID", output_padding=None):
    """Transposed 2-D convolution (``tf.nn.conv2d_transpose``, Keras's ``Conv2DTranspose``), derived above.

    Parameters
    ----------
    x : (N, H, W, C)
    w : (kh, kw, F, C)
        Output channels ``F`` before input channels ``C``, as TensorFlow and Keras store it.
    b : (F,), optional
    strides : int or (sh, sw)
    padding : "VALID", "SAME", int, (ph, pw) or ((top, bottom), (left, right))
        The output is ``H * s`` (SAME) or ``(H - 1) * s + max(kh, s)`` (VALID) high, likewise wide (Keras's
        sizes); an explicit padding is cut off the full ``(H - 1) * s + kh`` (PyTorch's ``padding``).
    output_padding : None, int or (ph, pw)
        Rows (columns) added at the bottom (right), each ``< s``; sizes in the module's table.

    Returns
    -------
    y : (N, OH, OW, F)
    backprop : callable
        ``backprop(dy) -> (dx, dw, db)`` (``db`` None without a bias).
    """
    op = "conv2d_transpose"
    be = get_backend()
    x, w, b = as_float_arrays(op, be, x=x, w=w, b=b)
    check_rank(op, "x", x, 4, "[N, H, W, C]")
    check_rank(op, "w", w, 4, "[kh, kw, F, C]")
    kh, kw, F, C = w.shape
    if min(w.shape) < 1 or min(x.shape) < 1:
        raise ValueError(f"{op}: x and w must have no empty dimension, got x: {tuple(x.shape)}, w: {tuple(w.shape)}")
    if x.shape[3] != C:
        raise ValueError(f"{op}: x has {x.shape[3]} channels but w (kh, kw, F, C) expects C = {C} "
                         f"(x: {tuple(x.shape)}, w: {tuple(w.shape)})")
    if b is not None and tuple(b.shape) != (F,):
        raise ValueError(f"{op}: b must have shape ({F},) (w's F), got {tuple(b.shape)}")
    sh, sw = pair(op, "strides", strides)
    padding = check_padding(op, padding, explicit=True)
    y_shape, pads = conv2d_transpose_output_shape(op, x.shape, (kh, kw), (sh, sw), padding,
                                                  check_output_padding(op, output_padding, (sh, sw)), F)
    N, H, W, _ = x.shape
    x2 = x.reshape(N * H * W, C)
    w2 = w.reshape(kh * kw * F, C)
    y = be.col2im(be.gemm(x2, w2, trans_b=True), y_shape, kh, kw, sh, sw, pads)
    if b is not None:
        y = y + b

    def backprop(dy):
        dy = check_grad(op, dy, y, be)
        dcols = be.im2col(dy, kh, kw, sh, sw, pads)
        dx = be.gemm(dcols, w2).reshape(x.shape)
        dw = be.gemm(dcols, x2, trans_a=True).reshape(w.shape)
        db = None if b is None else dy.reshape(-1, F).sum(axis=0)
        return dx, dw, db

    return y, backprop
