"""The convolution algorithm: float64 is the exact sum (reference-grade), float32 keeps Winograd, and a switch chooses.

``conv_algorithm`` / ``$SCRATCHNET_CONV_ALGORITHM`` (``scratchnet/_config.py``):
``auto`` runs Winograd F(4x4, 5x5) for float32 stride-1 5x5 convolutions on
the numba backend and the direct algorithm (im2col and GEMM) for float64;
``direct`` and ``winograd`` force one, and ``winograd`` where it cannot apply
is an error, never another algorithm.

Why float64 does not take Winograd: an output whose window holds only zeros
(most of an MNIST digit) is 0 in the direct sum and a tiny nonzero through
Winograd's transforms; a ReLU passes it, a max-pool then routes the gradient
to another pixel than TensorFlow, and training amplifies the difference. The
seed LeNet in float64 ended 200 SGD steps 0.3 to 0.7 away from Keras
(relative, worst weight, batch 4 to 16) through Winograd, and 1e-15 away
through the direct algorithm: the first test holds the second.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

import scratchnet as sn
from scratchnet import _config
from scratchnet._config import conv_algorithm, get_conv_algorithm
from scratchnet.kernels.numba.backend import NumbaOps
from test_interop_float64 import _converted, _keras_step_fn, _rel_diffs, digits  # noqa: F401  (digits: a fixture)

# --- the seed LeNet in float64 tracks Keras ----------------------------------------------------------

STEPS = 200
BATCH = 4  # small, so that 200 steps on both sides take seconds; the drift through Winograd was 0.54 at this size
RTOL = 1e-12  # measured 1.3e-15


@pytest.fixture
def winograd_calls(monkeypatch):
    """Counts of the numba backend's Winograd forward and backward calls during the test."""
    calls = {"forward": 0, "backward": 0}
    winograd = NumbaOps.winograd
    for name in calls:
        def counted(*args, _run=getattr(winograd, name), _name=name, **kwargs):
            calls[_name] += 1
            return _run(*args, **kwargs)

        monkeypatch.setattr(winograd, name, counted)
    return calls


def test_float64_seed_lenet_tracks_keras_to_1e_12_over_200_sgd_steps(digits, winograd_calls):  # noqa: F811
    """The seed LeNet (from_keras of the same Keras model, so the same weights), float64, plain SGD on the same
    batches of digits, each side running freely for 200 steps: every loss and every weight array agrees."""
    images, labels = digits
    assert np.mean(images == 0) > 0.5  # digits with many zero pixels: the windows where Winograd was not exact
    with sn.use_backend("numba"), conv_algorithm("auto"):
        keras_model, model, _ = _converted("lenet", "float64", digits)
        initial = keras_model.get_weights()
        rng = np.random.default_rng(0)
        batches = [(images[idx].astype(np.float64), labels[idx])
                   for idx in (rng.choice(len(images), size=BATCH, replace=False) for _ in range(STEPS))]
        # Each side runs its 200 steps in one stretch: TensorFlow's threads starve interleaved steps of the cores.
        keras_step = _keras_step_fn(keras_model, "float64")
        keras_losses = [float(keras_step(x, y)) for x, y in batches]
        losses = [model.train_on_batch(x, y)["loss"] for x, y in batches]
    assert winograd_calls == {"forward": 0, "backward": 0}
    for i, (loss, keras_loss) in enumerate(zip(losses, keras_losses)):
        assert loss == pytest.approx(keras_loss, rel=1e-12), f"step {i}"
    ours, theirs = model.get_weights(), keras_model.get_weights()
    assert {w.dtype.name for w in ours} == {"float64"}
    diffs, names = _rel_diffs(ours, theirs), [p.name for p in model.parameters()]
    worst = max(range(len(diffs)), key=diffs.__getitem__)
    print(f"\nlenet float64: max relative weight difference after {STEPS} steps {diffs[worst]:.2e} ({names[worst]})")
    assert diffs[worst] < RTOL, f"{names[worst]} differs by {diffs[worst]:.2e} relative"
    assert max(_rel_diffs(theirs, initial)) > 0.1  # it trained: the weights moved far more than the bound


# --- which algorithm runs --------------------------------------------------------------------------


