"""Models: names, scopes and sharing, weights I/O, losses and metrics, and Keras's training API."""
from __future__ import annotations

import numpy as np
import pytest

import scratchnet as sn
from helpers import assert_close, load_tensorflow
from scratchnet.parameters import ParameterStore

L = sn.layers


def _x(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


# -- names and order ------------------------------------------------------------------------
def test_parameters_have_hierarchical_names_in_keras_order(rng):
    model = sn.Sequential([L.Conv2D(2, 3), L.Flatten(), L.Dense(4), L.Dense(2, name="layer1")])
    model(_x(rng, 1, 5, 5, 1))
    assert [p.name for p in model.parameters()] == [
        "conv2d/kernel", "conv2d/bias", "dense/kernel", "dense/bias", "layer1/kernel", "layer1/bias",
    ]
    assert [w.shape for w in model.get_weights()] == [(3, 3, 1, 2), (2,), (18, 4), (4,), (4, 2), (2,)]


def test_default_layer_names_are_made_unique_but_explicit_duplicates_are_an_error():
    model = sn.Sequential([L.Dense(2), L.Dense(2), L.Dense(2)])
    assert [layer.name for layer in model.layers] == ["dense", "dense_1", "dense_2"]
    with pytest.raises(ValueError, match="two layers are named 'fc'"):
        sn.Sequential([L.Dense(2, name="fc"), L.Dense(2, name="fc")])


def test_nested_model_names_prefix_their_weights(rng):
    block = sn.Sequential([L.Dense(3)], name="block")
    model = sn.Sequential([block, L.Dense(1)])
    model(_x(rng, 2, 4))
    assert [p.name for p in model.parameters()] == ["block/dense/kernel", "block/dense/bias", "dense/kernel", "dense/bias"]


def test_set_weights_checks_count_and_shapes_and_get_weights_returns_copies(rng):
    model = sn.Sequential([L.Dense(3), L.Dense(2)])
    with pytest.raises(ValueError, match="not built yet"):
        model.set_weights([np.zeros((4, 3))])
    model(_x(rng, 1, 4))
    weights = model.get_weights()
    with pytest.raises(ValueError, match="expects 4 arrays, got 3"):
        model.set_weights(weights[:3])
    with pytest.raises(ValueError, match=r"weight 'dense_1/kernel' has shape \(3, 2\), got \(2, 3\)"):
        model.set_weights(weights[:2] + [np.zeros((2, 3)), weights[3]])
    new = [w + 1 for w in weights]
    model.set_weights(new)
    for got, want in zip(model.get_weights(), new):
        np.testing.assert_array_equal(got, want)
    model.get_weights()[0][...] = 7
    assert not (model.get_weights()[0] == 7).any()


# -- scopes: get_variable / variable_scope rules ----------------------------------------------
def test_creating_a_taken_name_is_an_error_unless_reuse_is_asked(rng):
    store = ParameterStore()
    x = _x(rng, 2, 3)
    with store.scope("model"):
        first = sn.Sequential([L.Dense(4)])
    first(x)
    assert sorted(p.name for p in store) == ["model/dense/bias", "model/dense/kernel"]
    with store.scope("model"):
        second = sn.Sequential([L.Dense(4)])
    with pytest.raises(ValueError, match="parameter 'model/dense/kernel' already exists; .*reuse=True"):
        second(x)
    with store.scope("model", reuse=True):
        shared = sn.Sequential([L.Dense(4)])
    np.testing.assert_array_equal(sn.to_numpy(shared(x)), sn.to_numpy(first(x)))
    assert all(a is b for a, b in zip(shared.parameters(), first.parameters()))


def test_reusing_a_name_that_does_not_exist_or_has_another_shape_is_an_error(rng):
    store = ParameterStore()
    x = _x(rng, 2, 3)
    with store.scope("model"):
        sn.Sequential([L.Dense(4)])(x)
    with store.scope("typo", reuse=True):
        missing = sn.Sequential([L.Dense(4)])
    with pytest.raises(ValueError, match="parameter 'typo/dense/kernel' does not exist, so it cannot be reused"):
        missing(x)
    with store.scope("model", reuse=True):
        wider = sn.Sequential([L.Dense(5)])
    with pytest.raises(ValueError, match=r"reused with shape \(3, 5\) but exists with shape \(3, 4\)"):
        wider(x)


def test_auto_reuse_creates_then_shares_and_nested_scopes_inherit_reuse(rng):
    store = ParameterStore()
    x = _x(rng, 1, 2)
    models = []
    for _ in range(2):
        with store.scope("a", reuse="auto"):
            models.append(L.Dense(2))
        models[-1](x)
    assert models[0].kernel is models[1].kernel
    with store.scope("outer", reuse="auto"):
        with store.scope("inner"):
            inner = L.Dense(1, name="fc")
    inner(x)
    assert inner.kernel.name == "outer/inner/fc/kernel"
    with store.scope("outer", reuse=True):
        with store.scope("inner", reuse=False):  # reuse, once set, is inherited (TensorFlow's rule)
            again = L.Dense(1, name="fc")
    again(x)
    assert again.kernel is inner.kernel


def test_a_model_creating_the_same_weight_name_twice_is_an_error(rng):
    class TwoW(sn.Model):
        def call(self, x, training=False):
            self.add_weight("w", (2,))
            self.add_weight("w", (2,))

    with pytest.raises(ValueError, match="parameter 'w' already exists"):
        TwoW().forward(_x(rng, 1, 2))


class CharLM(sn.Model):
    """A language model that carries its LSTM state between calls (seed 004's sampling model)."""

    def __init__(self, vocab=7, units=5):
        super().__init__(name="charlm")
        self.embedding = L.Embedding(vocab, 4)
        self.lstm = L.LSTM(units, return_sequences=True, return_state=True)
        self.logits = L.Dense(vocab)
        self.state = None

    def call(self, ids, training=False):
        x, embedding_backprop = self.embedding.forward(ids, training)
        (ys, h, c), lstm_backprop = self.lstm.forward(x, training, initial_state=self.state)
        self.state = (h, c)
        y, dense_backprop = self.logits.forward(ys, training)

        def backprop(dy):
            dx = lstm_backprop([dense_backprop(dy), None, None])
            embedding_backprop(dx[0] if isinstance(dx, list) else dx)

        return y, backprop


def test_sampling_model_with_batch_1_and_one_step_shares_the_training_models_weights(backend, rng):
    store = ParameterStore()
    with store.scope("charlm"):
        train = CharLM()
    with store.scope("charlm", reuse=True):
        sample = CharLM()
    ids = rng.integers(0, 7, size=(3, 6))
    logits, backprop = train.forward(ids, training=True)
    backprop(backend.xp.asarray(_x(rng, 3, 6, 7)))
    assert [p.name for p in train.parameters()] == [
        "charlm/embedding/embeddings", "charlm/lstm/kernel", "charlm/lstm/recurrent_kernel", "charlm/lstm/bias",
        "charlm/dense/kernel", "charlm/dense/bias",
    ]
    assert all(p.grad is not None for p in train.parameters())
    # One character at a time, state carried: the same outputs as the whole sequence.
    steps = [sn.to_numpy(sample(ids[:1, t : t + 1])) for t in range(6)]
    assert all(a is b for a, b in zip(sample.parameters(), train.parameters()))
    assert_close(np.concatenate(steps, axis=1), sn.to_numpy(logits[:1]), np.float32)
    # A training update is seen by the sampling model at once.
    train.logits.bias.value += 1
    sample.state = None
    assert_close(sn.to_numpy(sample(ids[:1, :1])), steps[0] + 1, np.float32)


def test_one_model_serves_training_and_evaluation_with_dropout_only_in_training(rng):
    model = sn.Sequential([L.Dense(50, activation="relu"), L.Dropout(0.5), L.Dense(2)])
    x = _x(rng, 8, 3)
    evals = [sn.to_numpy(model(x, training=False)) for _ in range(2)]
    trains = [sn.to_numpy(model(x, training=True)) for _ in range(2)]
    np.testing.assert_array_equal(evals[0], evals[1])
    assert not np.allclose(trains[0], trains[1])
    assert not np.allclose(trains[0], evals[0])


# -- regularization ------------------------------------------------------------------------
def test_l2_penalty_joins_the_loss_and_its_gradient_joins_the_weights(rng):
    model = sn.Sequential([L.Dense(3, kernel_regularizer=sn.regularizers.l2(0.1)), L.Dense(2)])
    x = _x(rng, 4, 3)
    model(x)
    W = model.get_weights()[0]
    assert model.regularization_loss() == pytest.approx(0.1 * float((W.astype(np.float64) ** 2).sum()), rel=1e-6)
    model.zero_grad()
    model.regularization_backward()
    assert_close(sn.to_numpy(model.layers[0].kernel.grad), 0.2 * W, np.float32)
    assert model.layers[0].bias.grad is None and model.layers[1].kernel.grad is None


def test_l2_scale_is_keras_convention_twice_tf1_l2_regularizer(rng):
    tf_ = load_tensorflow()
    w = rng.standard_normal((3, 4))
    keras_l2 = float(tf_.keras.regularizers.L2(0.3)(tf_.constant(w)))
    tf1_style = 2 * 0.3 * float(tf_.nn.l2_loss(w))  # tf.contrib.layers.l2_regularizer(2 * 0.3)
    assert sn.regularizers.l2(0.3)(w) == pytest.approx(keras_l2, rel=1e-6)
    assert sn.regularizers.l2(0.3)(w) == pytest.approx(tf1_style, rel=1e-9)


# -- losses and metrics ----------------------------------------------------------------------
def test_sparse_and_one_hot_cross_entropy_agree(backend, rng):
    logits = backend.xp.asarray(_x(rng, 5, 4))
    ids = backend.xp.asarray(rng.integers(0, 4, size=5))
    onehot = backend.xp.asarray(np.eye(4, dtype=np.float32)[sn.to_numpy(ids)])
    v1, bp1 = sn.losses.SparseCategoricalCrossentropy()(ids, logits)
    v2, bp2 = sn.losses.CategoricalCrossentropy()(onehot, logits)
    assert v1 == pytest.approx(v2, rel=1e-6)
    assert_close(sn.to_numpy(bp1(2.0)), sn.to_numpy(bp2(2.0)), np.float32)
    v3, _ = sn.losses.SparseCategoricalCrossentropy()(ids[:, None], logits)  # Keras's (N, 1) labels
    assert v3 == pytest.approx(v1)


@pytest.mark.parametrize("sparse", [True, False], ids=["sparse", "one_hot"])
def test_cross_entropy_from_probabilities_matches_keras(sparse, rng):
    tf_ = load_tensorflow()
    import keras

    probs = rng.dirichlet(np.ones(4), size=5).astype(np.float32) * 1.5  # unnormalised, as Keras allows
    ids = rng.integers(0, 4, size=5)
    y = ids if sparse else np.eye(4, dtype=np.float32)[ids]
    ours = (sn.losses.SparseCategoricalCrossentropy if sparse else sn.losses.CategoricalCrossentropy)(from_logits=False)
    theirs = (keras.losses.SparseCategoricalCrossentropy if sparse else keras.losses.CategoricalCrossentropy)(from_logits=False)
    with sn.use_backend("numpy"):
        value, backprop = ours(y, probs)
        grad = backprop()
    p = tf_.constant(probs)
    with tf_.GradientTape() as tape:
        tape.watch(p)
        expected = theirs(tf_.constant(y), p)
    assert value == pytest.approx(float(expected), rel=1e-5)
    assert_close(grad, tape.gradient(expected, p).numpy(), np.float32)


def test_mean_squared_error_value_and_gradient(rng):
    y, t = _x(rng, 3, 2), _x(rng, 3, 2)
    value, backprop = sn.losses.MeanSquaredError()(t, y)
    assert value == pytest.approx(float(((y - t) ** 2).mean()), rel=1e-6)
    assert_close(backprop(), 2 * (y - t) / 6, np.float32)


def test_accuracy_reads_sparse_and_one_hot_labels():
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 5.0], [9.0, 0.0, 1.0]])
    ids = np.array([0, 1, 1, 2])
    assert sn.metrics.accuracy(ids, logits) == 0.5
    assert sn.metrics.accuracy(np.eye(3)[ids], logits) == 0.5
    assert sn.metrics.get("acc")[0] == "accuracy"


