"""dropout (inverted) and the global generator in scratchnet.random that draws its masks."""
from __future__ import annotations

import json

import numpy as np
import pytest

import scratchnet as sn
from helpers import to_backend

DTYPES = [np.float32, np.float64]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("rate", [0.2, 0.5, 0.9])
def test_dropout_keeps_about_1_minus_rate_and_scales_kept_units(backend, rate, dtype):
    x = np.full((200, 250), 3.0, dtype=dtype)
    y, _ = sn.ops.dropout(to_backend(backend, x), rate, seed=7)
    y = sn.to_numpy(y)
    assert y.dtype == dtype and y.shape == x.shape
    kept = y != 0
    # 50,000 Bernoulli draws: the kept fraction is within 4 sigma of 1 - rate.
    sigma = np.sqrt(rate * (1 - rate) / x.size)
    assert abs(kept.mean() - (1 - rate)) < 4 * sigma
    np.testing.assert_allclose(y[kept], 3.0 / (1 - rate), rtol=1e-6)
    # Inverted dropout preserves the mean, so inference needs no rescaling.
    assert abs(y.mean() - 3.0) < 4 * 3.0 / (1 - rate) * sigma


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_dropout_gradient_is_the_mask_times_dy(backend, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 40)).astype(dtype) + 5  # never 0, so y reveals the mask
    dY = rng.standard_normal((30, 40)).astype(dtype)
    y, bp = sn.ops.dropout(to_backend(backend, x), 0.3, seed=1)
    mask = sn.to_numpy(y) / x
    dX = sn.to_numpy(bp(to_backend(backend, dY)))
    assert dX.dtype == dtype
    np.testing.assert_allclose(dX, mask * dY, rtol=1e-6)
    kept = mask != 0
    assert 0 < kept.mean() < 1
    np.testing.assert_allclose(mask[kept], 1 / 0.7, rtol=1e-5)


def test_dropout_with_the_same_seed_draws_the_same_mask(backend):
    x = to_backend(backend, np.ones((50, 60), np.float32))
    a, _ = sn.ops.dropout(x, 0.5, seed=42)
    b, _ = sn.ops.dropout(x, 0.5, seed=42)
    c, _ = sn.ops.dropout(x, 0.5, seed=43)
    np.testing.assert_array_equal(sn.to_numpy(a), sn.to_numpy(b))
    assert not np.array_equal(sn.to_numpy(a), sn.to_numpy(c))


def test_dropout_masks_keep_each_backends_contract(backend):
    """What a seed promises, per backend.

    The CPU backends draw the mask with NumPy's generator: the numba backend's
    mask is the reference's, bit for bit. The GPU backend hashes ``(seed,
    index)`` on the device (``kernels/cuda/dropout.cu``), so its mask is not
    NumPy's; its promise is its own: the same mask for a seed on every run
    and every GPU (an integer hash, pinned here by its first 64 entries), in
    float32 and float64 alike, and a keep rate of ``1 - rate`` within a
    binomial tolerance.
    """
    x = np.ones((20, 30), np.float32)
    got = sn.to_numpy(sn.ops.dropout(to_backend(backend, x), 0.4, seed=5)[0])
    if backend.name != "cupy":
        with sn.use_backend("numpy"):
            want, _ = sn.ops.dropout(x, 0.4, seed=5)
        np.testing.assert_array_equal(got, want)
        return
    again = sn.to_numpy(sn.ops.dropout(to_backend(backend, x), 0.4, seed=5)[0])
    np.testing.assert_array_equal(got, again)
    as64 = sn.to_numpy(sn.ops.dropout(to_backend(backend, x.astype(np.float64)), 0.4, seed=5)[0])
    np.testing.assert_array_equal(got != 0, as64 != 0)
    assert np.packbits(got.reshape(-1)[:64] != 0).tobytes().hex() == GPU_MASK_SEED_5
    big = sn.to_numpy(sn.ops.dropout(to_backend(backend, np.ones((400, 500), np.float32)), 0.4, seed=5)[0])
    kept = np.mean(big != 0)
    assert abs(kept - 0.6) <= 5 * np.sqrt(0.4 * 0.6 / big.size)


# The first 64 keep/drop bits of kernels/cuda/dropout.cu's mask for seed 5, rate 0.4: the hash's own
# output (SplitMix64 of the seed and the index; a pure-Python SplitMix64 gives the same), the same
# on every GPU and on the host shim.
GPU_MASK_SEED_5 = "adadb55dbcedffea"


def test_dropout_without_a_seed_follows_the_global_seed(backend):
    x = to_backend(backend, np.ones((40, 50), np.float32))
    sn.random.seed(123)
    a, _ = sn.ops.dropout(x, 0.5)
    b, _ = sn.ops.dropout(x, 0.5)
    sn.random.seed(123)
    a2, _ = sn.ops.dropout(x, 0.5)
    np.testing.assert_array_equal(sn.to_numpy(a), sn.to_numpy(a2))
    assert not np.array_equal(sn.to_numpy(a), sn.to_numpy(b))  # successive calls differ


