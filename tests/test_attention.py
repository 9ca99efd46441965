"""Scaled dot-product attention (``sn.ops.attention``) against TensorFlow, finite differences and its own rules.

TensorFlow referees the output and all three gradients, written as Keras's
``MultiHeadAttention`` computes it (``softmax(scale * q k^T + mask)`` then
``@ v``), with the masked scores set to ``-inf`` so that a masked key gets
exactly no weight (Keras adds ``-1e9``, which is the same up to
``exp(-1e9)``).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import scratchnet as sn
from helpers import assert_close, load_tensorflow, to_backend
from scratchnet.gradcheck import check_op

DTYPES = [np.float32, np.float64]
DTYPE_IDS = ["float32", "float64"]


def make(shape_q, shape_k, dv, dtype, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    q = (scale * rng.standard_normal(shape_q)).astype(dtype)
    k = (scale * rng.standard_normal(shape_k)).astype(dtype)
    v = rng.standard_normal(shape_k[:-1] + (dv,)).astype(dtype)
    dy = rng.standard_normal(shape_q[:-1] + (dv,)).astype(dtype)
    return q, k, v, dy


def tf_attention(q, k, v, dy, allowed=None, scale=None):
    tf = load_tensorflow()
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    tq, tk, tv = (tf.constant(a) for a in (q, k, v))
    with tf.GradientTape() as tape:
        tape.watch([tq, tk, tv])
        s = tf.matmul(tq, tk, transpose_b=True) * tf.constant(scale, dtype=tq.dtype)
        if allowed is not None:
            s = tf.where(tf.constant(np.broadcast_to(allowed, s.shape)), s, tf.constant(-np.inf, dtype=s.dtype))
        y = tf.matmul(tf.nn.softmax(s, axis=-1), tv)
        loss = tf.reduce_sum(y * dy)
    grads = tape.gradient(loss, [tq, tk, tv])
    return y.numpy(), [g.numpy() for g in grads]


def run(backend, q, k, v, dy, **kwargs):
    y, backprop = sn.ops.attention(*to_backend(backend, q, k, v), **kwargs)
    grads = backprop(to_backend(backend, dy))
    return sn.to_numpy(y), [sn.to_numpy(g) for g in grads]


CASES = {
    # (q shape, k shape, dv)
    "one head": ((3, 5, 8), (3, 7, 8), 6),
    "heads": ((2, 4, 6, 16), (2, 4, 6, 16), 16),
    "one query": ((2, 1, 4), (2, 9, 4), 3),
    "depth 1": ((2, 5, 1), (2, 5, 1), 2),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", list(CASES))
def test_attention_matches_tensorflow(backend, case, dtype):
    shape_q, shape_k, dv = CASES[case]
    q, k, v, dy = make(shape_q, shape_k, dv, dtype)
    y, grads = run(backend, q, k, v, dy)
    y_tf, grads_tf = tf_attention(q, k, v, dy)
    assert_close(y, y_tf, dtype, "y")
    for name, g, g_tf in zip(("dq", "dk", "dv"), grads, grads_tf):
        assert g.dtype == dtype and g.shape == g_tf.shape
        assert_close(g, g_tf, dtype, name)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_causal_and_padding_masks_match_tensorflow(backend, dtype):
    """A causal mask and a key-padding mask ([N, 1, Tk], broadcast over the queries), alone and together."""
    q, k, v, dy = make((3, 6, 8), (3, 6, 8), 5, dtype, seed=1)
    causal = np.tril(np.ones((6, 6), bool))
    padding = np.ones((3, 1, 6), bool)
    padding[1, :, 4:] = False  # the second sequence has 4 real steps
    padding[2, :, 1:] = False  # the third has 1
    for kwargs, allowed in (({"causal": True}, causal), ({"mask": padding}, padding),
                            ({"mask": padding, "causal": True}, causal & padding)):
        y, grads = run(backend, q, k, v, dy, **{key: to_backend(backend, val) if key == "mask" else val
                                                for key, val in kwargs.items()})
        y_tf, grads_tf = tf_attention(q, k, v, dy, allowed)
        assert_close(y, y_tf, dtype, f"y {sorted(kwargs)}")
        for name, g, g_tf in zip(("dq", "dk", "dv"), grads, grads_tf):
            assert_close(g, g_tf, dtype, f"{name} {sorted(kwargs)}")


def test_a_masked_key_gets_no_weight_and_no_gradient(backend):
    """Changing a masked key or value changes nothing: not y, not any gradient; its own gradients are 0."""
    q, k, v, dy = make((2, 3, 4), (2, 5, 4), 3, np.float64, seed=2)
    mask = np.ones((2, 1, 5), bool)
    mask[:, :, 3] = False
    y1, g1 = run(backend, q, k, v, dy, mask=to_backend(backend, mask))
    k2, v2 = k.copy(), v.copy()
    k2[:, 3] = 1e6
    v2[:, 3] = -1e6
    y2, g2 = run(backend, q, k2, v2, dy, mask=to_backend(backend, mask))
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(g1[0], g2[0])
    assert not g1[1][:, 3].any() and not g1[2][:, 3].any()


def test_large_scores_stay_finite(backend):
    """Scores of 1e4 (softmax of raw exps would overflow) give TensorFlow's answer."""
    q, k, v, dy = make((2, 4, 8), (2, 4, 8), 3, np.float32, seed=3, scale=40.0)
    y, grads = run(backend, q, k, v, dy)
    y_tf, grads_tf = tf_attention(q, k, v, dy)
    assert np.isfinite(y).all() and all(np.isfinite(g).all() for g in grads)
    assert_close(y, y_tf, np.float32, "y")