# -- Keras's training API ------------------------------------------------------------------
def _blobs(rng, n=96):
    centers = np.array([[2.0, 0.0], [-2.0, 0.0], [0.0, 2.5]])
    y = rng.integers(0, 3, size=n)
    x = (centers[y] + rng.standard_normal((n, 2)) * 0.6).astype(np.float32)
    return x, y


def test_fit_decreases_the_loss_and_reports_validation_metrics(rng):
    sn.random.seed(0)
    x, y = _blobs(rng)
    model = sn.Sequential([L.Dense(16, activation="relu"), L.Dense(3)])
    model.compile(sn.optimizers.Adam(0.05), sn.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])
    history = model.fit(x, y, batch_size=16, epochs=6, validation_data=(x[:32], y[:32]), verbose=0)
    loss = history.history["loss"]
    assert loss[-1] < 0.5 * loss[0]
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert history.history["accuracy"][-1] > 0.8
    assert model.step == 6 * 6 and model.optimizer.iterations == model.step
    result = model.evaluate(x, y, batch_size=40)
    assert result["accuracy"] > 0.8 and result["loss"] < loss[0]
    assert model.predict(x, batch_size=40).shape == (96, 3)


def test_fit_drives_the_callback_protocol_in_keras_order(rng):
    x, y = _blobs(rng, n=10)
    events = []

    class Recorder(sn.callbacks.Callback):
        def on_train_begin(self, logs=None):
            events.append("train_begin")

        def on_epoch_begin(self, epoch, logs=None):
            events.append(f"epoch_begin {epoch}")

        def on_train_batch_end(self, batch, logs=None):
            events.append(f"batch_end {batch} {sorted(logs)}")

        def on_test_end(self, logs=None):
            events.append(f"test_end {sorted(logs)}")

        def on_epoch_end(self, epoch, logs=None):
            events.append(f"epoch_end {epoch} {sorted(logs)}")
            if epoch == 1:
                self.model.stop_training = True

        def on_train_end(self, logs=None):
            events.append("train_end")

    recorder = Recorder()
    model = sn.Sequential([L.Dense(3)])
    model.compile(sn.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=6, epochs=5, validation_data=(x, y), callbacks=[recorder], verbose=0)
    assert recorder.model is model and recorder.params["steps"] == 2
    batch = "['accuracy', 'loss']"
    epoch = "['accuracy', 'loss', 'val_accuracy', 'val_loss']"
    assert events == ["train_begin"] + [
        e for k in range(2)
        for e in (f"epoch_begin {k}", f"batch_end 0 {batch}", f"batch_end 1 {batch}", f"test_end {batch}", f"epoch_end {k} {epoch}")
    ] + ["train_end"]