def _lenet_conv2(dtype, rng):
    """LeNet's second convolution at batch 2 (Winograd applies), on digits-like input: ReLU'd, a zero half."""
    x = np.maximum(rng.standard_normal((2, 14, 14, 32)), 0)
    x[:, :, :7] = 0  # every window over the left half sees only zeros: its exact output is 0
    w = 0.1 * rng.standard_normal((5, 5, 32, 64))
    b = np.zeros(64)
    return x.astype(dtype), w.astype(dtype), b.astype(dtype)


def _forward_backward(x, w, b, dy, activation=None):
    y, backprop = sn.ops.conv2d(x, w, b, padding="SAME", activation=activation)
    return (y, *backprop(dy))


def _reference(x, w, b, dy, activation=None):
    with sn.use_backend("numpy"):
        return _forward_backward(x, w, b, dy, activation)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_auto_runs_winograd_for_float32_and_the_exact_sum_for_float64(dtype, rng, winograd_calls):
    x, w, b = _lenet_conv2(dtype, rng)
    dy = rng.standard_normal((2, 14, 14, 64)).astype(dtype)
    with sn.use_backend("numba"), conv_algorithm("auto"):
        got = _forward_backward(x, w, b, dy)
    want = _reference(x, w, b, dy)
    if dtype == "float32":
        assert winograd_calls == {"forward": 1, "backward": 1}
        for g, r in zip(got, want):
            np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4 * np.abs(r).max())
    else:
        assert winograd_calls == {"forward": 0, "backward": 0}
        for g, r in zip(got, want):
            np.testing.assert_allclose(g, r, rtol=1e-13, atol=1e-13 * np.abs(r).max())
        np.testing.assert_array_equal(got[0][:, :, :5], 0)  # the zero windows' outputs are exactly 0, as TF's are


def test_winograd_forced_in_float64_is_close_to_the_exact_sum_but_not_equal(rng, winograd_calls):
    x, w, b = _lenet_conv2("float64", rng)
    dy = rng.standard_normal((2, 14, 14, 64))
    with sn.use_backend("numba"), conv_algorithm("winograd"):
        got = _forward_backward(x, w, b, dy)
        y_relu, dx_relu, _, _ = _forward_backward(x, w, b, dy, "relu")
    want = _reference(x, w, b, dy)
    assert winograd_calls == {"forward": 2, "backward": 2}
    for g, r, name in zip(got, want, ("y", "dx", "dw", "db")):
        assert g.dtype == np.float64, name
        np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-12 * np.abs(r).max(), err_msg=name)
    # ... but not exact: the zero windows next to the strokes come out as tiny nonzeros,
    y = got[0]
    assert np.count_nonzero(y[:, :, :5]) > 0
    assert np.abs(y[:, :, :5]).max() < 1e-12 * np.abs(y).max()
    # and a ReLU passes the positive ones, with the whole of their gradient: dx is no longer the reference's.
    assert np.count_nonzero(y_relu[:, :, :5]) > 0
    _, dx_exact, _, _ = _reference(x, w, b, dy, "relu")
    assert np.abs(dx_relu - dx_exact).max() > 0.1 * np.abs(dx_exact).max()


def test_direct_forced_in_float32_does_not_run_winograd(rng, winograd_calls):
    x, w, b = _lenet_conv2("float32", rng)
    dy = rng.standard_normal((2, 14, 14, 64)).astype(np.float32)
    with sn.use_backend("numba"), conv_algorithm("direct"):
        got = _forward_backward(x, w, b, dy)
    assert winograd_calls == {"forward": 0, "backward": 0}
    np.testing.assert_array_equal(got[0][:, :, :5], 0)
    for g, r in zip(got, _reference(x, w, b, dy)):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5 * np.abs(r).max())


def test_the_backward_runs_the_algorithm_its_forward_ran(rng, winograd_calls):
    x, w, b = _lenet_conv2("float64", rng)
    dy = rng.standard_normal((2, 14, 14, 64))
    with sn.use_backend("numba"):
        with conv_algorithm("winograd"):
            _, backprop = sn.ops.conv2d(x, w, b, padding="SAME")
        backprop(dy)  # outside the block
        assert winograd_calls == {"forward": 1, "backward": 1}
        with conv_algorithm("direct"):
            _, backprop = sn.ops.conv2d(x, w, b, padding="SAME")
            with conv_algorithm("winograd"):
                backprop(dy)
        assert winograd_calls == {"forward": 1, "backward": 1}


