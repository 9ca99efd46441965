"""A user's own op and layers: README.md's example checked, trained, exported, checkpointed, against Keras.

The example is the code of README.md's section "Your own layers and ops",
not a copy of it: this module runs the section's definitions (its imports,
functions and classes) to get ``swish``, ``Swish`` and ``LayerNorm``, and
``test_readme_section_runs`` runs the whole section as a reader would.
"""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import numpy as np
import pytest

import scratchnet as sn
from helpers import assert_close, load_tensorflow

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Your own layers and ops"
# The module the README's classes say they come from (``LayerNorm.__module__``). Running the
# section again under the same name re-registers the same classes, as re-importing a module would.
README_MODULE = "readme_custom_layers"


def readme_code():
    """The ```python blocks of README.md's section ``SECTION``, in order, as one program."""
    text = README.read_text(encoding="utf-8")
    start = text.index(SECTION + "\n")
    end = text.find("\n## ", start + len(SECTION))
    section = text[start:] if end < 0 else text[start:end]
    blocks = re.findall(r"^```python\n(.*?)^```", section, re.S | re.M)
    assert blocks, f"README.md: no ```python block under {SECTION!r}"
    return "\n".join(blocks)


def run_readme(definitions_only=False):
    """The namespace the section's code leaves, run in a fresh one; only its imports, functions and classes if asked."""
    tree = ast.parse(readme_code(), filename="README.md")
    if definitions_only:
        tree.body = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef))]
    namespace = {"__name__": README_MODULE}
    exec(compile(tree, "README.md", "exec"), namespace)
    return namespace


_readme = run_readme(definitions_only=True)
swish, Swish, LayerNorm = _readme["swish"], _readme["Swish"], _readme["LayerNorm"]


@pytest.fixture(autouse=True)
def reference_backend():
    """The NumPy backend unless a test asks for the ``backend`` fixture (entered after this one)."""
    with sn.use_backend("numpy"):
        yield


def normal(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape)


def toy_problem(n=256):
    """Two classes that a linear model cannot separate: the sign of x0 * x1."""
    x = normal(2, n, 8).astype(np.float32)
    return x, (x[:, 0] * x[:, 1] > 0).astype(np.int32)