def test_fit_adds_a_progress_bar_only_when_verbose(rng, monkeypatch):
    made = []
    original = sn.callbacks.ProgressBar

    class Spy(original):
        def __init__(self, *args, **kwargs):
            made.append(self)
            super().__init__(*args, disable=True)

    monkeypatch.setattr(sn.callbacks, "ProgressBar", Spy)
    x, y = _blobs(rng, n=8)
    model = sn.Sequential([L.Dense(3)])
    model.compile("sgd", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, verbose=0)
    assert made == []
    model.fit(x, y, epochs=1, verbose=1)
    assert len(made) == 1
    model.fit(x, y, epochs=1, verbose=1, callbacks=[Spy()])
    assert len(made) == 2, "a ProgressBar passed in is not doubled"


def test_train_on_batch_reports_loss_with_penalty_and_steps_the_ema(rng):
    x, y = _blobs(rng, n=8)
    model = sn.Sequential([L.Dense(3, kernel_regularizer=sn.regularizers.l2(0.5))])
    model.compile(sn.optimizers.SGD(0.1), sn.losses.SparseCategoricalCrossentropy(), metrics=[])
    model(x)
    penalty = model.regularization_loss()
    data_loss, _ = sn.losses.SparseCategoricalCrossentropy()(y, model(x))
    model.ema = sn.ExponentialMovingAverage(0.5)
    logs = model.train_on_batch(x, y)
    assert logs == {"loss": pytest.approx(data_loss + penalty, rel=1e-5)}
    assert model.step == 1
    kernel = model.layers[0].kernel
    w1 = sn.to_numpy(kernel.value)
    model.train_on_batch(x, y)
    # The shadow starts at the value after the first step, then moves halfway (decay 0.5).
    assert_close(sn.to_numpy(model.ema.average(kernel)), 0.5 * (w1 + sn.to_numpy(kernel.value)), np.float32)