# --- the switch -----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend, x_shape, w_shape, strides", [
    ("numba", (2, 14, 14, 32), (5, 5, 32, 64), 2),  # stride 2
    ("numba", (2, 14, 14, 32), (3, 3, 32, 64), 1),  # 3x3
    ("numba", (2, 28, 28, 1), (5, 5, 1, 32), 1),  # LeNet's first layer: one channel in
    ("numpy", (2, 14, 14, 32), (5, 5, 32, 64), 1),  # one that numba's Winograd takes, on a backend without one
])
def test_winograd_where_it_cannot_apply_is_an_error_naming_the_op_the_setting_and_the_shapes(
        backend, x_shape, w_shape, strides, winograd_calls):
    x, w = np.ones(x_shape), np.ones(w_shape)
    with sn.use_backend(backend), conv_algorithm("winograd"):
        with pytest.raises(ValueError) as e:
            sn.ops.conv2d(x, w, strides=strides, padding="SAME")
    message = str(e.value)
    assert message.startswith("conv2d: the convolution algorithm is 'winograd' (conv_algorithm() or "
                              "SCRATCHNET_CONV_ALGORITHM)")
    assert f"x: {x_shape}, w: {w_shape}, strides: {(strides, strides)}" in message
    assert "Choose 'auto' (Winograd where it applies) or 'direct'" in message
    assert ("the numpy backend has no Winograd convolution" in message) == (backend == "numpy")
    assert winograd_calls == {"forward": 0, "backward": 0}


@pytest.fixture
def fresh_setting(monkeypatch):
    """This thread's setting forgotten, so that the next convolution reads ``$SCRATCHNET_CONV_ALGORITHM``."""
    monkeypatch.setattr(_config._conv_state, "algorithm", None, raising=False)
    return monkeypatch


@pytest.mark.parametrize("value", ["fast", "Winograd4x4", "1"])
def test_a_bad_environment_value_is_an_error_naming_the_variable_and_the_choices(fresh_setting, value):
    fresh_setting.setenv("SCRATCHNET_CONV_ALGORITHM", value)
    with pytest.raises(ValueError, match=rf"^SCRATCHNET_CONV_ALGORITHM='{value}': unknown convolution algorithm "
                                         rf"'{value}'; choose one of 'auto', 'direct', 'winograd'$"):
        sn.ops.conv2d(np.ones((1, 6, 6, 1)), np.ones((3, 3, 1, 1)))


def test_a_bad_setting_is_an_error_naming_the_setter_and_the_choices():
    before = get_conv_algorithm()
    with pytest.raises(ValueError, match=r"^conv_algorithm: unknown convolution algorithm 'im2col'; choose one of "
                                         r"'auto', 'direct', 'winograd'$"):
        conv_algorithm("im2col")
    with pytest.raises(TypeError, match=r"^conv_algorithm: the convolution algorithm must be a string"):
        conv_algorithm(None)
    assert get_conv_algorithm() == before  # a refused value changes nothing


@pytest.mark.parametrize("value, expected", [("direct", "direct"), (" Winograd ", "winograd"), ("", "auto")])
def test_the_environment_variable_sets_the_default(fresh_setting, value, expected):
    fresh_setting.setenv("SCRATCHNET_CONV_ALGORITHM", value)
    assert get_conv_algorithm() == expected


def test_unset_means_auto_and_a_new_thread_starts_from_the_environment(fresh_setting):
    fresh_setting.delenv("SCRATCHNET_CONV_ALGORITHM", raising=False)
    assert get_conv_algorithm() == "auto"
    fresh_setting.setenv("SCRATCHNET_CONV_ALGORITHM", "direct")
    seen = []
    with conv_algorithm("winograd"):
        thread = threading.Thread(target=lambda: seen.append(get_conv_algorithm()))
        thread.start()
        thread.join()
        assert get_conv_algorithm() == "winograd"
    assert seen == ["direct"]


def test_a_plain_call_switches_for_good_and_the_context_manager_restores(fresh_setting):
    fresh_setting.delenv("SCRATCHNET_CONV_ALGORITHM", raising=False)
    with conv_algorithm("direct") as name:
        assert name == get_conv_algorithm() == "direct"
        conv_algorithm("winograd")
        assert get_conv_algorithm() == "winograd"
    assert get_conv_algorithm() == "auto"
    assert repr(conv_algorithm("direct")) == "conv_algorithm('direct')"
    assert get_conv_algorithm() == "direct"  # restored to unset by the fixture after the test