def trained_model(epochs=3):
    sn.random.seed(0)
    x, y = toy_problem()
    model = sn.Sequential([sn.layers.Dense(16), LayerNorm(), Swish(), sn.layers.Dense(2)])
    model.compile(sn.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    history = model.fit(x, y, batch_size=32, epochs=epochs, verbose=0)
    return model, x, y, history


# -- the op --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["directional", "full"])
def test_swish_passes_the_gradient_check(mode):
    report = sn.gradcheck.check_op(swish, normal(0, 4, 5) * 3, mode=mode)
    assert report.passed and report["x"].max_rel_error < 1e-7


def test_swish_as_a_layer_passes_the_gradient_check():
    assert sn.gradcheck.check_layer(Swish(dtype="float64"), normal(1, 3, 7)).passed


# -- LayerNorm against Keras and finite differences ------------------------------------------------------
def test_layer_norm_matches_keras_layer_normalization(backend):
    tf_ = load_tensorflow()
    x = normal(0, 4, 3, 6) * 2 + 1  # leading axes (4, 3): normalised over the last only
    gamma, beta, dy = normal(1, 6), normal(2, 6), normal(3, 4, 3, 6)
    keras_layer = tf_.keras.layers.LayerNormalization(epsilon=1e-3, dtype="float64")
    keras_layer.build(x.shape)
    keras_layer.set_weights([gamma, beta])
    xt = tf_.constant(x)
    with tf_.GradientTape() as tape:
        tape.watch(xt)
        yt = keras_layer(xt)
        loss = tf_.reduce_sum(yt * dy)
    want = [np.asarray(tf_.convert_to_tensor(g)) for g in tape.gradient(loss, [xt, *keras_layer.trainable_weights])]

    layer = LayerNorm(epsilon=1e-3, dtype="float64")
    layer.forward(backend.xp.asarray(x))  # build
    layer.set_weights([gamma, beta])
    y, backprop = layer.forward(backend.xp.asarray(x), training=True)
    dx = backprop(backend.xp.asarray(dy))
    assert_close(sn.to_numpy(y), yt.numpy(), np.float64, "y")
    assert_close(sn.to_numpy(dx), want[0], np.float64, "dx")
    assert_close(sn.to_numpy(layer.gamma.grad), want[1], np.float64, "dgamma")
    assert_close(sn.to_numpy(layer.beta.grad), want[2], np.float64, "dbeta")


@pytest.mark.parametrize("mode", ["directional", "full"])
def test_layer_norm_passes_the_gradient_check(mode):
    layer = LayerNorm(dtype="float64")
    x = normal(0, 3, 2, 6)
    layer.forward(x)  # build, then move gamma and beta away from ones and zeros
    layer.set_weights([normal(1, 6), normal(2, 6)])
    report = sn.gradcheck.check_layer(layer, x, mode=mode)
    assert [c.name for c in report] == ["x", "layer_norm/gamma", "layer_norm/beta"]
    assert report.passed


def test_the_gradient_check_catches_a_layer_norm_without_the_variance_term():
    class Incomplete(LayerNorm):
        def call(self, x, training=False):
            y, backprop = super().call(x, training)
            sigma = (x.var(axis=-1, keepdims=True) + self.epsilon) ** 0.5

            def without_variance_term(dy):
                backprop(dy)
                dxhat = dy * self.gamma.value
                return (dxhat - dxhat.mean(axis=-1, keepdims=True)) / sigma

            return y, without_variance_term

    with pytest.raises(sn.gradcheck.GradcheckError, match="input 'x'") as e:
        sn.gradcheck.check_layer(Incomplete(dtype="float64"), normal(0, 3, 6))
    assert e.value.names == ["x"]


# -- training, export, checkpoints, configs ---------------------------------------------------------------
def test_a_model_with_layer_norm_trains_with_fit():
    _, _, _, history = trained_model(epochs=5)
    losses = history.history["loss"]
    assert all(later < earlier for earlier, later in zip(losses, losses[1:])), losses
    assert losses[-1] < 0.9 * losses[0], losses


def test_an_exported_model_with_layer_norm_predicts_the_same(tmp_path):
    model, x, _, _ = trained_model()
    path = str(tmp_path / "model.snm")
    sn.export.save_model(model, path)
    loaded = sn.export.load_model(path)
    assert [type(layer) for layer in loaded.layers] == [sn.layers.Dense, LayerNorm, Swish, sn.layers.Dense]
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_a_checkpoint_restores_the_layer_norm_weights(tmp_path):
    model, x, y, _ = trained_model()
    norm = model.layers[1]
    saved = [norm.gamma.value.copy(), norm.beta.value.copy()]
    expected = model.predict(x)
    path = sn.Checkpoint(model).save(str(tmp_path), step=model.step)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert not np.array_equal(norm.gamma.value, saved[0])
    sn.Checkpoint(model).restore(path)
    np.testing.assert_array_equal(norm.gamma.value, saved[0])
    np.testing.assert_array_equal(norm.beta.value, saved[1])
    np.testing.assert_array_equal(model.predict(x), expected)


def test_layer_norm_round_trips_through_its_config():
    layer = LayerNorm(epsilon=1e-5, name="norm", dtype="float64")
    config = layer.get_config()
    assert config == {"name": "norm", "dtype": "float64", "epsilon": 1e-5}
    assert LayerNorm.from_config(config).get_config() == config
    model = sn.Sequential([sn.layers.Dense(3), layer, Swish()])
    config = json.loads(json.dumps(sn.layers.serialize(model)))  # JSON-ready
    again = sn.layers.deserialize(config)
    assert [type(layer) for layer in again.layers] == [sn.layers.Dense, LayerNorm, Swish]
    assert again.layers[1].get_config() == layer.get_config()


def test_save_model_names_an_unregistered_custom_layer(tmp_path):
    class Unregistered(sn.Layer):
        def call(self, x, training=False):
            return x, lambda dy: dy

    model = sn.Sequential([sn.layers.Dense(3), Unregistered()])
    model.build((None, 4))
    path = tmp_path / "model.snm"
    with pytest.raises(ValueError, match=r"Unregistered is not a registered layer; decorate the class with @sn\.layers\.register"):
        sn.export.save_model(model, str(path))
    assert not path.exists()


def test_registering_another_class_under_a_taken_name_is_an_error():
    with pytest.raises(ValueError, match=f"the name 'LayerNorm' is taken by {README_MODULE}.LayerNorm"):
        sn.layers.register(type("OtherNorm", (sn.Layer,), {}), name="LayerNorm")
    with pytest.raises(ValueError, match="the name 'LayerNorm' is taken"):
        sn.layers.register(type("LayerNorm", (sn.Layer,), {}))  # same name, another module
    assert type(sn.layers.deserialize({"class_name": "LayerNorm", "config": {}})) is LayerNorm


# -- the README -------------------------------------------------------------------------------------------
def test_readme_section_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the section exports to a file in the working directory
    try:
        namespace = run_readme()
    finally:
        # The section registered its own LayerNorm and Swish under their names; give them back to this
        # module's classes (same module and name: allowed, as for a re-imported module).
        sn.layers.register(LayerNorm)
        sn.layers.register(Swish)
    losses = namespace["history"].history["loss"]
    assert losses[-1] < losses[0], losses
    assert namespace["report"].passed
    assert namespace["LayerNorm"] is not LayerNorm  # a fresh run of the section, not this module's classes
