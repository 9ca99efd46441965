"""softmax_cross_entropy against TensorFlow's fused losses, finite differences, Numba parity."""
from __future__ import annotations

import numpy as np
import pytest

import scratchnet as sn
from helpers import assert_close, load_tensorflow, to_backend
from scratchnet.gradcheck import check_op

DTYPES = [np.float32, np.float64]


def tf_reference(logits, labels, dloss):
    """Mean loss and ``dloss * d(mean loss)/d(logits)`` from TensorFlow."""
    tf_ = load_tensorflow()
    logits_t = tf_.constant(logits)
    with tf_.GradientTape() as tape:
        tape.watch(logits_t)
        if labels.dtype.kind in "iu":
            losses = tf_.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits_t)
        else:
            losses = tf_.nn.softmax_cross_entropy_with_logits(labels=labels, logits=logits_t)
        loss = tf_.reduce_mean(losses)
    return loss.numpy(), (dloss * tape.gradient(loss, logits_t)).numpy()


def make_case(kind, shape, dtype, scale=3.0, seed=0):
    rng = np.random.default_rng(seed)
    logits = (scale * rng.standard_normal(shape)).astype(dtype)
    K = shape[-1]
    if kind == "ids":
        labels = rng.integers(0, K, size=shape[:-1])
    else:
        labels = rng.random(shape)
        labels = (labels / labels.sum(axis=-1, keepdims=True)).astype(dtype)
    return logits, labels


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("kind", ["ids", "distribution"])
@pytest.mark.parametrize("shape", [(6, 5), (2, 3, 7), (1, 1)], ids=["rank2", "rank3_sequence", "single"])
def test_softmax_cross_entropy_matches_tensorflow_mean(backend, kind, shape, dtype):
    logits, labels = make_case(kind, shape, dtype)
    loss, bp = sn.ops.softmax_cross_entropy(*to_backend(backend, logits, labels))
    dlogits = bp(0.7)
    want_loss, want_dlogits = tf_reference(logits, labels, 0.7)
    assert dlogits.dtype == dtype and dlogits.shape == logits.shape
    assert_close(float(loss), want_loss, dtype, "loss")
    assert_close(sn.to_numpy(dlogits), want_dlogits, dtype, "dlogits")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("kind", ["ids", "distribution"])
def test_softmax_cross_entropy_stays_finite_and_exact_for_logits_of_1e4(backend, kind, dtype):
    logits, labels = make_case(kind, (4, 3), dtype)
    logits[:] = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [-1e4, -1e4, -1e4], [1e4, 1e4 - 5, -1e4]], dtype)
    if kind == "ids":
        labels[:] = [1, 0, 2, 1]  # the first two have probability exp(-2e4) and exp(-1e4 - log 2)
    loss, bp = sn.ops.softmax_cross_entropy(*to_backend(backend, logits, labels))
    dlogits = sn.to_numpy(bp())
    want_loss, want_dlogits = tf_reference(logits, labels, 1.0)
    assert np.isfinite(float(loss)) and np.all(np.isfinite(dlogits))
    assert_close(float(loss), want_loss, dtype, "loss")
    assert_close(dlogits, want_dlogits, dtype, "dlogits")


def test_softmax_cross_entropy_backprop_defaults_to_dloss_one_and_scales_with_it(backend):
    logits, labels = make_case("ids", (5, 4), np.float64)
    _, bp = sn.ops.softmax_cross_entropy(*to_backend(backend, logits, labels))
    one = sn.to_numpy(bp())
    assert_close(sn.to_numpy(bp(2.5)), 2.5 * one, np.float64)
    assert_close(sn.to_numpy(bp(to_backend(backend, np.array(-3.0)))), -3.0 * one, np.float64)
    # Each row of (softmax - onehot) sums to 0, and the mean divides by the 5 rows.
    np.testing.assert_allclose(one.sum(axis=1), 0, atol=1e-15)
    assert np.argmin(one, axis=1).tolist() == labels.tolist()