def test_dropout_rate_zero_is_the_identity_and_draws_nothing(backend):
    x = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    dY = np.arange(20, dtype=np.float32).reshape(4, 5)
    sn.random.seed(9)
    state = sn.random.get_state()
    y, bp = sn.ops.dropout(to_backend(backend, x), 0.0)
    np.testing.assert_array_equal(sn.to_numpy(y), x)
    np.testing.assert_array_equal(sn.to_numpy(bp(to_backend(backend, dY))), dY)
    assert sn.random.get_state() == state


def test_dropout_backprop_does_not_mutate_its_gradient(backend):
    _, bp = sn.ops.dropout(to_backend(backend, np.ones((6, 7), np.float32)), 0.5, seed=0)
    dY = to_backend(backend, np.ones((6, 7), np.float32))
    bp(dY)
    np.testing.assert_array_equal(sn.to_numpy(dY), 1.0)


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, "0.5", None, True])
def test_dropout_rejects_a_rate_outside_0_to_1(backend, rate):
    with pytest.raises(ValueError, match=r"dropout: rate must be a number in \[0, 1\)"):
        sn.ops.dropout(to_backend(backend, np.ones(3, np.float32)), rate)


def test_dropout_rejects_bad_input_naming_the_op(backend):
    with pytest.raises(ValueError, match=r"dropout: x must be float32 or float64, got int64"):
        sn.ops.dropout(to_backend(backend, np.ones(3, np.int64)), 0.5)
    with pytest.raises(ValueError, match=r"dropout: seed must be a non-negative int"):
        sn.ops.dropout(to_backend(backend, np.ones(3, np.float32)), 0.5, seed=1.5)
    _, bp = sn.ops.dropout(to_backend(backend, np.ones(3, np.float32)), 0.5, seed=0)
    with pytest.raises(ValueError, match=r"dropout: dy must have the output's shape \(3,\)"):
        bp(to_backend(backend, np.ones(4, np.float32)))


def test_random_state_round_trips_through_json():
    sn.random.seed(2024)
    sn.random.generator().random(10)
    state = json.loads(json.dumps(sn.random.get_state()))
    want = sn.random.generator().random(5)
    sn.random.generator().random(100)
    sn.random.set_state(state)
    np.testing.assert_array_equal(sn.random.generator().random(5), want)


def test_random_seed_makes_the_generator_reproducible():
    sn.random.seed(11)
    a = sn.random.generator().integers(0, 1000, 8)
    sn.random.seed(11)
    np.testing.assert_array_equal(sn.random.generator().integers(0, 1000, 8), a)


def test_random_rejects_bad_seeds_and_states():
    with pytest.raises(ValueError, match=r"random.seed: s must be an int"):
        sn.random.seed(1.5)
    with pytest.raises(ValueError, match=r"random.set_state: expected a dict"):
        sn.random.set_state([1, 2])
    with pytest.raises(ValueError, match=r"random.set_state: unknown bit generator 'Nope'"):
        sn.random.set_state({"bit_generator": "Nope"})


@pytest.mark.parametrize("rows", [(0, 3), (3, 7), (6, 7)])
def test_dropout_of_some_rows_of_a_global_batch_is_those_rows_of_the_global_mask(backend, rows):
    """Data parallelism: a rank passes the global batch's shape and its row offset, and draws the same mask."""
    start, stop = rows
    x = np.arange(1, 7 * 5 + 1, dtype=np.float64).reshape(7, 5)
    whole, _ = sn.ops.dropout(to_backend(backend, x), 0.5, seed=4)
    part, backprop = sn.ops.dropout(to_backend(backend, x[start:stop]), 0.5, seed=4, global_shape=(7, 5), offset=start)
    np.testing.assert_array_equal(sn.to_numpy(part), sn.to_numpy(whole)[start:stop])
    dx = sn.to_numpy(backprop(to_backend(backend, np.ones((stop - start, 5)))))
    np.testing.assert_array_equal(dx, sn.to_numpy(whole)[start:stop] / x[start:stop])


@pytest.mark.parametrize("global_shape, offset", [((7, 4), 0), ((7, 5), 5), ((7, 5), -1), ((2, 5), 0), ((7, 5), 1.0)])
def test_dropout_refuses_rows_that_are_not_part_of_the_global_batch(backend, global_shape, offset):
    with pytest.raises(ValueError, match="rows offset:offset"):
        sn.ops.dropout(to_backend(backend, np.ones((3, 5))), 0.5, seed=0, global_shape=global_shape, offset=offset)