def test_float64_finite_differences():
    """On the reference backend in float64: every gradient against central differences, with a mask and a scale."""
    rng = np.random.default_rng(4)
    q, k, v = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 4)), rng.standard_normal((2, 5, 2))
    mask = rng.random((2, 3, 5)) > 0.3
    mask[:, :, 0] = True
    with sn.use_backend("numpy"):
        assert check_op(lambda q, k, v: sn.ops.attention(q, k, v, mask=mask, scale=0.7), q, k, v, mode="full").passed


def test_dropout_on_the_weights_is_inverted_dropout_of_p(backend):
    """With a seed, the output is (p * m) @ v for dropout's own mask m: the same seed, the same mask; and the
    backward is the no-dropout backward with m applied to dp, checked by finite differences at fixed seed."""
    q, k, v, dy = make((2, 3, 4), (2, 6, 4), 3, np.float64, seed=5)
    y_a, g_a = run(backend, q, k, v, dy, dropout_rate=0.5, seed=11)
    y_b, g_b = run(backend, q, k, v, dy, dropout_rate=0.5, seed=11)
    np.testing.assert_array_equal(y_a, y_b)
    y0, _ = run(backend, q, k, v, dy)
    assert not np.allclose(y_a, y0)
    with sn.use_backend("numpy"):
        assert check_op(lambda q, k, v: sn.ops.attention(q, k, v, dropout_rate=0.5, seed=11), q, k, v,
                        mode="full").passed


@pytest.mark.parametrize("call, message", [
    (lambda q, k, v: sn.ops.attention(q, k[:, :, :3], v), "q and k must have one depth"),
    (lambda q, k, v: sn.ops.attention(q, k, v[:, :4]), "k and v must have one length"),
    (lambda q, k, v: sn.ops.attention(q[0], k, v), "one rank >= 2"),
    (lambda q, k, v: sn.ops.attention(q, k[:1], v[:1]), "share their leading dimensions"),
    (lambda q, k, v: sn.ops.attention(q, k, v, mask=np.ones((2, 3, 5))), "mask must be boolean"),
    (lambda q, k, v: sn.ops.attention(q, k, v, mask=np.ones((2, 3, 4), bool)), "does not broadcast"),
    (lambda q, k, v: sn.ops.attention(q, k, v, mask=np.zeros((2, 3, 5), bool)), "no key to attend to"),
    (lambda q, k, v: sn.ops.attention(q, k, v, scale=0.0), "scale must be a positive finite number"),
    (lambda q, k, v: sn.ops.attention(q, k, v, scale=float("nan")), "scale must be a positive finite number"),
    (lambda q, k, v: sn.ops.attention(q, k, v, causal="yes"), "causal must be True or False"),
    (lambda q, k, v: sn.ops.attention(q, k, v, dropout_rate=1.0), "dropout_rate"),
    (lambda q, k, v: sn.ops.attention(q, k.astype(np.float32), v), "all inputs must share one dtype"),
])
def test_bad_arguments_are_one_clear_error(call, message):
    rng = np.random.default_rng(6)
    q, k, v = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 4)), rng.standard_normal((2, 5, 2))
    with sn.use_backend("numpy"), pytest.raises(ValueError, match="attention") as info:
        call(q, k, v)
    assert message in str(info.value)


def test_causal_with_fewer_queries_than_keys_refuses_nothing_it_can_do(backend):
    """Causal attention is top-left aligned (query i sees keys 0..i), as Keras's use_causal_mask and PyTorch's
    is_causal: with Tq < Tk every query still has a key; its answer is TensorFlow's with the same triangle."""
    q, k, v, dy = make((2, 3, 4), (2, 6, 4), 2, np.float64, seed=7)
    y, grads = run(backend, q, k, v, dy, causal=True)
    y_tf, grads_tf = tf_attention(q, k, v, dy, np.tril(np.ones((3, 6), bool)))
    assert_close(y, y_tf, np.float64, "y")
    for g, g_tf in zip(grads, grads_tf):
        assert_close(g, g_tf, np.float64)