@pytest.mark.parametrize("kind", ["ids", "distribution"])
def test_softmax_cross_entropy_gradient_matches_finite_differences(kind):
    logits, labels = make_case(kind, (3, 2, 5), np.float64, seed=1)
    with sn.use_backend("numpy"):
        check_op(lambda logits: sn.ops.softmax_cross_entropy(logits, labels), logits, dy=1.0)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("kind", ["ids", "distribution"])
def test_numba_loss_kernels_match_the_reference(kind, dtype):
    logits, labels = make_case(kind, (40, 9), dtype, scale=20.0)
    logits[0, :] = [1e4, -1e4, 0, 0, 0, 0, 0, 0, 0]
    with sn.use_backend("numpy") as ref, sn.use_backend("numba") as fast:
        want = ref.softmax_cross_entropy_forward(logits, labels)
        got = fast.softmax_cross_entropy_forward(logits, labels)
        for name, g, w in zip(("losses", "probs"), got, want):
            assert g.dtype == dtype, name
            assert_close(g, w, dtype, name)
        probs = want[1]
        assert_close(fast.softmax_cross_entropy_backward(probs, labels, 0.25), ref.softmax_cross_entropy_backward(probs, labels, 0.25), dtype)


def test_softmax_cross_entropy_does_not_mutate_its_inputs(backend):
    logits, labels = make_case("ids", (5, 4), np.float32)
    lg, lb = to_backend(backend, logits, labels)
    _, bp = sn.ops.softmax_cross_entropy(lg, lb)
    bp(2.0)
    np.testing.assert_array_equal(sn.to_numpy(lg), logits)
    np.testing.assert_array_equal(sn.to_numpy(lb), labels)


@pytest.mark.parametrize(
    "logits, labels, message",
    [
        (np.zeros((3, 4), np.float32), np.array([0, 1, 4]), r"softmax_cross_entropy: labels must lie in \[0, 4\) \(logits have 4 classes\), found 4"),
        (np.zeros((3, 4), np.float32), np.array([0, -1, 2]), r"softmax_cross_entropy: labels must lie in \[0, 4\).*found -1"),
        (np.zeros((3, 4), np.float32), np.array([0, 1]), r"softmax_cross_entropy: integer labels must have shape logits.shape\[:-1\] = \(3,\), got \(2,\)"),
        (np.zeros((3, 4), np.float32), np.zeros((3, 5), np.float32), r"softmax_cross_entropy: float labels must have the logits' shape \(3, 4\), got \(3, 5\)"),
        (np.zeros((3, 4), np.float32), np.zeros((3, 4), np.float64), r"softmax_cross_entropy: labels is float64 but logits is float32"),
        (np.zeros((3, 4), np.float32), np.zeros(3, bool), r"softmax_cross_entropy: labels must be integer class ids or float distributions, got bool"),
        (np.zeros((3, 4), np.int32), np.array([0, 1, 2]), r"softmax_cross_entropy: logits must be float32 or float64"),
        (np.zeros((), np.float32), np.zeros((), np.int64), r"softmax_cross_entropy: logits must have rank >= 1"),
        (np.zeros((0, 4), np.float32), np.zeros(0, np.int64), r"softmax_cross_entropy: logits hold no positions"),
    ],
)
def test_softmax_cross_entropy_rejects_bad_input_naming_the_op(backend, logits, labels, message):
    with pytest.raises(ValueError, match=message):
        sn.ops.softmax_cross_entropy(*to_backend(backend, logits, labels))


def test_softmax_cross_entropy_backprop_rejects_a_non_scalar_dloss(backend):
    _, bp = sn.ops.softmax_cross_entropy(*to_backend(backend, np.zeros((3, 4), np.float32), np.array([0, 1, 2])))
    with pytest.raises(ValueError, match=r"softmax_cross_entropy: dloss must be a scalar, got shape \(3,\)"):
        bp(to_backend(backend, np.ones(3, np.float32)))
