"""A residual block's backward: ``residual_backward(dy, cache) -> (dx, dw1, db1, dw2, db2)``.

The block is ``y = relu(x + relu(x @ w1 + b1) @ w2 + b2)``: two dense
layers with a ReLU between them, the identity skip connection, and the
block's ReLU after the sum (ResNet's basic block with dense layers for its
convolutions). The point of the exercise is the sum: ``x`` reaches ``s`` by
the branch and by the skip, so its gradient is the sum of the two roads'.

The mistakes it names are recognized by recomputing the chain with the
mistake made (:func:`_chain`) and comparing it with the learner's
gradients.
"""
from __future__ import annotations

import numpy as np

from ... import ops
from .. import forward
from .base import Case, Exercise, Mistake, _normal


def _residual_op(backward, forward_pass=forward.residual_forward):
    def residual(x, w1, b1, w2, b2):
        y, cache = forward_pass(x, w1, b1, w2, b2)
        return y, lambda dy: backward(dy, cache)

    return residual


def _residual_reference():
    """The block through ``sn.ops``: dense with its fused ReLU, dense, the sum, ReLU."""

    def residual(x, w1, b1, w2, b2):
        h, inner_backprop = ops.dense(x, w1, b1, activation="relu")
        z, outer_backprop = ops.dense(h, w2, b2)
        y, relu_backprop = ops.relu(x + z)

        def backprop(dy):
            ds = relu_backprop(dy)
            dh, dw2, db2 = outer_backprop(ds)
            dx_branch, dw1, db1 = inner_backprop(dh)
            return dx_branch + ds, dw1, db1, dw2, db2

        return y, backprop

    return residual


def _mixed(v):
    """Both ReLU regions in every row, and no value at a kink (where finite differences cannot judge)."""
    return bool(((v > 0).any(axis=1) & (v < 0).any(axis=1)).all() and np.abs(v).min() > 1e-3)


def _inputs(N, C, K):
    """Inputs where each ReLU passes some entries of every row and blocks others: every mistake shows."""

    def make(rng):
        while True:
            x, w1, b1, w2, b2 = (_normal(rng, N, C), _normal(rng, C, K, scale=1 / np.sqrt(C)), _normal(rng, K, scale=0.5),
                                 _normal(rng, K, C, scale=1 / np.sqrt(K)), _normal(rng, C, scale=0.5))
            _, (_, _, _, a, _, s) = forward.residual_forward(x, w1, b1, w2, b2)
            if _mixed(a) and _mixed(s):
                return x, w1, b1, w2, b2

    return make


# -- the mistakes: the chain recomputed with one step done wrong ------------------------------------
def _masks(e):
    """``{name: pre-activation}`` a learner may take a ReLU's mask from: the right ones and the wrong ones."""
    x, _, _, a, _, s = e.cache
    return {"s": s, "a": a, "x": x, "z": s - x}


def _chain(e, final="s", inner="a", skip="add", skip_masked=True):
    """``(dx, dw1, db1, dw2, db2)`` with the block's ReLU masked by ``final > 0``, the inner by ``inner > 0``.

    ``skip``: "add" (the right sum), "none" (dx through the branch alone) or
    "replace" (dx the skip's gradient alone); ``skip_masked=False`` sends the
    incoming gradient down the skip without the block's ReLU mask. None when a
    mask does not fit its place (a learner's code would have raised).
    """
    x, w1, w2, _, h, _ = e.cache
    masks, dy = _masks(e), e.dout["y"]
    if masks[final].shape != dy.shape or masks[inner].shape != h.shape:
        return None
    ds = dy * (masks[final] > 0)
    dh = ds @ w2.T
    da = dh * (masks[inner] > 0)
    branch = da @ w1.T
    through_skip = ds if skip_masked else dy
    dx = {"add": branch + through_skip, "none": branch, "replace": through_skip}[skip]
    return dx, x.T @ da, da.sum(axis=0), h.T @ ds, ds.sum(axis=0)


def _yours_are(e, gradients):
    names = ("dx", "dw1", "db1", "dw2", "db2")
    return gradients is not None and all(e.close(e.yours[n], g) for n, g in zip(names, gradients))


def _skip_forgotten(e):
    return not e.right_one("dx") and e.close(e.yours["dx"], _chain(e, skip="none")[0])


def _skip_replaces(e):
    return not e.right_one("dx") and e.close(e.yours["dx"], _chain(e, skip="replace")[0])


def _skip_unmasked(e):
    return not e.right_one("dx") and e.close(e.yours["dx"], _chain(e, skip_masked=False)[0])


def _final_mask_wrong(e):
    """The block's ReLU masked by another array than ``s`` (the inner mask right or wrong too)."""
    return any(_yours_are(e, _chain(e, final=f, inner=i)) for f in ("z", "x", "a") for i in ("a", "s", "z", "x"))