def test_training_api_refuses_an_uncompiled_model(rng):
    model = sn.Sequential([L.Dense(2)])
    with pytest.raises(ValueError, match=r"call compile\(optimizer, loss\) before fit"):
        model.fit(_x(rng, 2, 2), np.zeros(2, dtype=int), verbose=0)
    with pytest.raises(ValueError, match="unknown optimizer 'adamw'"):
        model.compile("adamw", "mse")


def test_summary_prints_layers_shapes_and_parameter_counts(rng, capsys):
    model = sn.Sequential([L.Embedding(10, 4), L.LSTM(3), L.Dense(2)], name="tiny")
    model.build((None, 5))
    model.summary()
    out = capsys.readouterr().out
    assert 'Model: "tiny"' in out
    assert "embedding (Embedding)" in out and "(None, 5, 4)" in out and "40" in out
    assert "lstm (LSTM)" in out and "(None, 3)" in out and str(4 * 3 * (4 + 3 + 1)) in out
    assert f"Total params: {40 + 96 + 8}" in out and "Non-trainable params: 0" in out


def _dropout_mlp(momentum=0.5):
    sn.random.seed(5)
    model = sn.Sequential([sn.layers.Dense(6, activation="relu", kernel_regularizer=sn.regularizers.l2(1e-3)),
                           sn.layers.Dropout(0.4), sn.layers.Dense(3)], dtype="float64")
    model.compile(sn.optimizers.SGD(0.1, momentum=momentum), "sparse_categorical_crossentropy")
    model.ema = sn.ExponentialMovingAverage(0.9)
    model.build((None, 4))
    return model


