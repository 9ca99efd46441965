"""The backward-pass exercises: what each backward receives and returns, the cases it is graded on, and its reference.

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

An exercise may also list the mistakes students make (each a :class:`Mistake`),
each recognized from the gradients it produces (the GRU's forgotten direct path
into ``dh_prev``, attention's missing ``1/sqrt(d)``): when one fits, the report
names it, with its own three hint levels.
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
class Mistake:
    """A mistake students make, recognized from the gradients it produces.

    ``fits(evidence)`` looks at an :class:`Evidence` (the inputs, the given
    forward's cache, the incoming gradients, yours and the reference op's) and
    says whether yours are what this mistake gives; ``hints`` are its three
    levels (nudge, closer, formula), the nudge naming the mistake.
    """

    name: str
    fits: object  # Evidence -> bool
    hints: tuple


@dataclass
class Evidence:
    """What a :class:`Mistake` is recognized from, on one case and one set of incoming gradients."""

    inputs: dict  # input name -> array
    settings: dict
    cache: tuple  # the given forward's cache on these inputs
    dout: dict  # output name -> its incoming gradient
    yours: dict  # gradient name ("dx") -> yours
    right: dict  # gradient name -> the reference op's

    @staticmethod
    def close(a, b):
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        return a.shape == b.shape and bool(np.allclose(a, b, rtol=1e-7, atol=1e-10 * max(1.0, float(np.abs(b).max(initial=0)))))

    def right_one(self, name):
        """Whether your ``name`` (``"dx"``) equals the reference op's."""
        return self.close(self.yours[name], self.right[name])


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
    mistakes: tuple = ()  # Mistakes the report names when their gradients are yours

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

# -- one GRU step -----------------------------------------------------------------------------------
def _gru_op(backward, forward_pass=forward.gru_step_forward):
    def gru_step(x, h_prev, kernel, recurrent_kernel, bias):
        h, cache = forward_pass(x, h_prev, kernel, recurrent_kernel, bias)
        return h, lambda dh: backward(dh, cache)

    return gru_step


def _gru_reference():
    def gru_step(x, h_prev, kernel, recurrent_kernel, bias):
        (_, h), backprop_seq = ops.gru(x[:, None, :], kernel, recurrent_kernel, bias, h_prev)

        def backprop(dh):
            dx, dkernel, drecurrent_kernel, dbias, dh0 = backprop_seq(None, dh)
            return dx[:, 0, :], dh0, dkernel, drecurrent_kernel, dbias

        return h, backprop

    return gru_step


def _gru_inputs(N, D, H):
    def make(rng):
        return (_normal(rng, N, D), _normal(rng, N, H, scale=0.5), _normal(rng, D, 3 * H, scale=0.5),
                _normal(rng, H, 3 * H, scale=0.5), _normal(rng, 2, 3 * H, scale=0.5))

    return make


def _block(a, k):
    """Gate block ``k`` (0 z, 1 r, 2 h) of the last axis of ``a`` (N, 3H), (D, 3H) or (2, 3H)."""
    H = a.shape[-1] // 3
    return a[..., k * H:(k + 1) * H]


def _gru_missing_direct_path(e):
    z, dh = e.cache[4], e.dout["h"]
    return (not e.right_one("dh_prev") and e.close(e.yours["dh_prev"], e.right["dh_prev"] - dh * z)
            and all(e.right_one(g) for g in ("dx", "dkernel", "drecurrent_kernel", "dbias")))


def _gru_reset_gate_left_off_u_h(e):
    # dbias[1]'s h block sums du_h, dbias[0]'s sums da_h: they differ by the factor r alone.
    yours, right = _block(e.yours["dbias"][1], 2), _block(e.right["dbias"][1], 2)
    return not e.close(yours, right) and e.close(yours, _block(e.right["dbias"][0], 2))


def _gru_reset_gradient_wrong(e):
    yours, right = e.yours["dkernel"], e.right["dkernel"]
    return (not e.close(_block(yours, 1), _block(right, 1))
            and e.close(_block(yours, 0), _block(right, 0)) and e.close(_block(yours, 2), _block(right, 2)))