def _inner_mask_wrong(e):
    """The inner ReLU masked by another array than ``a`` (possible when K = C)."""
    return any(_yours_are(e, _chain(e, final=f, inner=i)) for i in ("s", "z", "x") for f in ("s", "z", "x", "a"))


RESIDUAL = Exercise(
    name="residual", title="A residual block",
    inputs=("x", "w1", "b1", "w2", "b2"), outputs=("y",),
    make_op=_residual_op, make_reference=_residual_reference, forward=forward.residual_forward,
    cases=(
        Case("N=4, C=3, K=3 (equal widths, as ResNet's basic block)", _inputs(4, 3, 3)),
        Case("a batch of 1, C=4, K=4", _inputs(1, 4, 4),
             hint=("with N = 1 the weight gradients are outer products of one row each",)),
        Case("N=5, C=3, K=6 (a wider inner layer: w1 is (3, 6), w2 is (6, 3))", _inputs(5, 3, 6),
             hint=("K differs from C here: a mask of the wrong width, or a transposed weight, shows now",
                   "a has K columns, s has C: each ReLU's mask has the shape of its own pre-activation")),
    ),
    hints={
        "dx": ("x reaches s by two roads, the branch and the skip connection: its gradient has a term for each",
               "after the block's ReLU (5b) the sum (4b) hands the same gradient to both of its inputs; follow the "
               "branch back through 3b, 2b and 1b, then add what came straight down the skip",
               "ds = dy * (s > 0), da = (ds @ w2.T) * (a > 0); dx = da @ w1.T + ds"),
        "dw1": ("w1 is used once, by the inner dense layer, on x",
                "bring the gradient back to a first: the block's ReLU, the sum, w2, then the inner ReLU",
                "dw1 = x.T @ da, da = (ds @ w2.T) * (a > 0), ds = dy * (s > 0)"),
        "db1": ("b1 is added to every row of a",
                "sum the gradient of a over the batch",
                "db1 = da.sum(axis=0), da = (ds @ w2.T) * (a > 0)"),
        "dw2": ("w2 multiplies h, and its output is added to x before the block's ReLU",
                "the gradient of z is the gradient of s: the sum passes it on unchanged; pair it with h",
                "dw2 = h.T @ ds, ds = dy * (s > 0)"),
        "db2": ("b2 is added to every row of z, which the sum passes on to s",
                "sum the gradient of s over the batch",
                "db2 = ds.sum(axis=0), ds = dy * (s > 0)"),
    },
    mistakes=(
        Mistake("the skip's gradient is forgotten: dx flows through the branch only", _skip_forgotten,
                ("s = x + z: x is one of the two terms of the sum, not only the input of the branch; the sum sends "
                 "its gradient to x directly as well",
                 "after 4b, x receives two gradients: one back through w2, the inner ReLU and w1, and the gradient "
                 "of s itself, straight down the skip; add them",
                 "dx = da @ w1.T + ds, ds = dy * (s > 0), da = (ds @ w2.T) * (a > 0)")),
        Mistake("the skip's gradient replaces the branch's instead of adding to it: dx is the skip's alone",
                _skip_replaces,
                ("x reaches the output by both roads at once: yours keeps the skip's gradient and drops the "
                 "branch's: the second assignment overwrote the first where += belongs",
                 "compute the branch's gradient of x and the skip's, and return their sum",
                 "dx = da @ w1.T + ds, ds = dy * (s > 0), da = (ds @ w2.T) * (a > 0)")),
        Mistake("the block's ReLU mask is not applied on the skip path: the skip gets dy, not the gradient of s",
                _skip_unmasked,
                ("the block's ReLU comes after the sum: the skip connection starts at s, behind the ReLU, so what "
                 "goes down it has been through the ReLU's backward too",
                 "the gradient of s (dy masked where s <= 0) is what both roads of the sum receive, the skip's "
                 "included",
                 "dx = da @ w1.T + ds, with ds = dy * (s > 0) on both terms")),
        Mistake("the block's ReLU mask is taken from the wrong pre-activation: it is s > 0, with s = x + z",
                _final_mask_wrong,
                ("the block's ReLU reads the sum s = x + z, not the branch's output z, nor x, nor a: its mask is "
                 "where that sum is positive",
                 "mask the incoming gradient with s > 0 (s is in the cache), once, and send the result down both "
                 "roads",
                 "ds = dy * (s > 0)")),
        Mistake("the inner ReLU's mask is taken from the wrong pre-activation: it is a > 0, with a = x @ w1 + b1",
                _inner_mask_wrong,
                ("each ReLU's mask comes from its own input: the inner ReLU read a, the inner layer's output",
                 "mask the gradient of h with a > 0 (a is in the cache): K columns, as a has",
                 "da = (ds @ w2.T) * (a > 0)")),
    ),
)
