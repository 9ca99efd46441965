"""Batch normalization's backward (training mode, cs231n's): ``batch_norm_backward(dy, cache) -> (dx, dgamma, dbeta)``."""
from __future__ import annotations

from ... import ops
from .. import forward
from .base import Case, Exercise, Mistake, _normal

EPSILON = 1e-3  # Keras's BatchNormalization default, as sn.ops.batch_norm's


def _bn_op(backward, forward_pass=forward.batch_norm_forward):
    def batch_norm(x, gamma, beta):
        y, cache = forward_pass(x, gamma, beta, EPSILON)
        return y, lambda dy: backward(dy, cache)

    return batch_norm


def _bn_reference():
    def batch_norm(x, gamma, beta):
        (y, _, _), backprop = ops.batch_norm(x, gamma, beta, EPSILON)
        return y, backprop

    return batch_norm


def _bn_inputs(*shape):
    def make(rng):
        C = shape[-1]
        x = _normal(rng, *shape, scale=2.0) + rng.normal(size=C)  # a mean and a scale per channel, not 0 and 1
        return x, 1 + _normal(rng, C, scale=0.5), _normal(rng, C)

    return make


def _parts(e):
    """``(g, xhat, s, axes)``: the gradient of xhat, and what the cache holds."""
    _, xhat, s, gamma = e.cache
    return e.dout["y"] * gamma, xhat, s, tuple(range(xhat.ndim - 1))


def _statistics_constant(e):
    g, _, s, _ = _parts(e)
    return not e.right_one("dx") and e.close(e.yours["dx"], g * s)


def _variance_path_missing(e):
    g, _, s, axes = _parts(e)
    return not e.right_one("dx") and e.close(e.yours["dx"], s * (g - g.mean(axis=axes)))


def _dgamma_without_xhat(e):
    return not e.right_one("dgamma") and e.close(e.yours["dgamma"], e.right["dbeta"])


def _batch_axis_only(e):
    g, xhat, s, _ = _parts(e)
    if g.ndim < 3:
        return False
    wrong = s * (g - g.mean(axis=0) - xhat * (g * xhat).mean(axis=0))
    return not e.right_one("dx") and e.close(e.yours["dx"], wrong)


BATCH_NORM = Exercise(
    name="batch_norm", title="Batch normalization (training mode)",
    inputs=("x", "gamma", "beta"), outputs=("y",),
    make_op=_bn_op, make_reference=_bn_reference, forward=forward.batch_norm_forward,
    cases=(
        Case("dense: N=5, C=3", _bn_inputs(5, 3)),
        Case("dense: N=2, C=4 (two values per channel)", _bn_inputs(2, 4)),
        Case("spatial: N=2, H=3, W=3, C=2 (statistics over N, H and W)", _bn_inputs(2, 3, 3, 2),
             hint=("an (N, H, W, C) input has one mean and one variance per channel, over N*H*W values",
                   "take every mean and sum over the axes (0, 1, 2), not over axis 0 alone")),
        Case("spatial: a batch of 1, H=4, W=3, C=2", _bn_inputs(1, 4, 3, 2),
             hint=("with N = 1 the statistics are over the image's H*W positions",)),
    ),
    hints={
        "dx": ("x reaches xhat three ways: directly, through the mean mu, and through the variance (s)",
               "with g = dy * gamma, the gradient of xhat: the mean path subtracts mean(g), the variance path "
               "xhat * mean(g * xhat) (means over every axis but the last), all times s",
               "dx = s * (g - mean(g) - xhat * mean(g * xhat)), g = dy * gamma, means over every axis but the last"),
        "dgamma": ("y = gamma * xhat + beta: gamma scales xhat, for every position of its channel",
                   "sum dy times what gamma multiplied, over every axis but the channels'",
                   "dgamma = (dy * xhat).sum(axis=every axis but the last)"),
        "dbeta": ("beta is added to every position of its channel",
                  "sum dy over every axis but the channels'",
                  "dbeta = dy.sum(axis=every axis but the last)"),
    },
    mistakes=(
        Mistake("the mean and the variance are treated as constants: dx = dy * gamma * s", _statistics_constant,
                ("mu and var are computed from x: moving one x moves its channel's mean and variance, and with "
                 "them every xhat of the channel",
                 "dx has three terms, all times s: g = dy * gamma (the direct path), minus mean(g) (through mu), "
                 "minus xhat * mean(g * xhat) (through var)",
                 "dx = s * (g - mean(g) - xhat * mean(g * xhat)), g = dy * gamma")),
        Mistake("the variance path is missing: dx lacks the term - s * xhat * mean(g * xhat)", _variance_path_missing,
                ("the path through the mean is there, the one through the variance is not: var (and so s) depends "
                 "on every x of the channel too",
                 "d s / d x_q = -s**2 * xhat_q / m; summed against g * xhat it gives the term - s * xhat * "
                 "mean(g * xhat)",
                 "dx = s * (g - mean(g) - xhat * mean(g * xhat)), g = dy * gamma")),
        Mistake("dgamma is summed without xhat: it equals dbeta", _dgamma_without_xhat,
                ("gamma multiplies xhat: its gradient is dy weighted by what it multiplied",
                 "multiply dy by xhat before the sum",
                 "dgamma = (dy * xhat).sum(axis=every axis but the last)")),
        Mistake("the statistics are taken over axis 0 alone: for (N, H, W, C) they are over N, H and W",
                _batch_axis_only,
                ("right on (N, C) inputs, wrong on (N, H, W, C): one mean per channel, over every axis but the last",
                 "axes = tuple(range(dy.ndim - 1)); use it in every mean and every sum",
                 "dx = s * (g - g.mean(axis=axes) - xhat * (g * xhat).mean(axis=axes))")),
    ),
)