def _gru_update_gate_swapped(e):
    yours, right = e.yours["dkernel"], e.right["dkernel"]
    return (not e.close(_block(yours, 0), _block(right, 0)) and e.close(_block(yours, 0), -_block(right, 0))
            and not e.close(_block(yours, 2), _block(right, 2)))


GRU_STEP = Exercise(
    name="gru_step", title="One GRU time step (Keras's reset_after=True, gate order z, r, h)",
    inputs=("x", "h_prev", "kernel", "recurrent_kernel", "bias"), outputs=("h",),
    make_op=_gru_op, make_reference=_gru_reference, forward=forward.gru_step_forward,
    cases=(
        Case("N=3, D=4, H=5", _gru_inputs(3, 4, 5)),
        Case("N=1, D=2, H=3", _gru_inputs(1, 2, 3)),
    ),
    hints={
        "dx": ("step 1: x reaches all three gate blocks through kernel, as a dense layer's input",
               "given da = [dp_z, dp_r, dp_h], the gradient of the input part a, x's gradient is a dense layer's "
               "input gradient",
               "1b: dx = da @ kernel.T, with da = [dp_z, dp_r, dp_h]"),
        "dh_prev": ("h_prev reaches h by two roads: directly, in h = z * h_prev + (1 - z) * g, and through u "
                    "(step 1) into all three gates",
                    "add the direct term dh * z to what comes back through recurrent_kernel (du, whose h block is "
                    "dp_h * r)",
                    "3b + 1b: dh_prev = dh * z + du @ recurrent_kernel.T, with du = [dp_z, dp_r, dp_h * r]"),
        "dkernel": ("step 1: kernel is a dense layer's weight on x, for the three blocks z, r, h",
                    "given da, kernel's gradient is that of a dense layer's weight; in the h block, da_h = dp_h: "
                    "the reset gate scales u_h only, not a_h",
                    "1b: dkernel = x.T @ da, with da = [dp_z, dp_r, dp_h]"),
        "drecurrent_kernel": ("step 1: recurrent_kernel is a dense layer's weight on h_prev; its h block reaches g "
                              "through r * u_h",
                              "given du, its gradient is a dense layer's weight gradient; du's h block is dp_h * r",
                              "1b: drecurrent_kernel = h_prev.T @ du, with du = [dp_z, dp_r, dp_h * r]"),
        "dbias": ("bias has two rows: row 0 is added to a (the input part), row 1 to u (the recurrent part, which "
                  "r scales in the h block)",
                  "row 0 sums da over the batch, row 1 sums du; they differ in the h block, by the factor r",
                  "1b: dbias = np.stack([da.sum(axis=0), du.sum(axis=0)]), with da = [dp_z, dp_r, dp_h] and "
                  "du = [dp_z, dp_r, dp_h * r]"),
    },
    mistakes=(
        Mistake("the direct path h = z * h_prev is missing from dh_prev", _gru_missing_direct_path,
                ("only dh_prev is wrong, so the path through the gates is right: but h = z * h_prev + (1 - z) * g "
                 "also uses h_prev itself, directly",
                 "dh_prev has two terms: what comes back through recurrent_kernel, and the direct one, dh times z",
                 "dh_prev = dh * z + du @ recurrent_kernel.T")),
        Mistake("the reset gate is on the wrong side: du_h lacks its factor r (drecurrent_kernel, dbias)", _gru_reset_gate_left_off_u_h,
                ("in g = tanh(a_h + r * u_h), r scales the recurrent part u_h, "
                 "so the h blocks of drecurrent_kernel and of dbias's row 1 carry a factor r that the input side "
                 "(dkernel, dbias's row 0) does not",
                 "du, the gradient of u, has the h block dp_h * r; da's h block is dp_h",
                 "du = [dp_z, dp_r, dp_h * r]; drecurrent_kernel = h_prev.T @ du; dbias[1] = du.sum(axis=0)")),
        Mistake("the reset gate is on the wrong side: dr is not computed from u_h (dkernel's r block)", _gru_reset_gradient_wrong,
                ("dkernel is wrong in its r block only (its z and h blocks are right), so the reset gate's gradient "
                 "is off: r multiplies u_h, AFTER the recurrent product (Keras's reset_after=True), not h_prev",
                 "dr is dp_h times u_h (the cache holds u_h, the recurrent bias included), then through the "
                 "sigmoid: dp_r = dr * r * (1 - r)",
                 "dr = dp_h * u_h; dp_r = dr * r * (1 - r), with dp_h = dh * (1 - z) * (1 - g**2)")),
        Mistake("the update gate is swapped: (1 - z) where z belongs (dh_prev, dkernel's z and h blocks)", _gru_update_gate_swapped,
                ("the z block of dkernel has the wrong sign: in h = z * h_prev + (1 - z) * g, z weighs the OLD "
                 "state (z = 1 keeps h_prev), as in Keras, and 1 - z the candidate",
                 "the candidate gets dh * (1 - z), the gate dh * (h_prev - g), and h_prev's direct term is dh * z",
                 "3b: dg = dh * (1 - z); dz = dh * (h_prev - g); dh_prev = dh * z + du @ recurrent_kernel.T")),
    ),
)


