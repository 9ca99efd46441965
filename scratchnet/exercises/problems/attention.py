"""Scaled dot-product attention's backward, masks included, with the mistakes students make in it."""
from __future__ import annotations

import numpy as np

from ... import ops
from .. import forward
from .base import Case, Exercise, Mistake, _normal


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
