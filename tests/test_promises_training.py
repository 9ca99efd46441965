"""The training loop's promises (issue 22, causes 5 and 11, and float labels and ids).

- A non-finite loss, gradient or input stops training with a ``NonFiniteError``
  naming the step and the tensor; the step is not applied, callbacks see
  ``on_train_end``, and ``check_finite=False`` opts out.
- ``metrics.jsonl`` writes NaN and infinities as the strings ``"NaN"`` and
  ``"Infinity"``, never as ``null``, and reads them back as floats.
- Every bad argument of ``fit``, ``evaluate``, ``predict`` and ``train`` is a
  ``ValueError`` naming the method, the argument and the value.
- Float class labels and ids are accepted only when integral and in range.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

import scratchnet as sn
from scratchnet import training
from scratchnet._checks import check_ids
from scratchnet.training import NonFiniteError


def _mlp(optimizer="sgd", seed=0):
    sn.random.seed(seed)
    model = sn.Sequential([sn.layers.Dense(8, activation="relu"), sn.layers.Dense(3)])
    model.compile(optimizer, "sparse_categorical_crossentropy")
    model.build((None, 4))
    return model


def _data(n=24, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 4)).astype(np.float32), rng.integers(0, 3, n)


def _weights(model):
    return [np.array(sn.to_numpy(w)) for w in model.get_weights()]


def _assert_same(before, after):
    assert len(before) == len(after)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


class Recorder(sn.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.hooks = []

    def on_train_batch_end(self, batch, logs=None):
        self.hooks.append(("batch_end", self.model.step))

    def on_train_end(self, logs=None):
        self.hooks.append(("train_end", self.model.step))


# -- cause 5: a NaN stops training --------------------------------------------------------
# NumPy warns of the inf - inf and the overflows it computes: these tests make them on purpose.
computes_non_finite = pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")


@computes_non_finite
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_input_row_stops_fit_before_its_step_is_applied(bad):
    model = _mlp()
    x, y = _data()
    x[13, 2] = bad  # in the second batch of 8
    model.fit(x[:8], y[:8], batch_size=8, shuffle=False, verbose=0)  # one good step first
    before, iterations = _weights(model), model.optimizer.iterations
    recorder = Recorder()
    with pytest.raises(NonFiniteError) as info:
        model.fit(x[8:16], y[8:16], batch_size=8, shuffle=False, verbose=0, callbacks=[recorder])
    e = info.value
    assert isinstance(e, FloatingPointError) and isinstance(e, ArithmeticError)
    assert e.step == 2 and e.tensor == "input batch x"
    assert "step 2" in str(e) and "input batch x" in str(e) and "row 5" in str(e)
    assert "check_finite=False" in str(e)
    _assert_same(before, _weights(model))  # not applied
    assert model.step == 1 and model.optimizer.iterations == iterations
    assert recorder.hooks == [("train_end", 1)]  # told training ended, at the last finite step


def test_the_error_is_exported_where_the_errors_are():
    assert sn.training.NonFiniteError is NonFiniteError
    e = NonFiniteError(3, "loss", "the loss is nan")
    assert (e.step, e.tensor, str(e)) == (3, "loss", "the loss is nan")
    import pickle

    again = pickle.loads(pickle.dumps(e))  # crosses process boundaries (MPI, multiprocessing) intact
    assert (again.step, again.tensor, str(again)) == (3, "loss", "the loss is nan")


@computes_non_finite
def test_a_huge_learning_rate_stops_training_with_the_weights_finite():
    model = _mlp(sn.optimizers.SGD(1e30))
    x, y = _data(64)
    with pytest.raises(NonFiniteError) as info:
        model.fit(x, y, batch_size=8, epochs=3, verbose=0)
    assert info.value.tensor in ("loss",) or info.value.tensor.startswith("gradient of ")
    assert f"step {model.step + 1}" in str(info.value)
    assert all(np.isfinite(w).all() for w in _weights(model))


def test_nan_labels_for_a_regression_name_the_labels():
    sn.random.seed(0)
    model = sn.Sequential([sn.layers.Dense(2)])
    model.compile("adam", "mse", metrics=())
    x = np.ones((4, 3), np.float32)
    y = np.zeros((4, 2), np.float32)
    y[1, 0] = np.nan
    with pytest.raises(NonFiniteError, match=r"step 1: the labels y .*row 1") as info:
        model.train_on_batch(x, y)
    assert info.value.tensor == "labels y" and model.step == 0
    assert model.optimizer.iterations == 0


class NaNGradient(sn.Layer):
    """Passes its input through; its one weight receives a NaN gradient (the loss stays finite)."""

    def build(self, input_shape):
        self.w = self.add_weight("w", (1,), "zeros")

    def call(self, x, training=False):
        def backprop(dy):
            self.w.accumulate(np.full((1,), np.nan, dtype=self.w.value.dtype))
            return dy

        return x + 0 * self.w.value, backprop


class HugeGradient(NaNGradient):
    """Its weight's gradient is finite, but its float32 sum is not (3e38 + 3e38 overflows)."""

    def build(self, input_shape):
        self.w = self.add_weight("w", (2,), "zeros")

    def call(self, x, training=False):
        def backprop(dy):
            self.w.accumulate(np.full((2,), 3e38, dtype=self.w.value.dtype))
            return dy

        return x + 0 * self.w.value.sum(), backprop


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])  # the fused SGD path and the three phases
def test_a_non_finite_gradient_is_named_by_its_parameter(optimizer):
    sn.random.seed(0)
    model = sn.Sequential([sn.layers.Dense(4), NaNGradient(name="odd"), sn.layers.Dense(3)])
    model.compile(optimizer, "sparse_categorical_crossentropy")
    x, y = _data(8)
    model.build((None, 4))
    before = _weights(model)
    with pytest.raises(NonFiniteError, match=r"step 1: the gradient of odd/w is not finite") as info:
        model.train_on_batch(x, y)
    assert info.value.tensor == "gradient of odd/w"
    _assert_same(before, _weights(model))


