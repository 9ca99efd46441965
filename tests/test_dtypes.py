"""float64 wherever a user asks for it: containers, the default dtype, conversion, outputs, files, the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest

import scratchnet as sn
from scratchnet import cli
from scratchnet.data import write_idx

L = sn.layers


@pytest.fixture(autouse=True)
def numpy_backend():
    sn.random.seed(0)
    with sn.use_backend("numpy"):
        yield


def _data(rng, n=12, d=6, k=3):
    return rng.standard_normal((n, d)), rng.integers(0, k, n)


def test_a_models_dtype_reaches_the_layers_created_without_one(rng):
    model = sn.Sequential([L.Dense(4, activation="relu"), L.Dropout(0.1), L.Dense(3)], dtype="float64")
    y = model(rng.standard_normal((2, 5)))
    assert y.dtype == np.float64
    assert {p.dtype for p in model.parameters()} == {np.dtype(np.float64)}
    assert all(layer.dtype == np.float64 for layer in model.layers)


def test_nested_models_inherit_the_outer_dtype(rng):
    inner = sn.Sequential([L.Dense(4)])
    outer = sn.Sequential([inner, L.Dense(2)], dtype="float64")
    assert outer(rng.standard_normal((2, 3))).dtype == np.float64
    assert inner.layers[0].kernel.dtype == np.float64


def test_an_explicit_layer_dtype_that_contradicts_the_models_is_an_error_naming_both():
    with pytest.raises(ValueError, match=r"layer 'fc' was given dtype float32 but the model Sequential 'sequential' "
                                         r"has dtype float64"):
        sn.Sequential([L.Dense(4, name="fc", dtype="float32")], dtype="float64")


def test_a_model_without_a_dtype_takes_its_layers_and_refuses_a_mix(rng):
    model = sn.Sequential([L.Dense(4), L.Dense(2, dtype="float64")])
    assert model.dtype == np.float64 and model.layers[0].dtype == np.float64
    assert model(rng.standard_normal((2, 3))).dtype == np.float64
    with pytest.raises(ValueError, match=r"different dtypes \('a': float32, 'b': float64\)"):
        sn.Sequential([L.Dense(4, name="a", dtype="float32"), L.Dense(2, name="b", dtype="float64")])


def test_a_built_float32_layer_cannot_silently_join_a_float64_model(rng):
    dense = L.Dense(2)
    dense(rng.standard_normal((1, 3)).astype(np.float32))
    with pytest.raises(ValueError, match=r"is built in float32 and cannot join a float64 model; convert it first"):
        sn.Sequential([dense], dtype="float64")


def test_set_floatx_sets_the_default_for_new_layers_and_works_as_a_context_manager(rng):
    assert sn.floatx() == "float32"
    with sn.set_floatx("float64"):
        assert sn.floatx() == "float64"
        model = sn.Sequential([L.Dense(3)])
    assert sn.floatx() == "float32"
    assert model(rng.standard_normal((2, 4))).dtype == np.float64
    sn.set_floatx("float64")
    try:
        assert L.Dense(3).dtype == np.float64
    finally:
        sn.set_floatx("float32")
    with pytest.raises(ValueError, match="set_floatx: dtype must be 'float32' or 'float64', got 'float16'"):
        sn.set_floatx("float16")


def test_astype_converts_weights_optimizer_slots_and_moving_averages_in_place(rng):
    x, y = _data(rng)
    model = sn.Sequential([L.Dense(5, activation="tanh"), L.Dense(3)])
    model.compile(sn.optimizers.Adam(0.01), sn.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.ema = sn.ExponentialMovingAverage(0.9)
    model.train_on_batch(x, y)
    before = [w.astype(np.float64) for w in model.get_weights()]
    assert model.astype("float64") is model
    assert all(p.value.dtype == np.float64 for p in model.parameters())
    assert all(a.dtype == np.float64 for a in model.optimizer.state_dict().values() if a.ndim)
    assert all(a.dtype == np.float64 for a in model.ema.state_dict().values())
    for b, w in zip(before, model.get_weights()):
        np.testing.assert_array_equal(b, w)
    model.train_on_batch(x, y)  # training goes on in float64
    assert model.predict(x).dtype == np.float64
    assert all(p.value.dtype == np.float64 for p in model.parameters())


def test_a_single_layer_converts_too_for_the_gradient_checker(rng):
    dense = L.Dense(3)
    dense(rng.standard_normal((2, 4)).astype(np.float32))
    dense.astype("float64")
    assert dense.kernel.dtype == np.float64
    sn.gradcheck.check_layer(dense, rng.standard_normal((2, 4)))


def test_outputs_keep_float64_predict_evaluate_and_train_on_batch(rng):
    x, y = _data(rng)
    model = sn.Sequential([L.Dense(3)], dtype="float64")
    model.compile(sn.optimizers.SGD(0.1), sn.losses.SparseCategoricalCrossentropy(from_logits=True))
    out = model.predict(x)
    assert out.dtype == np.float64
    # The loss is the float64 cross-entropy, not a float32 one rounded back.
    z = out - out.max(axis=1, keepdims=True)
    expected = float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y]))
    assert model.evaluate(x, y)["loss"] == pytest.approx(expected, rel=1e-13)
    assert model.train_on_batch(x, y)["loss"] == pytest.approx(expected, rel=1e-13)


def test_checkpoints_and_exports_keep_float64(rng, tmp_path):
    x, y = _data(rng)
    model = sn.Sequential([L.Dense(4), L.Dense(3)], dtype="float64")
    model.compile(sn.optimizers.Adam(0.01), sn.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.train_on_batch(x, y)
    path = sn.Checkpoint(model).save(str(tmp_path), step=1)
    twin = sn.Sequential([L.Dense(4), L.Dense(3)], dtype="float64")
    twin.compile(sn.optimizers.Adam(0.01), sn.losses.SparseCategoricalCrossentropy(from_logits=True))
    twin.build((None, 6))
    sn.Checkpoint(twin).restore(path)
    for a, b in zip(model.get_weights(), twin.get_weights()):
        assert b.dtype == np.float64
        np.testing.assert_array_equal(a, b)
    sn.export.save_model(model, str(tmp_path / "model.sn"))
    loaded = sn.export.load_model(str(tmp_path / "model.sn"))
    assert loaded.dtype == np.float64
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_zoo_models_build_in_float64():
    recipe = sn.zoo.build("mlp", hidden=8, dtype="float64")
    assert {p.dtype for p in recipe.model.parameters()} == {np.dtype(np.float64)}


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory):
    d = tmp_path_factory.mktemp("mnist")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 120), ("t10k", 20)):
        write_idx(d / f"{prefix}-images-idx3-ubyte.gz", (rng.random((n, 28, 28)) * 255).astype(np.uint8))
        write_idx(d / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n).astype(np.uint8))
    return str(d)


def _train(data, logdir, steps, *extra):
    return ["train", "mlp", "--data", data, "--validation-size", "20", "--steps", str(steps), "--batch-size", "20",
            "--checkpoint-every", "2", "--logdir", str(logdir), "--backend", "numpy", "--no-download",
            "--no-progress", *extra]


def test_the_cli_trains_in_float64_records_it_and_a_resumed_run_keeps_it(tiny_mnist, tmp_path, capsys):
    from scratchnet.checkpoint import load_variables

    assert cli.main(_train(tiny_mnist, tmp_path, 2, "--dtype", "float64")) == 0
    assert json.loads((tmp_path / "run.json").read_text())["dtype"] == "float64"
    assert cli.main(_train(tiny_mnist, tmp_path, 4, "--resume")) == 0
    out = capsys.readouterr().out
    assert "steps 2 -> 4" in out and "float64" in out
    arrays = load_variables(sn.latest_checkpoint(str(tmp_path)))
    assert arrays["layer1/kernel"].dtype == np.float64
    assert json.loads((tmp_path / "run.json").read_text())["dtype"] == "float64"
    # A resumed run cannot change its dtype.
    assert cli.main(_train(tiny_mnist, tmp_path, 6, "--resume", "--dtype", "float32")) == 2
    assert "argument --dtype" in capsys.readouterr().err
