"""Optimizers and learning-rate schedules, checked against Keras 3 / TensorFlow over several steps."""
from __future__ import annotations

import functools

import numpy as np
import pytest

import scratchnet as sn
from helpers import assert_close, load_tensorflow

STEPS = 5
SHAPES = [(3, 4), (4,)]


class Param:
    """The part of ``sn.Parameter`` an optimizer uses."""

    def __init__(self, name, value, trainable=True):
        self.name, self.value, self.grad, self.trainable = name, value, None, trainable


def _problem(dtype):
    """Starting weights and a gradient per step; mixed signs and magnitudes."""
    rng = np.random.default_rng(7)
    w0 = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = [[(rng.standard_normal(s) * (1 + 3 * t)).astype(dtype) for s in SHAPES] for t in range(STEPS)]
    return w0, grads


def _run_ours(be, opt, dtype):
    w0, grads = _problem(dtype)
    params = [Param(f"p{i}", be.xp.asarray(w)) for i, w in enumerate(w0)]
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = be.xp.asarray(g)
        opt.step(params)
    return [sn.to_numpy(p.value) for p in params]


@functools.lru_cache(maxsize=None)
def _run_keras(case, dtype):
    tf_ = load_tensorflow()
    import keras

    w0, grads = _problem(dtype)
    opt = KERAS_CASES[case](keras)
    variables = [tf_.Variable(w) for w in w0]
    for step_grads in grads:
        opt.apply_gradients([(tf_.constant(g), v) for g, v in zip(step_grads, variables)])
    return [v.numpy() for v in variables]


# The same optimizer, built by scratchnet and by Keras.
OUR_CASES = {
    "sgd": lambda: sn.optimizers.SGD(0.1),
    "sgd_momentum": lambda: sn.optimizers.SGD(0.1, momentum=0.9),
    "sgd_nesterov": lambda: sn.optimizers.SGD(0.1, momentum=0.9, nesterov=True),
    "sgd_exponential_decay": lambda: sn.optimizers.SGD(sn.schedules.ExponentialDecay(0.5, 2, 0.5)),
    "adam": lambda: sn.optimizers.Adam(0.01),
    "adam_global_clipnorm": lambda: sn.optimizers.Adam(0.01, global_clipnorm=4.5),
    "rmsprop": lambda: sn.optimizers.RMSProp(0.01),
    "rmsprop_momentum": lambda: sn.optimizers.RMSProp(0.01, rho=0.8, momentum=0.5),
    "sgd_momentum_clipnorm": lambda: sn.optimizers.SGD(0.1, momentum=0.9, global_clipnorm=1.0),
    # Keras rounds the learning rate, momentum and betas to float32 before
    # casting them to a float64 variable's dtype, so the float64 cases use
    # hyperparameters that float32 holds exactly.
    "adam_f64": lambda: sn.optimizers.Adam(0.0625, beta_1=0.875, beta_2=0.9921875),
    "rmsprop_momentum_f64": lambda: sn.optimizers.RMSProp(0.0625, rho=0.75, momentum=0.5),
    "sgd_nesterov_f64": lambda: sn.optimizers.SGD(0.125, momentum=0.875, nesterov=True),
}
KERAS_CASES = {
    "sgd": lambda k: k.optimizers.SGD(0.1),
    "sgd_momentum": lambda k: k.optimizers.SGD(0.1, momentum=0.9),
    "sgd_nesterov": lambda k: k.optimizers.SGD(0.1, momentum=0.9, nesterov=True),
    "sgd_exponential_decay": lambda k: k.optimizers.SGD(k.optimizers.schedules.ExponentialDecay(0.5, 2, 0.5)),
    "adam": lambda k: k.optimizers.Adam(0.01),
    "adam_global_clipnorm": lambda k: k.optimizers.Adam(0.01, global_clipnorm=4.5),
    "rmsprop": lambda k: k.optimizers.RMSprop(0.01),
    "rmsprop_momentum": lambda k: k.optimizers.RMSprop(0.01, rho=0.8, momentum=0.5),
    "sgd_momentum_clipnorm": lambda k: k.optimizers.SGD(0.1, momentum=0.9, global_clipnorm=1.0),
    "adam_f64": lambda k: k.optimizers.Adam(0.0625, beta_1=0.875, beta_2=0.9921875),
    "rmsprop_momentum_f64": lambda k: k.optimizers.RMSprop(0.0625, rho=0.75, momentum=0.5),
    "sgd_nesterov_f64": lambda k: k.optimizers.SGD(0.125, momentum=0.875, nesterov=True),
}