def test_the_fused_update_path_is_checked_too(monkeypatch):
    from scratchnet import fused_update

    sn.random.seed(0)
    model = sn.Sequential([sn.layers.Dense(4, kernel_regularizer=sn.regularizers.l2(1e-4)), NaNGradient(name="odd")])
    model.compile("sgd", "mse", metrics=())
    model.ema = sn.ExponentialMovingAverage(0.9)
    x = np.ones((4, 4), np.float32)
    y = np.zeros((4, 4), np.float32)
    taken = []
    monkeypatch.setattr(fused_update, "sgd_l2_ema_step", lambda *a: taken.append(1))
    monkeypatch.setattr(fused_update, "fusable", lambda optimizer, params, average=None: True)
    with pytest.raises(NonFiniteError, match="gradient of odd/w"):
        model.train_on_batch(x, y)
    assert taken == [] and model.step == 0


def test_a_finite_gradient_whose_float32_sum_overflows_is_not_an_alarm():
    sn.random.seed(0)
    model = sn.Sequential([HugeGradient(name="big"), sn.layers.Dense(3)])
    model.compile(sn.optimizers.SGD(1e-40), "sparse_categorical_crossentropy", metrics=())
    x, y = _data(8)
    model.train_on_batch(x, y)  # the cheap check trips; the scan finds every gradient finite
    assert model.step == 1


def test_check_finite_false_trains_through_a_nan_as_before():
    model = _mlp()
    x, y = _data(16)
    x[3, 0] = np.nan
    history = model.fit(x, y, batch_size=8, shuffle=False, verbose=0, check_finite=False)
    assert math.isnan(history.history["loss"][0]) and model.step == 2
    assert model.check_finite  # the model's own setting is back after fit

    model = _mlp()
    batches = training.array_batches(x, y, 8, shuffle=False)
    training.train(model, batches, 2, check_finite=False)
    assert model.step == 2
    with pytest.raises(NonFiniteError):
        training.train(model, training.array_batches(x, y, 8, shuffle=False), 2)


