"""One GRU step's backward (Keras's ``reset_after=True``), with the mistakes students make in it."""
from __future__ import annotations

from ... import ops
from .. import forward
from .base import Case, Exercise, Mistake, _normal


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