@pytest.mark.parametrize("case", sorted(c for c in OUR_CASES if not c.endswith("_f64")))
def test_optimizer_matches_keras_over_several_steps(backend, case):
    ours = _run_ours(backend, OUR_CASES[case](), np.float32)
    for i, (a, b) in enumerate(zip(ours, _run_keras(case, np.float32))):
        assert_close(a, b, np.float32, f"{case} p{i}")


@pytest.mark.parametrize("case", sorted(c for c in OUR_CASES if c.endswith("_f64")))
def test_optimizer_matches_keras_in_float64(case):
    with sn.use_backend("numpy") as be:
        ours = _run_ours(be, OUR_CASES[case](), np.float64)
    for a, b in zip(ours, _run_keras(case, np.float64)):
        assert a.dtype == np.float64
        assert_close(a, b, np.float64, case)


def _run_tf1_momentum(nesterov, learning_rate):
    tf_ = load_tensorflow()
    w0, grads = _problem(np.float32)
    variables = [tf_.Variable(w) for w in w0]
    count = [0]
    opt = tf_.compat.v1.train.MomentumOptimizer(lambda: learning_rate(count[0]), momentum=0.9, use_nesterov=nesterov)
    for step_grads in grads:
        opt.apply_gradients([(tf_.constant(g), v) for g, v in zip(step_grads, variables)])
        count[0] += 1
    return [v.numpy() for v in variables]


@pytest.mark.parametrize("nesterov", [False, True], ids=["plain", "nesterov"])
def test_momentum_matches_tf1_momentum_optimizer_under_a_decaying_rate(backend, nesterov):
    schedule = sn.schedules.ExponentialDecay(0.1, 1, 0.5)
    ours = _run_ours(backend, sn.optimizers.Momentum(schedule, momentum=0.9, nesterov=nesterov), np.float32)
    for a, b in zip(ours, _run_tf1_momentum(nesterov, schedule)):
        assert_close(a, b, np.float32, "Momentum")


def test_momentum_equals_sgd_momentum_at_a_constant_rate_and_differs_when_it_decays():
    with sn.use_backend("numpy") as be:
        same = [_run_ours(be, cls(0.1, momentum=0.9), np.float64) for cls in (sn.optimizers.Momentum, sn.optimizers.SGD)]
        decay = sn.schedules.ExponentialDecay(0.1, 1, 0.5)
        differ = [_run_ours(be, cls(decay, momentum=0.9), np.float64) for cls in (sn.optimizers.Momentum, sn.optimizers.SGD)]
    np.testing.assert_allclose(same[0][0], same[1][0], rtol=1e-12)
    assert not np.allclose(differ[0][0], differ[1][0], rtol=1e-3)


def test_l2_regularised_loss_with_clipping_matches_tensorflow(backend):
    """``loss = <c, w> + scale * sum(w**2)`` under Adam with ``global_clipnorm`` (seed 004's 4.5)."""
    tf_ = load_tensorflow()
    import keras

    scale = 0.05
    rng = np.random.default_rng(3)
    w0 = (rng.standard_normal((6, 5)) * 3).astype(np.float32)
    cs = [(rng.standard_normal((6, 5)) * 2).astype(np.float32) for _ in range(STEPS)]

    v = tf_.Variable(w0)
    kopt = keras.optimizers.Adam(0.1, global_clipnorm=4.5)
    for c in cs:
        with tf_.GradientTape() as tape:
            loss = tf_.reduce_sum(c * v) + scale * tf_.reduce_sum(v * v)
        kopt.apply_gradients([(tape.gradient(loss, v), v)])

    p = Param("w", backend.xp.asarray(w0))
    opt = sn.optimizers.Adam(0.1, global_clipnorm=4.5)
    for c in cs:
        # What a layer's backprop plus regularization_backward accumulate.
        p.grad = backend.xp.asarray(c) + 2 * scale * p.value
        opt.step([p])
    assert_close(sn.to_numpy(p.value), v.numpy(), np.float32, "w")


def test_global_clipnorm_scales_all_gradients_by_one_factor():
    grads = [np.array([3.0, 0.0]), np.array([[4.0]])]  # global norm 5
    clipped = sn.optimizers.clip_by_global_norm(grads, 2.5)
    np.testing.assert_allclose(clipped[0], [1.5, 0.0])
    np.testing.assert_allclose(clipped[1], [[2.0]])
    unclipped = sn.optimizers.clip_by_global_norm(grads, 10.0)
    np.testing.assert_array_equal(unclipped[0], grads[0])
    assert unclipped[0] is not grads[0]


