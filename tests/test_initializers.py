"""Initializers: Keras's distributions, seeded through scratchnet.random."""
from __future__ import annotations

import numpy as np
import pytest

import scratchnet as sn

I = sn.initializers


def test_constant_zeros_and_ones_fill_the_shape_in_the_dtype():
    assert I.zeros()((2, 3)).dtype == np.float32 and not I.zeros()((2, 3)).any()
    np.testing.assert_array_equal(I.ones()((4,), "float64"), np.ones(4))
    np.testing.assert_array_equal(I.constant(0.1)((2,)), np.float32([0.1, 0.1]))


def test_random_normal_and_uniform_have_the_requested_moments_and_range():
    sn.random.seed(1)
    x = I.random_normal(mean=1.0, stddev=0.5)((200, 100), "float64")
    assert x.mean() == pytest.approx(1.0, abs=0.01) and x.std() == pytest.approx(0.5, rel=0.02)
    u = I.random_uniform(-0.2, 0.3)((200, 100))
    assert u.min() >= -0.2 and u.max() <= 0.3
    assert u.mean() == pytest.approx(0.05, abs=0.005)
    keras_default = I.get("uniform")((100, 100))  # Embedding's default
    assert np.abs(keras_default).max() <= 0.05


def test_truncated_normal_stays_within_two_standard_deviations():
    sn.random.seed(2)
    x = I.truncated_normal(stddev=0.1)((300, 100), "float64")
    assert np.abs(x).max() <= 0.2
    # A standard normal cut at +-2 has standard deviation 0.8796.
    assert x.std() == pytest.approx(0.1 * 0.8796, rel=0.02)
    assert np.abs(x).max() > 0.19, "the tails up to the cut are still drawn"


def test_glorot_uniform_uses_kerass_fans_for_matrices_and_conv_kernels():
    sn.random.seed(3)
    w = I.glorot_uniform()((300, 100), "float64")
    limit = np.sqrt(6 / 400)
    assert np.abs(w).max() <= limit and np.abs(w).max() > 0.99 * limit
    assert w.var() == pytest.approx(limit**2 / 3, rel=0.03)
    k = I.glorot_uniform()((5, 5, 4, 32), "float64")  # fan_in 100, fan_out 800
    assert np.abs(k).max() <= np.sqrt(6 / 900) and np.abs(k).max() > 0.99 * np.sqrt(6 / 900)
    assert I.compute_fans((5, 5, 4, 32)) == (100, 800)


def test_he_and_glorot_normal_have_kerass_variance():
    sn.random.seed(4)
    assert I.he_normal()((400, 200), "float64").std() == pytest.approx(np.sqrt(2 / 400), rel=0.03)
    assert I.glorot_normal()((400, 200), "float64").std() == pytest.approx(np.sqrt(2 / 600), rel=0.03)


@pytest.mark.parametrize("shape", [(6, 6), (8, 3), (3, 8), (2, 3, 12)], ids=["square", "tall", "wide", "rank3"])
def test_orthogonal_has_orthonormal_rows_or_columns(shape):
    q = I.orthogonal()(shape, "float64").reshape(-1, shape[-1])
    small = min(q.shape)
    gram = q.T @ q if q.shape[0] >= q.shape[1] else q @ q.T
    np.testing.assert_allclose(gram, np.eye(small), atol=1e-12)
    np.testing.assert_allclose(I.orthogonal(gain=2.0, seed=0)((4, 4)) @ I.orthogonal(gain=2.0, seed=0)((4, 4)).T,
                               4 * np.eye(4), atol=1e-5)


def test_global_seed_makes_initial_weights_reproducible():
    def fresh_weights(seed=42):
        sn.random.seed(seed)
        model = sn.Sequential([sn.layers.Embedding(5, 3), sn.layers.LSTM(4), sn.layers.Dense(2)])
        model.build((None, 3))
        return model.get_weights()

    first, second = fresh_weights(), fresh_weights()
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(fresh_weights(43)[0], first[0]), "another seed, other weights"
    sn.random.seed(42)
    a = I.random_normal()((3,))
    b = I.random_normal()((3,))
    assert not np.array_equal(a, b), "successive draws from the global generator differ"


def test_an_initializer_with_its_own_seed_ignores_the_global_generator():
    sn.random.seed(0)
    a = I.truncated_normal(0.1, seed=7)((4, 4))
    sn.random.seed(99)
    b = I.truncated_normal(0.1, seed=7)((4, 4))
    np.testing.assert_array_equal(a, b)


def test_lstm_forget_gate_bias_starts_at_one_as_in_keras():
    layer = sn.layers.LSTM(3)
    layer.forward(np.zeros((1, 2, 4), dtype=np.float32))
    np.testing.assert_array_equal(sn.to_numpy(layer.bias.value), [0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0])


def test_layers_accept_initializers_by_name_object_or_callable():
    layer = sn.layers.Dense(2, kernel_initializer=lambda shape, dtype: np.full(shape, 3.0, dtype), bias_initializer="ones")
    layer.forward(np.zeros((1, 2), dtype=np.float32))
    np.testing.assert_array_equal(layer.get_weights()[0], np.full((2, 2), 3.0))
    np.testing.assert_array_equal(layer.get_weights()[1], [1, 1])
    assert I.get(I.serialize(I.truncated_normal(0.3, seed=1))).get_config() == {"mean": 0.0, "stddev": 0.3, "seed": 1}
    with pytest.raises(ValueError, match="unknown initializer 'xavier'"):
        I.get("xavier")
    with pytest.raises(ValueError, match="stddev must be positive"):
        I.random_normal(stddev=0)


@pytest.mark.parametrize("make", [I.orthogonal, I.glorot_uniform, I.glorot_normal, I.he_normal, I.random_normal,
                                  I.truncated_normal, I.zeros], ids=lambda f: f.__name__)
@pytest.mark.parametrize("shape", [(4, 16), (16, 4), (3, 3, 2, 8)], ids=["wide", "tall", "conv"])
def test_every_initializer_returns_a_row_major_array(make, shape):
    """A weight's layout picks the BLAS kernel (NN or NT) and so its rounding; a checkpoint restores row-major
    arrays, so a weight born column-major (Orthogonal's transposed draw, before the fix) made a resumed run of a
    recurrent model round differently from an uninterrupted one (seen as a failed resume test on an AVX-512
    machine)."""
    for dtype in ("float32", "float64"):
        assert make()(shape, dtype).flags["C_CONTIGUOUS"]
