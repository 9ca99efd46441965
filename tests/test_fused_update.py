"""The fused end of a step (``scratchnet/fused_update.py``): where it applies, it changes nothing but the speed.

Plain SGD with L2 penalties and a moving average (the MLP and LeNet seeds) runs
the penalty's gradient, the step and the average as one pass per parameter.
Every weight, gradient, shadow and optimizer counter must come out bit for bit
as the three separate phases leave them, on every backend, and every other
combination must keep taking the three phases.
"""
from __future__ import annotations

import numpy as np
import pytest

import scratchnet as sn
from scratchnet import fused_update
from scratchnet.backend import to_numpy


def _state(model):
    params = {p.name: (to_numpy(p.value).copy(), None if p.grad is None else to_numpy(p.grad).copy())
              for p in model.parameters()}
    shadows = {k: to_numpy(v).copy() for k, v in (model.ema._shadows.items() if model.ema else ())}
    return params, shadows, model.optimizer.iterations, model.step


def _train(name, fused, monkeypatch, steps=5, **hparams):
    with monkeypatch.context() as m:
        if not fused:
            m.setattr(fused_update, "fusable", lambda optimizer, params, average=None: False)
        taken = []
        real_step = fused_update.sgd_l2_ema_step
        m.setattr(fused_update, "sgd_l2_ema_step", lambda *a, **k: taken.append(1) or real_step(*a, **k))
        sn.random.seed(0)
        rng = np.random.default_rng(0)
        recipe = sn.zoo.build(name, **hparams)
        losses = []
        for _ in range(steps):
            x, y = rng.random((20, 784), dtype=np.float32), rng.integers(0, 10, 20)
            losses.append(recipe.train_step(x, y)["loss"])
        return losses, _state(recipe.model), len(taken)


@pytest.mark.parametrize("name", ["mlp", "lenet"])
def test_the_fused_step_leaves_every_array_as_the_three_phases_do(backend, monkeypatch, name):
    losses, state, taken = _train(name, True, monkeypatch)
    want_losses, want_state, _ = _train(name, False, monkeypatch)
    assert taken == 4  # every step but the first, whose moving average creates its shadows
    (params, shadows, iterations, step), (want_params, want_shadows, want_iterations, want_step) = state, want_state
    assert (iterations, step) == (want_iterations, want_step) == (5, 5)
    assert params.keys() == want_params.keys() and shadows.keys() == want_shadows.keys()
    for k, (value, grad) in params.items():
        np.testing.assert_array_equal(value, want_params[k][0], err_msg=k)
        np.testing.assert_array_equal(grad, want_params[k][1], err_msg=f"{k} grad")
    for k, shadow in shadows.items():
        np.testing.assert_array_equal(shadow, want_shadows[k], err_msg=k)
    # The reported loss includes the L2 penalty; only its float64 sum's order differs.
    np.testing.assert_allclose(losses, want_losses, rtol=1e-12)


def _mlp(optimizer, regularizer):
    model = sn.Sequential([sn.layers.Dense(5, activation="relu", kernel_regularizer=regularizer),
                           sn.layers.Dense(3)])
    model.compile(optimizer, "sparse_categorical_crossentropy")
    model.ema = sn.ExponentialMovingAverage(0.9)
    model.build((None, 4))
    return model


@pytest.mark.parametrize("optimizer, regularizer, fused", [
    (lambda: sn.optimizers.SGD(0.1), sn.regularizers.l2(1e-3), True),
    (lambda: sn.optimizers.SGD(0.1), None, True),
    (lambda: sn.optimizers.SGD(0.1, momentum=0.9), sn.regularizers.l2(1e-3), False),
    (lambda: sn.optimizers.SGD(0.1, global_clipnorm=1.0), sn.regularizers.l2(1e-3), False),
    (lambda: sn.optimizers.Adam(0.01), sn.regularizers.l2(1e-3), False),
    (lambda: sn.optimizers.SGD(0.1), sn.regularizers.L1L2(l1=1e-3, l2=1e-3), False),
], ids=["sgd_l2", "sgd", "momentum", "clipnorm", "adam", "l1"])
def test_only_plain_sgd_with_l2_and_a_moving_average_is_fused(optimizer, regularizer, fused):
    model = _mlp(optimizer(), regularizer)
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((8, 4)).astype(np.float32), rng.integers(0, 3, 8)
    assert not fused_update.fusable(model.optimizer, model.weights, model.ema)  # the first step: no shadows yet
    model.train_on_batch(x, y)
    model.zero_grad()
    for p in model.trainable_parameters:
        p.grad = p.value * 0
    assert fused_update.fusable(model.optimizer, model.weights, model.ema) is fused
