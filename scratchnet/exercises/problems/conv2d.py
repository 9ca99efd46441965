"""The 2-D convolution's backward (NHWC input, HWIO weights): ``conv2d_backward(dy, cache) -> (dx, dw, db)``."""
from __future__ import annotations

from ... import ops
from .. import forward
from .base import Case, Exercise, _normal


def _conv_op(backward, strides, padding, forward_pass=forward.conv2d_forward):
    def conv2d(x, w, b):
        y, cache = forward_pass(x, w, b, strides, padding)
        return y, lambda dy: backward(dy, cache)

    return conv2d


def _conv_reference(strides, padding):
    def conv2d(x, w, b):
        return ops.conv2d(x, w, b, strides=strides, padding=padding)

    return conv2d


CONV2D = Exercise(
    name="conv2d", title="2-D convolution (NHWC input, HWIO weights)",
    inputs=("x", "w", "b"), outputs=("y",),
    make_op=_conv_op, make_reference=_conv_reference, forward=forward.conv2d_forward,
    cases=(
        Case("3x3 window, stride 1, SAME (overlapping windows)",
             lambda rng: (_normal(rng, 2, 5, 5, 3), _normal(rng, 3, 3, 3, 4), _normal(rng, 4)),
             dict(strides=1, padding="SAME")),
        Case("2x3 window, stride 2, SAME on 7x6 (the odd padded row at the bottom)",
             lambda rng: (_normal(rng, 2, 7, 6, 2), _normal(rng, 2, 3, 2, 3), _normal(rng, 3)),
             dict(strides=2, padding="SAME")),
        Case("3x2 window, strides (2, 1), VALID",
             lambda rng: (_normal(rng, 1, 6, 7, 2), _normal(rng, 3, 2, 2, 2), _normal(rng, 2)),
             dict(strides=(2, 1), padding="VALID")),
    ),
    hints={
        "dx": ("a pixel is read by EVERY window that covers it: each of them sends a gradient back",
               "each pixel collects dy[n, oh, ow, o] * w[i, j, c, o] from every window that covered it; overlapping "
               "windows add up (col2im does), and the padding is cut off at the end",
               "dx is a transposed convolution: dx = col2im(dy2 @ w2.T) with dy2 = dy.reshape(-1, O) and "
               "w2 = w.reshape(kh*kw*C, O)"),
        "dw": ("w[i, j, c, o] is used at every output position of every example",
               "the forward is a dense layer whose examples are the rows of im2col(x)",
               "dw[i, j, c, o] = sum_{n, oh, ow} xpad[n, oh*sh + i, ow*sw + j, c] dy[n, oh, ow, o]"),
        "db": ("b[o] is added at every output position of every example",
               "add dy up over every axis but the channel",
               "db[o] = sum_{n, oh, ow} dy[n, oh, ow, o]"),
    },
)