def test_data_parallel_wraps_the_one_training_step_and_in_a_world_of_one_changes_nothing(monkeypatch):
    """``DataParallel`` runs the same ``train_step``, with its rows (``rows``) and an allreduce (``gradients_ready``)."""
    from scratchnet.distributed import Shard
    from scratchnet.model import step

    calls = []
    real = step.train_step
    monkeypatch.setattr(step, "train_step", lambda *a, **k: calls.append(k) or real(*a, **k))
    plain, wrapped = _dropout_mlp(), _dropout_mlp()
    sn.distributed.DataParallel(wrapped)
    rng = np.random.default_rng(2)
    for _ in range(3):
        x, y = rng.standard_normal((7, 4)), rng.integers(0, 3, 7)
        sn.random.seed(11)
        want = plain.train_on_batch(x, y)
        sn.random.seed(11)
        got = wrapped.train_on_batch(x, y)
        assert got == want
    for p, q in zip(plain.parameters(), wrapped.parameters()):
        np.testing.assert_array_equal(q.value, p.value, err_msg=p.name)
    assert [sorted(k) for k in calls] == [[], ["gradients_ready", "rows"]] * 3
    assert isinstance(calls[1]["rows"], Shard) and calls[1]["rows"].size == 7 and callable(calls[1]["gradients_ready"])


@pytest.mark.parametrize("momentum", [0.0, 0.5], ids=["plain_sgd_fused", "momentum"])
def test_the_optimizer_owns_the_update_penalty_gradients_and_moving_average_included(momentum):
    """``optimizer.step(params, regularize=True, average=ema)`` is the three phases a hand-written loop runs."""
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((5, 4)), rng.integers(0, 3, 5)
    models = []
    for _ in range(2):
        model = _dropout_mlp(momentum)
        model.layers[1].rate = 0.0
        model.ema.apply(model.trainable_parameters)  # the shadows exist: SGD may take its fused path
        model.zero_grad()
        logits, backprop = model.forward(x, training=True)
        backprop(model.loss(y, logits)[1](1.0))
        models.append(model)
    by_optimizer, by_hand = models
    penalty = by_optimizer.optimizer.step(by_optimizer.weights, regularize=True, average=by_optimizer.ema)
    want_penalty = by_hand.regularization_loss()
    by_hand.regularization_backward()
    by_hand.optimizer.step(by_hand.trainable_parameters)
    by_hand.ema.apply(by_hand.trainable_parameters)
    assert penalty == pytest.approx(want_penalty, rel=1e-12)
    for p, q in zip(by_hand.parameters(), by_optimizer.parameters()):
        np.testing.assert_array_equal(q.value, p.value, err_msg=p.name)
        np.testing.assert_array_equal(by_optimizer.ema.average(q), by_hand.ema.average(p), err_msg=p.name)
