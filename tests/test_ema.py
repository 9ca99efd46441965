"""Exponential moving averages, checked against tf.train.ExponentialMovingAverage."""
from __future__ import annotations

import numpy as np
import pytest

import scratchnet as sn
from helpers import assert_close, load_tensorflow


class Param:
    def __init__(self, name, value, trainable=True):
        self.name, self.value, self.grad, self.trainable = name, value, None, trainable


class Model:
    def __init__(self, params):
        self._params = params

    def parameters(self):
        return iter(self._params)


def _trajectory():
    rng = np.random.default_rng(5)
    return [[rng.standard_normal(s).astype(np.float32) for s in [(3, 2), (2,)]] for _ in range(6)]


@pytest.mark.parametrize("with_num_updates", [False, True], ids=["fixed_decay", "num_updates"])
def test_shadows_match_tensorflow_over_several_updates(backend, with_num_updates):
    tf_ = load_tensorflow()
    values = _trajectory()
    step = tf_.Variable(0, dtype=tf_.int64)
    tf_ema = tf_.train.ExponentialMovingAverage(0.99, num_updates=step if with_num_updates else None)
    tf_vars = [tf_.Variable(v) for v in values[0]]

    count = [0]
    ema = sn.ExponentialMovingAverage(0.99, num_updates=(lambda: count[0]) if with_num_updates else None)
    params = [Param(f"v{i}", backend.xp.asarray(v)) for i, v in enumerate(values[0])]

    for t, vs in enumerate(values):
        step.assign(t * 100)
        count[0] = t * 100
        for v, p, new in zip(tf_vars, params, vs):
            v.assign(new)
            p.value = backend.xp.asarray(new)
        tf_ema.apply(tf_vars)
        ema.apply(params)
    for v, p in zip(tf_vars, params):
        assert_close(sn.to_numpy(ema.average(p)), tf_ema.average(v).numpy(), np.float32, p.name)


def test_the_tutorial_example_moves_a_zero_shadow_to_0_1():
    """Seed 002: v = 0, shadow made; v = 10; one update with decay 0.99 -> 0.1."""
    v = Param("v", np.zeros((), np.float32))
    ema = sn.ExponentialMovingAverage(0.99)
    ema.apply([v])
    v.value = np.float32(10.0) + np.zeros((), np.float32)
    ema.apply([v])
    assert float(ema.average(v)) == pytest.approx(0.1, rel=1e-5)


def test_num_updates_caps_the_decay_early_in_training():
    ema = sn.ExponentialMovingAverage(0.99, num_updates=0)
    assert ema.decay_at() == pytest.approx(0.1)
    assert ema.decay_at(num_updates=10_000) == 0.99
    assert sn.ExponentialMovingAverage(0.99).decay_at() == 0.99
    assert sn.ExponentialMovingAverage(0.99).decay_at(num_updates=8) == pytest.approx(0.5)


def test_averaged_swaps_the_averages_in_and_always_restores_the_weights():
    a, b = Param("a", np.ones(2)), Param("b", np.full(2, 7.0))
    ema = sn.ExponentialMovingAverage(0.5)
    ema.apply([a])
    a.value = np.full(2, 3.0)
    ema.apply([a])  # shadow of a: 2
    trained = a.value
    with pytest.raises(RuntimeError):
        with ema.averaged(Model([a, b])):
            np.testing.assert_array_equal(a.value, [2.0, 2.0])
            np.testing.assert_array_equal(b.value, [7.0, 7.0])  # no shadow: unchanged
            a.value += 100  # must not reach the shadow
            raise RuntimeError
    assert a.value is trained
    np.testing.assert_array_equal(ema.average(a), [2.0, 2.0])


def test_variables_to_restore_names_shadows_of_trainable_parameters_only():
    w, frozen = Param("layer1/weights", np.ones(2)), Param("counts", np.ones(2), trainable=False)
    mapping = sn.ExponentialMovingAverage(0.99).variables_to_restore(Model([w, frozen]))
    assert mapping == {"layer1/weights/ExponentialMovingAverage": w, "counts": frozen}


def test_state_dict_round_trip_and_unknown_average_error(backend):
    p = Param("w", backend.xp.asarray(np.arange(3, dtype=np.float32)))
    ema = sn.ExponentialMovingAverage(0.9)
    ema.apply([p])
    state = ema.state_dict()
    assert isinstance(state["w"], np.ndarray)
    other = sn.ExponentialMovingAverage(0.9)
    other.load_state_dict(state)
    np.testing.assert_array_equal(sn.to_numpy(other.average(p)), np.arange(3))
    with pytest.raises(ValueError, match=r"no average for 'x' \(averaged: w\)"):
        other.average(Param("x", p.value))


def test_bad_decay_or_num_updates_is_an_error():
    with pytest.raises(ValueError, match="ExponentialMovingAverage: decay must be a number in"):
        sn.ExponentialMovingAverage(1.5)
    with pytest.raises(ValueError, match="num_updates must be a non-negative int"):
        sn.ExponentialMovingAverage(0.9, num_updates=-1)
