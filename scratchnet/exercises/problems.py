"""The four exercises: what each backward receives and returns, the cases it is graded on, and its reference.

An :class:`Exercise` turns a learner's ``backward(dout, cache)`` (and,
optionally, their ``forward``) into an op in scratchnet's ``(y, backprop)``
form, with named inputs (``x``, ``w``, ...), so that
:mod:`scratchnet.gradcheck` can check it; its reference is the same
computation through ``sn.ops``. Gradients are named after their input with a
``d`` in front (``dw`` for ``w``).

Hints come in three levels, a tuple ``(nudge, closer, formula)``: the report
shows the nudge, and ``grade(..., hint=1)`` or ``hint=2`` the others. A
teacher adding an exercise writes them in that order; the formula is never
shown unless asked for (docs/teaching.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import ops
from . import forward


@dataclass(frozen=True)
class Case:
    """One set of inputs an exercise is graded on."""

    name: str
    make: object  # rng -> tuple of float64 arrays, in the order of Exercise.inputs
    settings: dict = field(default_factory=dict)  # strides, padding, ksize: fixed, not differentiated
    ties: bool = False  # windows with equal maxima (max-pool): the first-maximum rule is graded
    hint: tuple = ()  # (nudge, closer, formula): shown when this case fails against the reference
    # False where finite differences cannot judge: a maximum tied in two overlapping windows may be the
    # first of one and not of the other, and then no one-sided derivative equals the (right) gradient.
    finite_differences: bool = True


@dataclass(frozen=True)
class Exercise:
    """A backward pass to write."""

    name: str
    title: str
    inputs: tuple  # the forward's array inputs, in order; the backward returns their gradients in this order
    outputs: tuple  # the forward's outputs; the backward receives their gradients
    make_op: object  # (backward, forward, **settings) -> fn(*inputs) -> (y, backprop)
    make_reference: object  # (**settings) -> the same through sn.ops
    cases: tuple
    hints: dict = field(default_factory=dict)  # gradient name -> (nudge, closer, formula) when it is wrong
    forward: object = None  # the given forward pass, in scratchnet.exercises.forward

    @property
    def gradients(self):
        return tuple(f"d{name}" for name in self.inputs)

    @property
    def signature(self):
        upstream = ", ".join(f"d{o}" for o in self.outputs)
        grads = self.gradients[0] if len(self.gradients) == 1 else f"({', '.join(self.gradients)})"
        return f"{self.name}_backward({upstream}, cache) -> {grads}"


def _normal(rng, *shape, scale=1.0):
    return rng.normal(scale=scale, size=shape)


# -- dense ------------------------------------------------------------------------------------------
def _dense_op(backward, forward_pass=forward.dense_forward):
    def dense(x, w, b):
        y, cache = forward_pass(x, w, b)
        return y, lambda dy: backward(dy, cache)

    return dense


def _dense_reference():
    def dense(x, w, b):
        return ops.dense(x, w, b)

    return dense


DENSE = Exercise(
    name="dense", title="Dense layer: y = x @ w + b",
    inputs=("x", "w", "b"), outputs=("y",),
    make_op=_dense_op, make_reference=_dense_reference, forward=forward.dense_forward,
    cases=(
        Case("N=4, C=5, K=3", lambda rng: (_normal(rng, 4, 5), _normal(rng, 5, 3), _normal(rng, 3))),
        Case("N=1, C=2, K=6", lambda rng: (_normal(rng, 1, 2), _normal(rng, 2, 6), _normal(rng, 6))),
    ),
    hints={
        "dx": ("x[n, c] reaches every output y[n, k] of its own example n: which slope does each path have?",
               "the slope of y[n, k] with respect to x[n, c] is w[c, k]; add up over k",
               "dx[n, c] = sum_k dy[n, k] w[c, k]"),
        "dw": ("w[c, k] is used by every example in the batch: what happens to the gradients of all of them?",
               "the slope of y[n, k] with respect to w[c, k] is x[n, c], for every n",
               "dw[c, k] = sum_n x[n, c] dy[n, k]: the sum runs over the batch"),
        "db": ("b[k] is added to y[n, k] for every example n",
               "the slope of y[n, k] with respect to b[k] is 1, for every n",
               "db[k] = sum_n dy[n, k]: every example's output uses b"),
    },
)


# -- conv2d -----------------------------------------------------------------------------------------
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


# -- max-pool ---------------------------------------------------------------------------------------
def _pool_op(backward, ksize, strides, padding, forward_pass=forward.max_pool_forward):
    def max_pool(x):
        y, cache = forward_pass(x, ksize, strides, padding)
        return y, lambda dy: backward(dy, cache)

    return max_pool


def _pool_reference(ksize, strides, padding):
    def max_pool(x):
        return ops.max_pool2d(x, ksize, strides, padding)

    return max_pool


def _tied(rng, *shape):
    """Small integers after a ReLU: whole windows of zeros, and equal maxima elsewhere."""
    return np.maximum(rng.integers(-2, 3, size=shape), 0).astype(np.float64)


MAX_POOL = Exercise(
    name="max_pool", title="2-D max pooling",
    inputs=("x",), outputs=("y",),
    make_op=_pool_op, make_reference=_pool_reference, forward=forward.max_pool_forward,
    cases=(
        Case("2x2 window, stride 2, VALID, no ties", lambda rng: (_normal(rng, 2, 6, 6, 3),),
             dict(ksize=2, strides=2, padding="VALID")),
        Case("3x3 window, stride 2, SAME on 7x7 (overlapping windows)", lambda rng: (_normal(rng, 2, 7, 7, 2),),
             dict(ksize=3, strides=2, padding="SAME"),
             hint=("these windows overlap: can one input win two of them?",
                   "an input that wins two overlapping windows receives the sum of both gradients (+=, not =)")),
        Case("2x2 window, stride 2, SAME on 5x5, with ties (zeros after a ReLU, equal maxima)",
             lambda rng: (_tied(rng, 2, 5, 5, 2),), dict(ksize=2, strides=2, padding="SAME"), ties=True,
             hint=("the stub's Notes state the tie rule: at a tie the whole gradient goes to the FIRST maximum in "
                   "row-major window order (smallest i, then smallest j), as TensorFlow does; never split, never the last",
                   "np.argmax returns the first maximum of a flattened window")),
        Case("3x3 window, stride 1, VALID, with ties (overlapping)", lambda rng: (_tied(rng, 1, 5, 6, 2),),
             dict(ksize=3, strides=1, padding="VALID"), ties=True, finite_differences=False,
             hint=("the FIRST maximum of each window, and overlapping windows add up",)),
    ),
    hints={"dx": ("each dy entry goes, whole, to the one input that won its window; every other input gets nothing "
                  "from that window",
                  "loop over the output positions (oh, ow); the window is a slice of x, clipped at the edges "
                  "(padded positions never win)",
                  "dx[n, ih, iw, c] = sum of dy[n, oh, ow, c] over the windows whose (first) maximum is "
                  "x[n, ih, iw, c]")},
)


# -- one LSTM step ----------------------------------------------------------------------------------
def _lstm_op(backward, forward_pass=forward.lstm_step_forward):
    def lstm_step(x, h_prev, c_prev, kernel, recurrent_kernel, bias):
        (h, c), cache = forward_pass(x, h_prev, c_prev, kernel, recurrent_kernel, bias)

        def backprop(dh, dc):
            dh = np.zeros_like(h) if dh is None else dh
            dc = np.zeros_like(c) if dc is None else dc
            return backward(dh, dc, cache)

        return (h, c), backprop

    return lstm_step


def _lstm_reference():
    def lstm_step(x, h_prev, c_prev, kernel, recurrent_kernel, bias):
        (_, h, c), backprop_seq = ops.lstm(x[:, None, :], kernel, recurrent_kernel, bias, h_prev, c_prev)

        def backprop(dh, dc):
            dx, dkernel, drecurrent_kernel, dbias, dh0, dc0 = backprop_seq(None, dh, dc)
            return dx[:, 0, :], dh0, dc0, dkernel, drecurrent_kernel, dbias

        return (h, c), backprop

    return lstm_step


def _lstm_inputs(N, D, H):
    def make(rng):
        return (_normal(rng, N, D), _normal(rng, N, H, scale=0.5), _normal(rng, N, H),
                _normal(rng, D, 4 * H, scale=0.5), _normal(rng, H, 4 * H, scale=0.5), _normal(rng, 4 * H, scale=0.5))

    return make


LSTM_STEP = Exercise(
    name="lstm_step", title="One LSTM time step (Keras gate order i, f, g, o)",
    inputs=("x", "h_prev", "c_prev", "kernel", "recurrent_kernel", "bias"), outputs=("h", "c"),
    make_op=_lstm_op, make_reference=_lstm_reference, forward=forward.lstm_step_forward,
    cases=(
        Case("N=3, D=4, H=5", _lstm_inputs(3, 4, 5)),
        Case("N=1, D=2, H=3", _lstm_inputs(1, 2, 3)),
    ),
    hints={
        "dx": ("step 1 is a dense layer: x reaches z through kernel",
               "given dz, the gradient of z, x's gradient is that of a dense layer's input",
               "1b: dx = dz @ kernel.T"),
        "dh_prev": ("step 1: h_prev reaches z through recurrent_kernel, as x does through kernel",
                    "given dz, h_prev's gradient is that of a dense layer's input",
                    "1b: dh_prev = dz @ recurrent_kernel.T"),
        "dc_prev": ("step 3: c_prev reaches c through the forget gate",
                    "use the TOTAL gradient of c: the incoming dc plus what dh sends through h = o * tanh(c)",
                    "3b: dc_prev = dc * f, with dc the TOTAL gradient of c (4b)"),
        "dkernel": ("step 1: kernel is a dense layer's weight, used by every example",
                    "given dz, kernel's gradient is that of a dense layer's weight",
                    "1b: dkernel = x.T @ dz"),
        "drecurrent_kernel": ("step 1: recurrent_kernel is a dense layer's weight applied to h_prev",
                              "given dz, its gradient is that of a dense layer's weight",
                              "1b: drecurrent_kernel = h_prev.T @ dz"),
        "dbias": ("step 1: bias is added to z for every example",
                  "given dz, bias's gradient is that of a dense layer's bias",
                  "1b: dbias = dz summed over the batch"),
    },
)

#: The exercises by name.
EXERCISES = {e.name: e for e in (DENSE, CONV2D, MAX_POOL, LSTM_STEP)}
#: Other names :func:`scratchnet.exercises.grade` accepts.
ALIASES = {"conv": "conv2d", "max_pool2d": "max_pool", "maxpool": "max_pool", "pool": "max_pool",
           "lstm": "lstm_step", "lstm_cell": "lstm_step"}

#: What the incoming gradient of each output of a multi-output step carries, for the diagnosis of a wrong path.
UPSTREAM_HINTS = {
    ("lstm_step", "dh"): ("step 4, h = o * tanh(c): dh reaches both o and c",
                          "c receives dh * o * tanh'(c) on top of the incoming dc",
                          "4b: do = dh * tanh(c), and c receives dh * o * (1 - tanh(c)^2) on top of the incoming dc"),
    ("lstm_step", "dc"): ("c is used twice, by h and by the next step: its gradient has two parts, and the incoming "
                          "dc is one of them",
                          "the incoming dc must be ADDED to what dh contributes to c, before step 3b",
                          "4b: dc = dc_next + dh * o * (1 - tanh(c)^2)"),
}