# -- scaled dot-product attention -------------------------------------------------------------------
def _attention_op(backward, mask=None, forward_pass=forward.attention_forward):
    def attention(q, k, v):
        y, cache = forward_pass(q, k, v, mask)
        return y, lambda dy: backward(dy, cache)

    return attention


def _attention_reference(mask=None):
    def attention(q, k, v):
        return ops.attention(q, k, v, mask=mask)

    return attention


def _qkv(N, Tq, Tk, d, dv):
    def make(rng):
        return _normal(rng, N, Tq, d), _normal(rng, N, Tk, d), _normal(rng, N, Tk, dv)

    return make


def _padding_mask(lengths, T):
    """(N, 1, T): example n's queries see its first ``lengths[n]`` keys (the rest is padding)."""
    return (np.arange(T)[None, None, :] < np.asarray(lengths)[:, None, None])


def _attention_scale_missing(e):
    root = np.sqrt(e.inputs["q"].shape[-1])
    wrong = [g for g in ("dq", "dk") if not e.right_one(g)]
    return bool(wrong) and all(e.close(e.yours[g], root * e.right[g]) for g in wrong)


def _attention_dp(e):
    """``dp = dy @ v^T`` and the scale, from the inputs."""
    return e.dout["y"] @ np.swapaxes(e.inputs["v"], -1, -2), 1 / np.sqrt(e.inputs["q"].shape[-1])


def _attention_diagonal_missing(e):
    q, k, p = e.inputs["q"], e.inputs["k"], e.cache[4]
    dp, scale = _attention_dp(e)
    diagonal = p * dp  # the part of ds the diagonal of J = diag(p) - p p^T gives
    return (not (e.right_one("dq") and e.right_one("dk"))
            and e.close(e.yours["dq"], e.right["dq"] - scale * diagonal @ k)
            and e.close(e.yours["dk"], e.right["dk"] - scale * np.swapaxes(diagonal, -1, -2) @ q))


def _attention_mask_after_softmax(e):
    mask = e.settings.get("mask")
    if mask is None or e.right_one("dq"):
        return False
    q, k = e.inputs["q"], e.inputs["k"]
    dp, scale = _attention_dp(e)
    everywhere = forward.softmax(scale * q @ np.swapaxes(k, -1, -2))  # a softmax over every key, masked or not
    masked = everywhere * mask  # the mask after it: rows no longer sum to 1
    for ds in (everywhere * (dp - (dp * everywhere).sum(axis=-1, keepdims=True)) * mask,  # ds masked afterwards
               masked * (dp - (dp * masked).sum(axis=-1, keepdims=True))):  # the Jacobian of the masked weights
        if e.close(e.yours["dq"], scale * ds @ k):
            return True
    return False


