"""One LSTM step's backward: ``lstm_step_backward(dh, dc, cache)``, two incoming gradients."""
from __future__ import annotations

import numpy as np

from ... import ops
from .. import forward
from .base import Case, Exercise, _normal


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
