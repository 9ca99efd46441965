"""The model zoo: each model is built with its seed's hyperparameters, and trains."""
from __future__ import annotations

import numpy as np
import pytest

import scratchnet as sn
from scratchnet import zoo
from scratchnet.data import TextCorpus


def shapes(model):
    return [tuple(p.value.shape) for p in model.parameters()]


def carried(recipe):
    """The LSTM state a language model carries to its next batch (None after a reset)."""
    return next(layer.states for layer in recipe.model.layers if getattr(layer, "stateful", False))


def count(model):
    return sum(int(np.prod(p.value.shape)) for p in model.parameters())


@pytest.fixture(autouse=True)
def numpy_backend():
    sn.random.seed(0)
    with sn.use_backend("numpy"):
        yield


def test_mlp_is_784_500_10_with_seed_002_schedule_l2_and_ema():
    r = zoo.MLP()
    assert shapes(r.model) == [(784, 500), (500,), (500, 10), (10,)]
    assert count(r.model) == 397_510
    assert type(r.optimizer).__name__ == "SGD"
    schedule = r.optimizer.learning_rate
    # tf.train.exponential_decay(0.8, step, 55000 / 100, 0.99)
    assert schedule(0) == pytest.approx(0.8)
    assert schedule(550) == pytest.approx(0.8 * 0.99)
    assert schedule(275) == pytest.approx(0.8 * 0.99 ** 0.5)
    regs = {p.name: p.regularizer for p in r.model.parameters() if p.regularizer is not None}
    assert len(regs) == 2  # both weight matrices, no bias
    w = np.ones((3, 4))
    for reg in regs.values():  # tf.contrib.layers.l2_regularizer(1e-4) = 1e-4 * sum(w**2) / 2
        assert float(reg(w)) == pytest.approx(1e-4 * 12 / 2)
    assert r.ema is not None and r.ema.decay == 0.99
    assert r.batch_size == 100 and r.default_steps() == 30_000


def test_lenet_uses_the_fixed_learning_rate_and_l2_on_the_last_layer_only():
    r = zoo.LeNet()
    assert shapes(r.model) == [(5, 5, 1, 32), (32,), (5, 5, 32, 64), (64,), (3136, 512), (512,), (512, 10), (10,)]
    assert count(r.model) == 1_663_370
    assert r.optimizer.learning_rate(0) == pytest.approx(0.01)  # not the book's 0.8, which diverges
    regularized = [tuple(p.value.shape) for p in r.model.parameters() if p.regularizer is not None]
    assert regularized == [(512, 10)]
    assert r.ema is not None and r.ema.decay == 0.99
    y = r.model(np.zeros((2, 784), np.float32))
    assert y.shape == (2, 10)


def test_lstm_stacks_three_lstm_layers_of_256_with_adam():
    r = zoo.LSTMClassifier()
    # each LSTM: kernel (D, 4H), recurrent kernel (H, 4H), bias (4H,)
    assert shapes(r.model) == [
        (28, 1024), (256, 1024), (1024,),
        (256, 1024), (256, 1024), (1024,),
        (256, 1024), (256, 1024), (1024,),
        (256, 10), (10,),
    ]
    assert type(r.optimizer).__name__ == "Adam" and r.optimizer.learning_rate == pytest.approx(1e-3)
    assert r.ema is None


def test_lstm_dropout_acts_only_in_training_and_both_modes_share_weights():
    r = zoo.LSTMClassifier(units=8)
    x = np.random.default_rng(0).random((4, 784)).astype(np.float32)
    y1, y2 = r.model(x, training=False), r.model(x, training=False)
    np.testing.assert_array_equal(sn.to_numpy(y1), sn.to_numpy(y2))
    t1, _ = r.model.forward(x, training=True)
    assert not np.allclose(sn.to_numpy(t1), sn.to_numpy(y1))


def test_charlm_clips_the_global_norm_at_4_5_and_predicts_every_position():
    r = zoo.CharLM(vocab_size=30)
    assert type(r.optimizer).__name__ == "Adam"
    assert r.optimizer.global_clipnorm == 4.5 and r.optimizer.learning_rate == pytest.approx(1e-3)
    assert shapes(r.model) == [(30, 100), (100, 512), (128, 512), (512,), (128, 30), (30,)]
    y = r.model(np.zeros((3, 7), np.int64))
    assert y.shape == (3, 7, 30)