ATTENTION = Exercise(
    name="attention", title="Scaled dot-product attention: y = softmax(q k^T / sqrt(d), masked) v",
    inputs=("q", "k", "v"), outputs=("y",),
    make_op=_attention_op, make_reference=_attention_reference, forward=forward.attention_forward,
    cases=(
        Case("N=2, T=4, d=3, no mask", _qkv(2, 4, 4, 3, 3)),
        Case("N=2, Tq=3, Tk=5, d=4, dv=2, no mask (queries and keys of different lengths)", _qkv(2, 3, 5, 4, 2)),
        Case("N=2, T=5, d=4, causal mask (query i sees keys 0..i)", _qkv(2, 5, 5, 4, 3),
             dict(mask=np.tril(np.ones((5, 5), dtype=bool)))),
        Case("N=3, T=4, d=2, padding mask (example n sees its first 4, 2, 3 keys)", _qkv(3, 4, 4, 2, 3),
             dict(mask=_padding_mask([4, 2, 3], 4))),
    ),
    hints={
        "dq": ("the scores s = q k^T / sqrt(d) go through a softmax: q's gradient needs ds, the gradient of the "
               "scores, not dp, the gradient of the weights",
               "ds = p * (dp - (the row sums of dp * p)), the softmax's Jacobian row by row; then q is a matrix "
               "product's input, with the scale 1/sqrt(d)",
               "dq = ds @ k / sqrt(d), with ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True)) and dp = dy @ v^T"),
        "dk": ("k enters the scores as q does, from the other side: key j is looked at by every query i",
               "given ds, k's gradient is the other matrix product's, transposed, with the same scale 1/sqrt(d)",
               "dk = ds^T @ q / sqrt(d) (np.swapaxes(ds, -1, -2) @ q)"),
        "dv": ("y = p v: v is a matrix product's input, weighed by the attention weights p",
               "value row j is used by every query i, with the weight p[i, j]",
               "dv = p^T @ dy (np.swapaxes(p, -1, -2) @ dy)"),
    },
    mistakes=(
        Mistake("the scale 1/sqrt(d) is missing from dq and dk", _attention_scale_missing,
                ("dq and dk are sqrt(d) times too large: the scores are q k^T / sqrt(d), and that scale is in their "
                 "gradients too",
                 "multiply ds by 1/sqrt(d), once, before its products with k and with q",
                 "dq = ds @ k / sqrt(d); dk = ds^T @ q / sqrt(d)")),
        Mistake("the softmax's Jacobian lacks its diagonal (dq, dk)", _attention_diagonal_missing,
                ("dq and dk are wrong but dv is right: look at the softmax's backward. p[i, j] depends on s[i, j] "
                 "directly, not only through its row's sum",
                 "J = diag(p) - p p^T: the diagonal gives p * dp, the other part -p * (the row sum of dp * p); "
                 "yours keeps only the second",
                 "ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True))")),
        Mistake("the mask is applied after the softmax (dq, dk)", _attention_mask_after_softmax,
                ("a masked key must be out of the softmax (its score -inf BEFORE it), so that each row's allowed "
                 "weights sum to 1 without it; a softmax over every key, masked afterwards, gives other weights and "
                 "leaves dq and dk wrong",
                 "use the cache's p, the masked softmax (exactly 0 at masked keys): its Jacobian needs no mask of "
                 "its own, and recomputing the weights without the mask gives other ones",
                 "ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True)) with the cache's p, and no multiplication by "
                 "the mask")),
    ),
)

#: The exercises by name.
EXERCISES = {e.name: e for e in (DENSE, CONV2D, MAX_POOL, LSTM_STEP, GRU_STEP, ATTENTION)}
#: Other names :func:`scratchnet.exercises.grade` accepts.
ALIASES = {"conv": "conv2d", "max_pool2d": "max_pool", "maxpool": "max_pool", "pool": "max_pool",
           "lstm": "lstm_step", "lstm_cell": "lstm_step", "gru": "gru_step", "gru_cell": "gru_step",
           "scaled_dot_product_attention": "attention"}

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