def test_global_clipnorm_turns_a_non_finite_norm_into_nan_as_tensorflow_does():
    clipped = sn.optimizers.clip_by_global_norm([np.array([np.inf, 1.0]), np.array([2.0])], 1.0)
    assert np.isnan(clipped[0]).all() and np.isnan(clipped[1]).all()


def test_step_never_modifies_the_gradients_and_skips_frozen_or_gradless_parameters():
    a = Param("a", np.ones(3, np.float32))
    frozen = Param("frozen", np.ones(3, np.float32), trainable=False)
    gradless = Param("gradless", np.ones(3, np.float32))
    a.grad = np.full(3, 10.0, np.float32)
    frozen.grad = np.full(3, 10.0, np.float32)
    opt = sn.optimizers.SGD(0.1, momentum=0.5, global_clipnorm=1.0)
    opt.step([a, frozen, gradless])
    np.testing.assert_array_equal(a.grad, np.full(3, 10.0))
    np.testing.assert_array_equal(frozen.value, np.ones(3))
    np.testing.assert_array_equal(gradless.value, np.ones(3))
    assert not np.array_equal(a.value, np.ones(3))
    assert opt.iterations == 1


def test_updates_happen_in_place_on_the_parameter_value():
    p = Param("p", np.ones(4, np.float32))
    before = p.value
    p.grad = np.ones(4, np.float32)
    sn.optimizers.Adam(0.1).step([p])
    assert p.value is before and p.value.dtype == np.float32


def test_apply_gradients_counts_iterations_and_learning_rate_now_follows_the_schedule():
    opt = sn.optimizers.SGD(sn.schedules.ExponentialDecay(1.0, 10, 0.1, staircase=True))
    p = Param("p", np.zeros(2))
    assert opt.learning_rate_now == 1.0
    for _ in range(10):
        opt.apply_gradients([(np.ones(2), p)])
    assert opt.iterations == 10
    assert opt.learning_rate_now == pytest.approx(0.1)
    np.testing.assert_allclose(p.value, [-10.0, -10.0])


def test_state_dict_round_trip_continues_exactly_like_the_original(backend):
    def fresh():
        return [Param("dense/kernel", backend.xp.ones((2, 3), np.float32)), Param("dense/bias", backend.xp.zeros(3, np.float32))]

    def train(opt, params, steps, start):
        for t in range(start, start + steps):
            for i, p in enumerate(params):
                p.grad = backend.xp.full(p.value.shape, np.float32(np.sin(t + i)))
            opt.step(params)

    opt, params = sn.optimizers.Adam(0.1), fresh()
    train(opt, params, 3, 0)
    state = opt.state_dict()
    assert set(state) == {"iterations", "dense/kernel:m", "dense/kernel:v", "dense/bias:m", "dense/bias:v"}
    assert all(isinstance(a, np.ndarray) for a in state.values())
    values = [sn.to_numpy(p.value) for p in params]
    train(opt, params, 2, 3)

    opt2, params2 = sn.optimizers.Adam(0.1), fresh()
    for p, v in zip(params2, values):
        p.value = backend.xp.asarray(v)
    opt2.load_state_dict(state)
    assert opt2.iterations == 3
    train(opt2, params2, 2, 3)
    for p, q in zip(params, params2):
        np.testing.assert_array_equal(sn.to_numpy(p.value), sn.to_numpy(q.value))


def test_load_state_dict_rejects_foreign_slots_and_changes_nothing():
    opt = sn.optimizers.Adam()
    with pytest.raises(ValueError, match=r"Adam.load_state_dict: unexpected entry 'w:momentum'"):
        opt.load_state_dict({"iterations": np.array(4), "w:momentum": np.zeros(2)})
    with pytest.raises(ValueError, match=r"'w' has slots \['m'\] but Adam needs \['m', 'v'\]"):
        opt.load_state_dict({"iterations": np.array(4), "w:m": np.zeros(2)})
    assert opt.iterations == 0 and opt.state_dict().keys() == {"iterations"}


def test_bad_hyperparameters_and_gradients_raise_errors_naming_them():
    with pytest.raises(ValueError, match="SGD: momentum must be a number in"):
        sn.optimizers.SGD(0.1, momentum=1.5)
    with pytest.raises(ValueError, match="Adam: learning_rate must be a positive number"):
        sn.optimizers.Adam(-1.0)
    with pytest.raises(ValueError, match="RMSProp: global_clipnorm must be a positive number"):
        sn.optimizers.RMSProp(global_clipnorm=0)
    p = Param("w", np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"gradient for 'w' has shape \(3, 2\) but the parameter has \(2, 3\)"):
        sn.optimizers.SGD().apply_gradients([(np.zeros((3, 2), np.float32), p)])