def test_unknown_model_and_hyperparameter_are_errors():
    with pytest.raises(ValueError, match="unknown model 'vgg16'"):
        zoo.build("vgg16")
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        zoo.build("mlp", hiden=10)


def _digits(n, rng):
    """A learnable toy task: class k lights up rows 2k..2k+2 of the image."""
    y = rng.integers(0, 10, n)
    x = rng.random((n, 28, 28)).astype(np.float32) * 0.2
    for i, k in enumerate(y):
        x[i, 2 * k + 3:2 * k + 6] += 0.8
    return x.reshape(n, 784), y


@pytest.mark.parametrize("name, overrides", [
    ("mlp", {}),
    ("lenet", dict(conv1=4, conv2=8, fc=32)),
    ("lstm", dict(units=16)),
])
def test_a_few_training_steps_decrease_the_loss(name, overrides):
    rng = np.random.default_rng(1)
    x, y = _digits(20, rng)
    r = zoo.build(name, **overrides)
    if name == "lenet":  # the seed's 0.01 is tuned for thousands of steps
        r.optimizer.learning_rate = lambda step: 0.05
    before = r.evaluate(x, y, averaged=False)["loss"]
    for _ in range(8):
        logs = r.train_step(x, y)
    after = r.evaluate(x, y, averaged=False)["loss"]
    assert np.isfinite(logs["loss"])
    assert after < before
    assert r.step == 8 and r.optimizer.iterations == 8


def test_charlm_training_steps_decrease_the_loss_and_carry_state():
    rng = np.random.default_rng(2)
    ids = np.tile(np.arange(6), 20)[:100].reshape(4, 25)  # a periodic text: easy to learn
    x, y = ids[:, :-1], ids[:, 1:]
    r = zoo.CharLM(vocab_size=6, units=16, embedding_size=8)
    before = r.evaluate(x, y)["loss"]
    r.model.reset_states()
    for _ in range(10):
        r.train_step(x, y)
    assert carried(r) is not None  # carried to the next batch
    r.model.reset_states()
    assert carried(r) is None
    assert r.evaluate(x, y)["loss"] < before
    del rng


def test_ema_evaluation_uses_the_averaged_weights():
    rng = np.random.default_rng(3)
    x, y = _digits(20, rng)
    r = zoo.MLP(hidden=16)
    for _ in range(3):
        r.train_step(x, y)
    live = r.evaluate(x, y, averaged=False)["loss"]
    averaged = r.evaluate(x, y)["loss"]
    assert averaged != live
    assert r.evaluate(x, y, averaged=False)["loss"] == live  # the live weights came back


def test_charlm_argmax_sampling_is_deterministic_and_temperature_varies():
    r = zoo.CharLM(vocab_size=8, units=16, embedding_size=8)
    corpus = TextCorpus.from_vocab(list("abcdefgh"))
    a = zoo.sample(r.model, corpus, "abc", 30)
    b = zoo.sample(r.model, corpus, "abc", 30)
    assert a == b and a.startswith("abc") and len(a) == 33
    hot = {zoo.sample(r.model, corpus, "abc", 30, temperature=2.0, seed=s) for s in range(4)}
    assert len(hot) > 1
    assert zoo.sample(r.model, corpus, "abc", 30, temperature=2.0, seed=7) == \
        zoo.sample(r.model, corpus, "abc", 30, temperature=2.0, seed=7)


def test_sampling_does_not_disturb_the_training_state():
    r = zoo.CharLM(vocab_size=8, units=16, embedding_size=8)
    ids = np.arange(8)[None].repeat(2, 0)
    r.train_step(ids[:, :-1], ids[:, 1:])
    state = [sn.to_numpy(s).copy() for s in carried(r)]
    zoo.sample(r.model, TextCorpus.from_vocab(list("abcdefgh")), "ab", 5)
    for before, after in zip(state, carried(r)):
        np.testing.assert_array_equal(before, sn.to_numpy(after))