def test_a_checkpoint_callback_keeps_the_last_finite_state(tmp_path):
    model = _mlp()
    x, y = _data(32)
    x[20] = np.nan  # the third batch of 8
    saver = sn.callbacks.ModelCheckpoint(str(tmp_path), every_n_steps=1, max_to_keep=10)
    with pytest.raises(NonFiniteError, match="step 3"):
        model.fit(x, y, batch_size=8, shuffle=False, verbose=0, callbacks=[saver])
    assert model.step == 2
    newest = sn.latest_checkpoint(str(tmp_path))
    assert newest.endswith("model-2")
    restored = _mlp(seed=1)
    sn.Checkpoint(restored).restore(newest)
    _assert_same(_weights(model), _weights(restored))
    assert all(np.isfinite(w).all() for w in _weights(restored))


class TwoRanks(sn.distributed.World):
    """Rank 0 of a pretend world of two: the other rank's gradients come from ``other``."""

    size = 2

    def __init__(self, other):
        self.other, self.sent = other, []

    def allreduce(self, buf, **kwargs):
        self.sent.append(np.array(buf))
        buf += self.other(buf)
        return buf


def test_data_parallel_a_nan_on_another_rank_stops_this_one():
    model = _mlp()
    sn.distributed.DataParallel(model, world=TwoRanks(lambda buf: np.full_like(buf, np.nan)))
    before = _weights(model)
    x, y = _data(8)
    with pytest.raises(NonFiniteError, match=r"step 1: the gradient of .* after the allreduce"):
        model.train_on_batch(x, y)
    _assert_same(before, _weights(model))
    assert model.step == 0


def test_data_parallel_a_non_finite_loss_reaches_the_other_ranks_as_a_nan_gradient():
    def loss_nan_gradient_finite(y_true, y_pred):
        return float("nan"), lambda dloss=1.0: np.zeros_like(y_pred)

    model = _mlp()
    model.compile("sgd", loss_nan_gradient_finite, metrics=())
    world = TwoRanks(lambda buf: buf)  # the other rank: the same gradients
    sn.distributed.DataParallel(model, world=world)
    x, y = _data(8)
    with pytest.raises(NonFiniteError, match=r"step 1: the loss is nan"):
        model.train_on_batch(x, y)
    assert np.isnan(world.sent[0]).any()  # what this rank sent: the other ranks stop at the same step


# -- metrics.jsonl -------------------------------------------------------------------------
def test_jsonl_writes_nan_and_infinities_as_strings_and_reads_them_back(tmp_path):
    path = tmp_path / "metrics.jsonl"
    logger = sn.callbacks.JSONLLogger(str(path), update_freq=1)
    logger.write_scalars("train", {"loss": float("nan"), "high": float("inf"), "low": -float("inf"), "ok": 0.5}, 3)
    logger.write_scalars("train", {"loss": 0.25}, 4)
    text = path.read_text()
    assert "null" not in text and "NaN" in text

    def strict(token):
        raise ValueError(f"not JSON: {token}")

    first = json.loads(text.splitlines()[0], parse_constant=strict)  # strict JSON: no bare NaN token
    assert first == {"run": "train", "step": 3, "loss": "NaN", "high": "Infinity", "low": "-Infinity", "ok": 0.5}
    records = logger.read()
    assert math.isnan(records[0]["loss"]) and records[0]["high"] == math.inf and records[0]["low"] == -math.inf
    logger.discard_after(3)  # what a resume does
    assert [r["step"] for r in logger.read()] == [3]


def test_jsonl_reads_the_null_of_older_files_as_nan(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"run": "train", "step": 1, "loss": null}\n')
    logger = sn.callbacks.JSONLLogger(str(path), update_freq=1)
    assert math.isnan(logger.read()[0]["loss"])


@pytest.mark.parametrize("cls", [sn.callbacks.JSONLLogger, sn.callbacks.CSVLogger])
def test_a_torn_line_in_the_middle_does_not_stop_a_resume(cls, tmp_path):
    path = tmp_path / "metrics"
    logger = cls(str(path), update_freq=1)
    for step in (1, 2, 3):
        logger.write_scalars("train", {"loss": 1.0 / step}, step)
    lines = path.read_text().splitlines(keepends=True)
    lines[-2] = lines[-2][:7] + "\n"  # step 2's record, cut short by a kill, then step 3 appended by a resume
    path.write_text("".join(lines))
    logger.discard_after(3)
    assert [r["step"] for r in logger.read()] == [1, 3]
    assert logger.read()[0]["loss"] == 1.0


