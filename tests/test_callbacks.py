"""Callbacks: TensorBoard event files read back with TensorBoard's reader, CSV/JSONL logs, progress bar, checkpoints."""
from __future__ import annotations

import csv
import io
import json
import os

import numpy as np
import pytest

import scratchnet as sn
from scratchnet import layers as L

X = np.random.default_rng(0).standard_normal((20, 4)).astype(np.float32)
Y = np.arange(20) % 2


@pytest.fixture(autouse=True)
def reference_backend():
    """These tests are about files, not kernels: the reference backend, with nothing to compile."""
    with sn.use_backend("numpy"):
        yield


def make_model():
    sn.random.seed(0)
    model = sn.Sequential([L.Dense(5, activation="relu"), L.Dense(2)])
    schedule = sn.schedules.ExponentialDecay(0.1, 3, 0.5)
    model.compile(sn.optimizers.SGD(schedule), sn.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])
    return model


def fit(model, callbacks, epochs=2, **kw):
    kw.setdefault("verbose", 0)
    return model.fit(X, Y, batch_size=8, epochs=epochs, validation_data=(X, Y), callbacks=callbacks, **kw)


def read_scalars(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(run_dir)
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_writes_train_and_test_runs_that_tensorboard_reads_back(tmp_path):
    model = make_model()
    history = fit(model, [sn.callbacks.TensorBoard(str(tmp_path))]).history
    train = read_scalars(str(tmp_path / "train"))
    test = read_scalars(str(tmp_path / "test"))
    assert set(train) == {"loss", "accuracy", "learning_rate"}
    assert set(test) == {"loss", "accuracy"}
    # x axis: the global step at the end of each epoch (3 batches per epoch).
    assert [s for s, _ in train["loss"]] == [3, 6] == [s for s, _ in test["loss"]]
    np.testing.assert_allclose([v for _, v in train["loss"]], history["loss"], rtol=1e-6)
    np.testing.assert_allclose([v for _, v in test["accuracy"]], history["val_accuracy"], rtol=1e-6)
    # The rate the next update uses: 0.1 * 0.5 ** (step / 3).
    np.testing.assert_allclose([v for _, v in train["learning_rate"]], [0.05, 0.025], rtol=1e-6)


def test_tensorboard_update_freq_logs_every_n_steps_and_evaluate_logs_to_test(tmp_path):
    model = make_model()
    tb = sn.callbacks.TensorBoard(str(tmp_path), update_freq=2)
    fit(model, [tb], epochs=2)
    steps = [s for s, _ in read_scalars(str(tmp_path / "train"))["loss"]]
    assert steps == [2, 3, 4, 6, 6]  # every 2 steps, plus each epoch's end
    model.evaluate(X, Y, callbacks=[tb])
    tb.close()
    assert [s for s, _ in read_scalars(str(tmp_path / "test"))["loss"]] == [3, 6, 6]


def test_csv_and_jsonl_logs_hold_the_same_scalars_as_the_history(tmp_path):
    model = make_model()
    csv_path, jsonl_path = str(tmp_path / "log.csv"), str(tmp_path / "logs" / "log.jsonl")
    history = fit(model, [sn.callbacks.CSVLogger(csv_path), sn.callbacks.JSONLLogger(jsonl_path)]).history
    rows = list(csv.DictReader(open(csv_path)))
    records = [json.loads(line) for line in open(jsonl_path)]
    assert list(rows[0]) == ["epoch", "step", "accuracy", "loss", "val_accuracy", "val_loss", "learning_rate"]
    assert [int(r["epoch"]) for r in rows] == [0, 1] == [r["epoch"] for r in records]
    assert [int(r["step"]) for r in rows] == [3, 6] == [r["step"] for r in records]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert [float(r[key]) for r in rows] == history[key]
        assert [r[key] for r in records] == history[key]
    assert [r["learning_rate"] for r in records] == pytest.approx([0.05, 0.025])


def test_csv_and_jsonl_step_mode_log_train_every_n_steps_and_each_evaluation(tmp_path):
    model = make_model()
    csv_path, jsonl_path = str(tmp_path / "log.csv"), str(tmp_path / "log.jsonl")
    loggers = [sn.callbacks.CSVLogger(csv_path, update_freq=2), sn.callbacks.JSONLLogger(jsonl_path, update_freq=2)]
    fit(model, loggers, epochs=2)
    model.evaluate(X, Y, callbacks=loggers)
    records = [json.loads(line) for line in open(jsonl_path)]
    rows = list(csv.DictReader(open(csv_path)))
    assert [(r["run"], r["step"]) for r in records] == [
        ("train", 2), ("test", 3), ("train", 4), ("train", 6), ("test", 6), ("test", 6)]
    assert [(r["run"], int(r["step"])) for r in rows] == [(r["run"], r["step"]) for r in records]
    assert list(rows[0])[:2] == ["run", "step"]
    train = [r for r in records if r["run"] == "train"]
    assert all("learning_rate" in r and "loss" in r for r in train)
    assert records[-1]["accuracy"] == pytest.approx(model.evaluate(X, Y)["accuracy"])


def test_loggers_reject_a_bad_update_freq():
    for cls in (sn.callbacks.CSVLogger, sn.callbacks.JSONLLogger):
        with pytest.raises(ValueError, match=f"{cls.__name__}: update_freq must be 'epoch' or a positive int"):
            cls("x.log", update_freq=0)


def test_csv_logger_appends_under_the_existing_header_or_starts_afresh(tmp_path):
    path = str(tmp_path / "log.csv")
    model = make_model()
    fit(model, [sn.callbacks.CSVLogger(path)], epochs=1)
    fit(model, [sn.callbacks.CSVLogger(path, append=True)], epochs=1)
    lines = open(path).read().splitlines()
    assert len(lines) == 3 and lines[0].startswith("epoch,step,")
    fit(model, [sn.callbacks.CSVLogger(path)], epochs=1)
    assert len(open(path).read().splitlines()) == 2


def test_progress_bar_shows_each_epoch_and_can_be_disabled():
    shown, hidden = io.StringIO(), io.StringIO()
    fit(make_model(), [sn.callbacks.ProgressBar(file=shown)])
    fit(make_model(), [sn.callbacks.ProgressBar(disable=True, file=hidden)])
    text = shown.getvalue()
    assert "Epoch 1/2" in text and "Epoch 2/2" in text and "3/3" in text and "loss=" in text
    assert hidden.getvalue() == ""


def test_model_checkpoint_saves_every_n_steps_keeps_the_last_and_saves_at_the_end(tmp_path):
    model = make_model()
    model.ema = sn.ExponentialMovingAverage(0.9)
    d = str(tmp_path)
    fit(model, [sn.callbacks.ModelCheckpoint(d, every_n_steps=2, max_to_keep=2)], epochs=3)  # steps 1..9
    assert sorted(f for f in os.listdir(d) if f.startswith("model-")) == ["model-8", "model-9"]
    assert sn.latest_checkpoint(d) == os.path.join(d, "model-9")
    names = dict(sn.checkpoint.list_variables(sn.latest_checkpoint(d)))
    assert "dense/kernel/ExponentialMovingAverage" in names


def test_callback_base_hooks_are_all_no_ops_and_fit_sets_model_and_params():
    seen = []

    class Recorder(sn.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append((epoch, self.params["steps"], self.model.step))

    fit(make_model(), [Recorder()])
    assert seen == [(0, 3, 3), (1, 3, 6)]


def test_bad_callback_arguments_are_errors():
    with pytest.raises(ValueError, match="TensorBoard: update_freq must be 'epoch' or a positive int"):
        sn.callbacks.TensorBoard("x", update_freq=0)
    with pytest.raises(ValueError, match="ModelCheckpoint: every_n_steps must be a positive int"):
        sn.callbacks.ModelCheckpoint("x", every_n_steps=0)