@pytest.mark.parametrize("staircase", [False, True], ids=["smooth", "staircase"])
def test_exponential_decay_matches_keras(staircase):
    load_tensorflow()
    import keras

    ours = sn.schedules.ExponentialDecay(0.8, 550, 0.99, staircase=staircase)
    theirs = keras.optimizers.schedules.ExponentialDecay(0.8, 550, 0.99, staircase=staircase)
    for step in [0, 1, 549, 550, 551, 1650, 30000]:
        assert ours(step) == pytest.approx(float(theirs(step)), rel=1e-6), step
    assert ours(549) != ours(0) if not staircase else ours(549) == ours(0)


def test_exponential_decay_rejects_non_positive_arguments():
    with pytest.raises(ValueError, match="ExponentialDecay: decay_steps must be a positive number, got 0"):
        sn.schedules.ExponentialDecay(0.1, 0, 0.9)


def test_a_real_model_with_l2_and_clipped_adam_matches_keras_fit_step_by_step():
    """Dense + L2 kernel regularizer, sparse cross-entropy, Adam with global_clipnorm: 4 steps, same weights."""
    tf_ = load_tensorflow()
    import keras

    rng = np.random.default_rng(11)
    x = rng.standard_normal((8, 5)).astype(np.float32) * 3
    y = rng.integers(0, 3, 8)
    w0 = [rng.standard_normal((5, 3)).astype(np.float32), rng.standard_normal(3).astype(np.float32)]

    with sn.use_backend("numpy"):
        model = sn.Sequential([sn.layers.Dense(3, kernel_regularizer=sn.regularizers.l2(0.05))])
        model.build((None, 5))
        model.set_weights(w0)
        model.compile(sn.optimizers.Adam(0.1, global_clipnorm=1.0), sn.losses.SparseCategoricalCrossentropy())
        for _ in range(4):
            model.train_on_batch(x, y)
        ours = model.get_weights()

    dense = keras.layers.Dense(3, kernel_regularizer=keras.regularizers.L2(0.05))
    dense.build((None, 5))
    dense.set_weights(w0)
    kopt = keras.optimizers.Adam(0.1, global_clipnorm=1.0)
    xent = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for _ in range(4):
        with tf_.GradientTape() as tape:
            loss = xent(y, dense(x)) + tf_.add_n(dense.losses)
        kopt.apply_gradients(zip(tape.gradient(loss, dense.trainable_variables), dense.trainable_variables))
    for a, b in zip(ours, dense.get_weights()):
        assert_close(a, b, np.float32, "dense")


@pytest.mark.parametrize("nesterov", [False, True], ids=["plain", "nesterov"])
@pytest.mark.parametrize("cls, kernel", [(sn.optimizers.SGD, "sgd_momentum_update"),
                                         (sn.optimizers.Momentum, "momentum_update")], ids=["sgd", "tf1"])
def test_momentum_updates_go_through_the_backends_kernel(backend, monkeypatch, cls, kernel, nesterov):
    """SGD's and Momentum's updates are the contract's kernels (one CUDA kernel each on the cupy backend)."""
    calls = []
    real = getattr(type(backend), kernel)
    monkeypatch.setattr(type(backend), kernel, lambda self, *a: calls.append(a[3:]) or real(self, *a))
    p = sn.Parameter("w", backend.xp.ones((3, 2), dtype=np.float32))
    p.grad = backend.xp.full((3, 2), 0.5, dtype=np.float32)
    opt = cls(0.1, momentum=0.9, nesterov=nesterov)
    opt.step([p])
    opt.step([p])
    assert calls == [(0.1, 0.9, nesterov)] * 2
    # Two steps of the class docstrings' rules, by hand.
    lr, mu, w, g, slot = 0.1, 0.9, np.float32(1), np.float32(0.5), np.float32(0)
    for _ in range(2):
        if cls is sn.optimizers.SGD:
            slot = slot * np.float32(mu) - np.float32(lr) * g
            w = w + (np.float32(mu) * slot - np.float32(lr) * g if nesterov else slot)
        else:
            slot = slot * np.float32(mu) + g
            w = w - np.float32(lr) * (g + np.float32(mu) * slot if nesterov else slot)
    np.testing.assert_array_equal(sn.to_numpy(p.value), np.full((3, 2), w, np.float32))