def test_csv_reads_back_numbers_and_nan(tmp_path):
    logger = sn.callbacks.CSVLogger(str(tmp_path / "m.csv"), update_freq=1)
    logger.write_scalars("train", {"loss": float("nan")}, 1)
    (record,) = logger.read()
    assert record["run"] == "train" and record["step"] == 1 and math.isnan(record["loss"])


# -- cause 11: invalid arguments -----------------------------------------------------------
@pytest.mark.parametrize("value", [-1, 0, 2.5, True, "8", None])
def test_predict_refuses_a_bad_batch_size(value):
    model = _mlp()
    x, _ = _data()
    with pytest.raises(ValueError, match=rf"predict: batch_size must be a positive int, got {value!r}"):
        model.predict(x, batch_size=value)


@pytest.mark.parametrize("value", [-4, 0, 2.5, False])
def test_fit_and_evaluate_refuse_a_bad_batch_size(value):
    model = _mlp()
    x, y = _data()
    before = _weights(model)
    with pytest.raises(ValueError, match=rf"fit: batch_size must be a positive int, got {value!r}"):
        model.fit(x, y, batch_size=value, verbose=0)
    with pytest.raises(ValueError, match=rf"evaluate: batch_size must be a positive int, got {value!r}"):
        model.evaluate(x, y, batch_size=value)
    _assert_same(before, _weights(model))
    assert model.step == 0


@pytest.mark.parametrize("kwargs, message", [
    ({"epochs": 0}, r"fit: epochs must be a positive int, got 0"),
    ({"epochs": -2}, r"fit: epochs must be a positive int, got -2"),
    ({"epochs": 1.5}, r"fit: epochs must be a positive int, got 1.5"),
    ({"steps_per_epoch": 0}, r"fit: steps_per_epoch must be a positive int or None, got 0"),
    ({"validation_split": 1.0}, r"fit: validation_split must be a number in \[0, 1\), got 1.0"),
    ({"validation_split": -0.1}, r"fit: validation_split must be a number in \[0, 1\), got -0.1"),
    ({"validation_split": 0.01}, r"fit: validation_split=0.01 of 24 examples leaves no example to validate on"),
    ({"validation_split": 0.5, "validation_data": "both"}, r"fit: give validation_data or validation_split"),
    ({"verbose": 3}, r"fit: verbose must be 0, 1, 2 or 'auto', got 3"),
    ({"verbose": "loud"}, r"fit: verbose must be 0, 1, 2 or 'auto', got 'loud'"),
    ({"shuffle": "yes"}, r"fit: shuffle must be a bool, got 'yes'"),
    ({"check_finite": 1}, r"fit: check_finite must be a bool, got 1"),
])
def test_fit_refuses_bad_arguments_before_training(kwargs, message):
    model = _mlp()
    x, y = _data()
    if kwargs.get("validation_data") == "both":
        kwargs = {**kwargs, "validation_data": (x, y)}
    with pytest.raises(ValueError, match=message):
        model.fit(x, y, **kwargs)
    assert model.step == 0


@pytest.mark.parametrize("validation_data, message", [
    ("xy", r"fit: validation_data must be a pair \(x_val, y_val\), got str"),
    (((1, 2, 3),), r"fit: validation_data must be a pair \(x_val, y_val\), got a tuple of 1"),
    ("rows", r"fit: validation_data: x_val and y_val must have the same number of examples, got 5 and 4"),
    ("empty", r"fit: validation_data holds no examples"),
    ("features", r"fit: validation_data: x_val must have x's shape per example \(4,\), got \(5,\)"),
    ("labels", r"fit: validation_data: y_val must have y's shape per example \(\), got \(3,\)"),
])
def test_fit_checks_validation_data_before_training(validation_data, message):
    model = _mlp()
    x, y = _data()
    cases = {
        "rows": (x[:5], y[:4]),
        "empty": (x[:0], y[:0]),
        "features": (np.ones((5, 5), np.float32), y[:5]),
        "labels": (x[:5], np.ones((5, 3), np.float32)),
    }
    with pytest.raises(ValueError, match=message):
        model.fit(x, y, validation_data=cases.get(validation_data, validation_data), verbose=0)
    assert model.step == 0


def test_a_trailing_axis_of_one_on_the_validation_labels_is_allowed():
    model = _mlp()
    x, y = _data()
    history = model.fit(x, y, validation_data=(x[:6], y[:6, None]), verbose=0)
    assert "val_loss" in history.history


def test_evaluate_and_train_refuse_bad_arguments():
    model = _mlp()
    x, y = _data()
    with pytest.raises(ValueError, match=r"evaluate: verbose must be 0, 1, 2 or 'auto', got -1"):
        model.evaluate(x, y, verbose=-1)
    with pytest.raises(ValueError, match=r"evaluate: x and y must have the same number of examples, got 24 and 23"):
        model.evaluate(x, y[:-1])
    with pytest.raises(ValueError, match=r"fit: x and y must have the same number of examples, got 24 and 23"):
        model.fit(x, y[:-1])
    with pytest.raises(ValueError, match=r"train: steps must be a non-negative int, got 2.5"):
        training.train(model, training.array_batches(x, y, 8), 2.5)
    with pytest.raises(ValueError, match=r"train: steps must be a non-negative int, got -1"):
        training.train(model, training.array_batches(x, y, 8), -1)
    with pytest.raises(ValueError, match=r"train: validate_every must be a positive int or None, got 0"):
        training.train(model, training.array_batches(x, y, 8), 2, validate=lambda: {}, validate_every=0)
    with pytest.raises(ValueError, match=r"train: check_finite must be a bool, got None"):
        training.train(model, training.array_batches(x, y, 8), 2, check_finite=None)
    assert model.step == 0


def test_validation_split_holds_out_the_last_examples_as_keras_does():
    model = _mlp()
    x, y = _data(20)
    history = model.fit(x, y, batch_size=4, validation_split=0.25, shuffle=False, verbose=0)
    assert model.step == 4  # 15 training examples: 4 batches
    held_out = model.evaluate(x[15:], y[15:])
    assert history.history["val_loss"] == [pytest.approx(held_out["loss"])]


def test_steps_per_epoch_sets_the_length_of_an_epoch():
    model = _mlp()
    x, y = _data(20)
    history = model.fit(x, y, batch_size=4, epochs=3, steps_per_epoch=2, verbose=0)
    assert model.step == 6 and history.epoch == [0, 1, 2]


# -- float labels and ids --------------------------------------------------------------------
def test_float_labels_with_a_fraction_are_refused_naming_the_first():
    loss = sn.losses.SparseCategoricalCrossentropy()
    logits = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"SparseCategoricalCrossentropy: y_true must be whole numbers .* "
                                         r"found 1.7 at y_true\[2\]"):
        loss(np.array([0.0, 1.0, 1.7, 2.5], np.float32), logits)
    with pytest.raises(ValueError, match=r"found nan at y_true\[1\]"):
        loss(np.array([0.0, np.nan, 1.0, 1.0]), logits)
    with pytest.raises(ValueError, match=r"y_true must lie in \[0, 3\) \(y_pred has 3 classes\), found 3.0 at y_true\[3\]"):
        loss(np.array([0.0, 1.0, 2.0, 3.0]), logits)
    with pytest.raises(ValueError, match=r"y_true must lie in \[0, 3\).*found 1e\+30 at y_true\[0\]"):
        loss(np.array([1e30, 1.0, 2.0, 0.0]), logits)


def test_integral_float_labels_are_the_integer_labels():
    loss = sn.losses.SparseCategoricalCrossentropy()
    logits = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    by_float, grad_float = loss(np.array([[0.0], [2.0], [1.0], [2.0]], np.float32), logits)
    by_int, grad_int = loss(np.array([0, 2, 1, 2]), logits)
    assert by_float == by_int
    np.testing.assert_array_equal(grad_float(1.0), grad_int(1.0))
    probabilities = sn.losses.SparseCategoricalCrossentropy(from_logits=False)
    with pytest.raises(ValueError, match=r"found 0.5 at y_true\[0\]"):
        probabilities(np.array([0.5, 1, 1, 1.0]), np.full((4, 3), 1 / 3, np.float32))


def test_the_accuracy_metric_refuses_fractional_labels():
    y_pred = np.eye(3, dtype=np.float32)
    assert sn.metrics.sparse_categorical_accuracy(np.array([0.0, 1.0, 2.0]), y_pred) == 1.0
    with pytest.raises(ValueError, match=r"sparse_categorical_accuracy: y_true must be whole numbers.*found 1.5"):
        sn.metrics.sparse_categorical_accuracy(np.array([0.0, 1.5, 2.0]), y_pred)


def test_fit_with_fractional_labels_stops_before_the_first_step():
    model = _mlp()
    x, y = _data()
    y = y.astype(np.float32)
    y[5] = 1.7
    with pytest.raises(ValueError, match=r"found 1.7"):
        model.fit(x, y, batch_size=24, verbose=0)
    assert model.step == 0


def test_check_ids_names_the_first_bad_id_and_takes_integral_floats_when_asked():
    be = sn.get_backend()
    with pytest.raises(ValueError, match=r"op: ids must lie in \[0, 6\) \(six rows\), found 7 at ids\[0, 1\]"):
        check_ids("op", be, "ids", np.array([[0, 7], [-1, 2]]), 6, "six rows")
    with pytest.raises(ValueError, match=r"op: ids must be integers, got float64"):
        check_ids("op", be, "ids", np.array([1.0]), 6, "six rows")
    ids = check_ids("op", be, "ids", np.array([1.0, 5.0]), 6, "six rows", floats=True)
    assert ids.dtype == np.int64 and ids.tolist() == [1, 5]
    with pytest.raises(ValueError, match=r"op: ids must be whole numbers.*found 2.25 at ids\[1\]"):
        check_ids("op", be, "ids", np.array([1.0, 2.25]), 6, "six rows", floats=True)
    with pytest.raises(ValueError, match=r"op: ids must be whole numbers.*found inf at ids\[0\]"):
        check_ids("op", be, "ids", np.array([np.inf]), 6, "six rows", floats=True)
    assert check_ids("op", be, "ids", np.zeros((0,), np.float32), 6, "six rows", floats=True).dtype == np.int64


def test_the_embedding_layer_takes_whole_float_ids_and_refuses_fractional_ones():
    layer = sn.layers.Embedding(5, 2)
    assert layer(np.array([[1.0, 4.0]])).shape == (1, 2, 2)
    with pytest.raises(ValueError, match=r"Embedding: ids must be whole numbers.*found 1\.5 at ids\[0, 1\]"):
        layer(np.array([[1.0, 1.5]]))
    with pytest.raises(ValueError, match="Embedding"):
        layer(np.array([[1.0, 5.0]]))  # out of range, not wrapped or truncated


def test_a_callback_that_refuses_to_begin_ends_the_ones_begun_before_it():
    import signal

    model = sn.Sequential([sn.layers.Dense(2)])
    model.compile("sgd", "sparse_categorical_crossentropy")
    ended = []

    class Refuses(sn.callbacks.Callback):
        def on_train_begin(self, logs=None):
            raise RuntimeError("refused")

    class Records(sn.callbacks.Callback):
        def on_train_end(self, logs=None):
            ended.append(True)

    handler = signal.getsignal(signal.SIGINT)
    stop = sn.callbacks.StopOnSignal()
    with pytest.raises(RuntimeError, match="refused"):
        model.fit(np.ones((4, 3)), np.zeros(4, int), batch_size=2, callbacks=[Records(), stop, Refuses()], verbose=0)
    assert ended == [True]
    assert signal.getsignal(signal.SIGINT) == handler  # StopOnSignal gave its handler back
