"""Layer and batch normalization: the ops against TensorFlow and finite differences, the layers against Keras's
(outputs, input and weight gradients, the moving averages, training and inference), float32 and float64."""
from __future__ import annotations

import numpy as np
import pytest

import scratchnet as sn
from helpers import assert_close, backend_params, load_tensorflow, to_backend
from scratchnet.gradcheck import check_op

DTYPES = [np.float32, np.float64]
DTYPE_IDS = ["float32", "float64"]


def data(shape, dtype, seed=0, offset=3.0):
    """Inputs far from zero mean and unit variance (an offset and a spread per channel), and an upstream gradient."""
    rng = np.random.default_rng(seed)
    x = offset + rng.standard_normal(shape) * np.linspace(0.5, 4.0, shape[-1])
    return x.astype(dtype), rng.standard_normal(shape).astype(dtype)


def keras_layer(kind, dtype, x, dy, training, **kwargs):
    """Keras's output, dx, weight gradients and weights after the call (moving averages updated in training)."""
    tf = load_tensorflow()
    layer = getattr(tf.keras.layers, kind)(dtype="float64" if dtype == np.float64 else "float32", **kwargs)
    xt = tf.constant(x)
    layer(xt)  # build
    rng = np.random.default_rng(5)
    weights = [(1 + 0.3 * rng.standard_normal(w.shape)).astype(dtype) if "variance" in w.name or "gamma" in w.name
               else (0.3 * rng.standard_normal(w.shape)).astype(dtype) for w in layer.weights]
    layer.set_weights(weights)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = layer(xt, training=training)
        loss = tf.reduce_sum(y * dy)
    trainable = layer.trainable_weights
    grads = tape.gradient(loss, [xt, *trainable])
    return y.numpy(), grads[0].numpy(), [g.numpy() for g in grads[1:]], weights, [w.numpy() for w in layer.weights]


def ours(kind, backend, dtype, x, dy, training, weights, **kwargs):
    layer = getattr(sn.layers, kind)(dtype=dtype, **kwargs)
    layer.forward(to_backend(backend, x))  # build (inference: no moving-average update)
    layer.set_weights(weights)
    y, backprop = layer.forward(to_backend(backend, x), training=training)
    layer.zero_grad()
    dx = backprop(to_backend(backend, dy))
    trainable = [p for p in layer.parameters() if p.trainable]
    return (sn.to_numpy(y), sn.to_numpy(dx), [sn.to_numpy(p.grad) for p in trainable],
            [sn.to_numpy(w) for w in layer.get_weights()])


SHAPES = {"rows": (6, 5), "sequence": (3, 4, 8), "image": (2, 3, 3, 4)}


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("affine", [dict(), dict(center=False), dict(scale=False)], ids=["affine", "no-beta", "no-gamma"])
def test_layer_normalization_matches_keras(backend, dtype, shape, affine):
    x, dy = data(SHAPES[shape], dtype)
    y_k, dx_k, wg_k, weights, _ = keras_layer("LayerNormalization", dtype, x, dy, True, **affine)
    y, dx, wg, _ = ours("LayerNormalization", backend, dtype, x, dy, True, weights, **affine)
    assert_close(y, y_k, dtype, "y")
    assert_close(dx, dx_k, dtype, "dx")
    assert len(wg) == len(wg_k)
    for g, g_k in zip(wg, wg_k):
        assert_close(g, g_k, dtype, "weight gradient")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
def test_batch_normalization_matches_keras(backend, dtype, shape, training):
    """Output, dx, dgamma, dbeta, and the moving averages after the call (updated with momentum in training only)."""
    x, dy = data(SHAPES[shape], dtype, seed=1)
    y_k, dx_k, wg_k, weights, after_k = keras_layer("BatchNormalization", dtype, x, dy, training, momentum=0.9)
    y, dx, wg, after = ours("BatchNormalization", backend, dtype, x, dy, training, weights, momentum=0.9)
    assert_close(y, y_k, dtype, "y")
    assert_close(dx, dx_k, dtype, "dx")
    for g, g_k, name in zip(wg, wg_k, ("dgamma", "dbeta")):
        assert_close(g, g_k, dtype, name)
    for w, w_k, name in zip(after, after_k, ("gamma", "beta", "moving_mean", "moving_variance")):
        assert_close(w, w_k, dtype, name)
    if not training:
        for w, w0 in zip(after[2:], weights[2:]):
            np.testing.assert_array_equal(w, w0)


@pytest.mark.parametrize("op", ["layer_norm", "batch_norm"])
def test_float64_finite_differences(op):
    x, _ = data((4, 3, 5), np.float64, seed=2)
    rng = np.random.default_rng(3)
    gamma, beta = 1 + rng.standard_normal(5), rng.standard_normal(5)
    fn = getattr(sn.ops, op)
    with sn.use_backend("numpy"):
        if op == "layer_norm":
            assert check_op(lambda x, g, b: fn(x, g, b, 1e-3), x, gamma, beta, mode="full").passed
        else:
            assert check_op(lambda x, g, b: fn(x, g, b, 1e-3), x, gamma, beta, mode="full",
                            dy=(rng.standard_normal(x.shape), None, None)).passed


def test_the_ops_match_tensorflow_formulas_with_a_small_epsilon():
    """With PyTorch's epsilon (1e-5) and values of one sign: tf.nn.moments and tf.nn.batch_normalization."""
    tf = load_tensorflow()
    x, dy = data((5, 7), np.float64, seed=4, offset=10.0)
    gamma, beta = np.linspace(0.5, 2, 7), np.linspace(-1, 1, 7)
    for op, axes in (("layer_norm", [-1]), ("batch_norm", [0])):
        with sn.use_backend("numpy"):
            out, backprop = getattr(sn.ops, op)(x, gamma, beta, 1e-5)
            y = out[0] if op == "batch_norm" else out
            dx, dgamma, dbeta = backprop(dy)
        xt, gt, bt = (tf.Variable(a) for a in (x, gamma, beta))
        with tf.GradientTape() as tape:
            mean, var = tf.nn.moments(xt, axes=axes, keepdims=True)
            yt = tf.nn.batch_normalization(xt, mean, var, bt, gt, 1e-5)
            loss = tf.reduce_sum(yt * dy)
        for ours_, theirs, name in zip((y, dx, dgamma, dbeta), (yt, *tape.gradient(loss, [xt, gt, bt])),
                                       ("y", "dx", "dgamma", "dbeta")):
            assert_close(ours_, theirs.numpy(), np.float64, f"{op} {name}")


def test_batch_norm_returns_the_batch_statistics():
    x, _ = data((6, 2, 3), np.float64, seed=5)
    with sn.use_backend("numpy"):
        (y, mean, variance), _ = sn.ops.batch_norm(x)
    np.testing.assert_allclose(mean, x.reshape(-1, 3).mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(variance, x.reshape(-1, 3).var(axis=0), rtol=1e-13)
    np.testing.assert_allclose(y.reshape(-1, 3).mean(axis=0), 0, atol=1e-14)


def test_a_model_with_batch_norm_trains_and_restores_its_moving_averages(tmp_path):
    """fit updates the moving averages (training) and evaluate uses them; a checkpoint holds and restores them."""
    rng = np.random.default_rng(6)
    x = (5 + 3 * rng.standard_normal((64, 10))).astype(np.float32)
    y = (x[:, 0] > 5).astype(np.int64)

    def build():
        model = sn.Sequential([sn.layers.Dense(16), sn.layers.BatchNormalization(), sn.layers.Activation("relu"),
                               sn.layers.Dense(2)])
        model.compile(optimizer=sn.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        model.build((None, 10))
        return model

    with sn.use_backend("numpy"):
        sn.random.seed(0)
        model = build()
        bn = model.layers[1]
        model.fit(x, y, batch_size=16, epochs=5, verbose=0)
        assert not np.allclose(sn.to_numpy(bn.moving_mean.value), 0)
        before = model.evaluate(x, y, verbose=0)
        path = sn.Checkpoint(model=model).save(str(tmp_path), step=1)
        again = build()
        sn.Checkpoint(model=again).restore(path)
        np.testing.assert_array_equal(sn.to_numpy(again.layers[1].moving_variance.value),
                                      sn.to_numpy(bn.moving_variance.value))
        assert again.evaluate(x, y, verbose=0) == before


@pytest.mark.parametrize("call, message", [
    (lambda: sn.ops.layer_norm(np.ones((2, 3)), np.ones(4)), "gamma must have shape (3,)"),
    (lambda: sn.ops.layer_norm(np.ones((2, 3)), epsilon=0), "epsilon must be a positive number"),
    (lambda: sn.ops.batch_norm(np.ones(3)), "rank >= 2"),
    (lambda: sn.ops.batch_norm(np.ones((1, 3))), "at least 2 values"),
    (lambda: sn.ops.layer_norm(np.ones((2, 0))), "layer_norm: x has no channels to normalize"),
    (lambda: sn.ops.batch_norm(np.ones((4, 0))), "batch_norm: x has no channels to normalize"),
    (lambda: sn.layers.BatchNormalization(momentum=1.0), "momentum must be a number in [0, 1)"),
    (lambda: sn.layers.LayerNormalization(axis=1), "axis must be -1"),
    (lambda: sn.layers.LayerNormalization(epsilon=-1), "epsilon must be a positive number"),
])
def test_bad_arguments_are_one_clear_error(call, message):
    with sn.use_backend("numpy"), pytest.raises(ValueError) as info:
        call()
    assert message in str(info.value)


# --- the fast kernels (normalization_forward / _backward) against the reference ---------------------------------

FAST = backend_params(("numba", "cupy"))
# (rtol, atol): float64 to round-off (the sums in another order), float32 close; atol scaled as in assert_close.
KERNEL_TOLERANCES = {np.dtype(np.float64): (1e-10, 1e-12), np.dtype(np.float32): (1e-4, 1e-5)}
# Awkward shapes: one channel, two values per set, one example, odd sizes, and rows enough for several blocks.
KERNEL_SHAPES = [(2, 1), (1, 2), (2, 3), (7, 1, 1, 1), (1, 5, 3, 2), (3, 4, 5), (9, 2, 3, 6), (611, 3), (40, 16, 5)]
LAYOUTS = {
    "contiguous": lambda a: a,
    "fortran": np.asfortranarray,
    "stepped": lambda a: _stepped(a),
    "reversed": lambda a: np.ascontiguousarray(a[..., ::-1])[..., ::-1],
}


def _stepped(a):
    """``a``'s values, every other element of a NaN-filled buffer along each axis (read a gap, get NaN)."""
    buffer = np.full(tuple(2 * n for n in a.shape), np.nan, dtype=a.dtype)
    view = buffer[tuple(slice(None, None, 2) for _ in a.shape)]
    view[...] = a
    return view


def _run_op(op, x, gamma, beta, dy, epsilon=1e-3):
    """Every result of ``op`` (the statistics too, for batch norm) by name, on the current backend, as NumPy."""
    out, backprop = getattr(sn.ops, op)(x, gamma, beta, epsilon)
    y, mean, var = out if op == "batch_norm" else (out, None, None)
    dx, dgamma, dbeta = backprop(dy)
    named = dict(y=y, mean=mean, var=var, dx=dx, dgamma=dgamma, dbeta=dbeta)
    return {k: None if v is None else np.asarray(sn.to_numpy(v)) for k, v in named.items()}


def _assert_kernel_matches(got, want, dtype, input_scale=1.0):
    """Close to the reference: ``KERNEL_TOLERANCES``, the absolute one scaled by the largest result and by
    ``input_scale`` (the inputs' magnitude over their spread, which their round-off is relative to)."""
    rtol, atol = KERNEL_TOLERANCES[np.dtype(dtype)]
    atol *= input_scale
    assert got.keys() == want.keys()
    for name, expected in want.items():
        actual = got[name]
        if expected is None or actual is None:
            assert actual is None and expected is None, f"{name}: one backend returned None, the other an array"
            continue
        assert actual.shape == expected.shape and actual.dtype == expected.dtype == dtype, name
        scale = max(1.0, float(np.max(np.abs(expected))))
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol * scale, err_msg=name)


def _compare_with_reference(target, op, dtype, x, gamma, beta, dy, layout="contiguous", epsilon=1e-3,
                            input_scale=1.0):
    """``op`` on ``target`` with ``x`` and ``dy`` laid out as ``layout`` says, and on the reference with contiguous
    copies: the same results; the inputs come back unchanged."""
    with sn.use_backend("numpy"):
        want = _run_op(op, x, gamma, beta, dy, epsilon)
    with sn.use_backend(target) as be:
        laid = [None if a is None else be.xp.asarray(LAYOUTS[layout](a)) if a.ndim > 1 else be.xp.asarray(a)
                for a in (x, gamma, beta, dy)]
        got = _run_op(op, *laid, epsilon)
    for a, original in zip(laid, (x, gamma, beta, dy)):
        if a is not None:
            np.testing.assert_array_equal(sn.to_numpy(a), original, err_msg=f"the {target} backend wrote into an input")
    _assert_kernel_matches(got, want, dtype, input_scale)


@pytest.fixture
def split_everything(monkeypatch):
    """The numba kernels split any input between the threads, and sum over blocks of 3 rows: the parts' bounds
    and the blocks' partial sums are exercised on small shapes."""
    from scratchnet.kernels.numba import normalization as kernels
    from scratchnet.kernels.runtime import threads

    monkeypatch.setattr(kernels, "MIN_PART_ELEMENTS", {"rows": 1, "columns": 1})
    monkeypatch.setattr(kernels, "CHUNK_ROWS", 3)
    monkeypatch.setattr(threads, "rows_for", lambda per_row, min_elements=1: 1)


# batch_norm needs at least 2 values per channel (its bad-argument test covers the error): those shapes are
# layer_norm's only, not skipped cases.
AWKWARD_CASES = [(op, shape) for op in ("layer_norm", "batch_norm") for shape in KERNEL_SHAPES
                 if op == "layer_norm" or (len(shape) >= 2 and int(np.prod(shape[:-1])) >= 2)]


@pytest.mark.parametrize("target", FAST)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("op, shape", AWKWARD_CASES, ids=[f"{op}-{shape}" for op, shape in AWKWARD_CASES])
def test_the_fast_kernels_match_the_reference_on_awkward_shapes(target, dtype, op, shape):
    x, dy = data(shape, dtype, seed=sum(shape))
    rng = np.random.default_rng(len(shape))
    gamma, beta = (1 + rng.standard_normal(shape[-1])).astype(dtype), rng.standard_normal(shape[-1]).astype(dtype)
    _compare_with_reference(target, op, dtype, x, gamma, beta, dy)


@pytest.mark.parametrize("target", FAST)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("op", ["layer_norm", "batch_norm"])
@pytest.mark.parametrize("layout", [k for k in LAYOUTS if k != "contiguous"])
@pytest.mark.parametrize("affine", ["both", "gamma", "beta", "neither"])
def test_the_fast_kernels_take_any_layout_and_optional_scale_and_shift(target, dtype, op, layout, affine):
    x, dy = data((5, 3, 4), dtype, seed=7)
    rng = np.random.default_rng(8)
    gamma = (1 + rng.standard_normal(4)).astype(dtype) if affine in ("both", "gamma") else None
    beta = rng.standard_normal(4).astype(dtype) if affine in ("both", "beta") else None
    _compare_with_reference(target, op, dtype, x, gamma, beta, dy, layout)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("op", ["layer_norm", "batch_norm"])
@pytest.mark.parametrize("shape", [(2, 1), (5, 7), (11, 2, 3), (70, 16)], ids=str)
def test_the_numba_kernels_split_between_threads_and_blocks_match_the_reference(split_everything, dtype, op, shape):
    x, dy = data(shape, dtype, seed=9)
    rng = np.random.default_rng(10)
    gamma, beta = (1 + rng.standard_normal(shape[-1])).astype(dtype), rng.standard_normal(shape[-1]).astype(dtype)
    _compare_with_reference("numba", op, dtype, x, gamma, beta, dy, "stepped")


@pytest.mark.parametrize("target", FAST)
@pytest.mark.parametrize("op", ["layer_norm", "batch_norm"])
def test_the_fast_kernels_keep_float64_exact_when_the_mean_dwarfs_the_spread(target, op):
    """Values 1e6 apart from their mean by about 1: the two-pass variance keeps its digits (the one-pass
    ``E[x^2] - E[x]^2`` would lose all but a few), and float64 still matches the reference to the round-off of
    the inputs (an ulp of 1e6 is 1e-10: the deviations from the mean, and so the outputs, carry that much)."""
    x, dy = data((300, 8), np.float64, seed=11, offset=1e6)
    _compare_with_reference(target, op, np.float64, x, np.linspace(0.5, 2, 8), np.linspace(-1, 1, 8), dy,
                            epsilon=1e-12, input_scale=1e6)
    with sn.use_backend(target) as be:
        out, _ = getattr(sn.ops, op)(be.xp.asarray(x), None, None, 1e-12)
    y = np.asarray(sn.to_numpy(out[0] if op == "batch_norm" else out))
    axis = 0 if op == "batch_norm" else 1
    np.testing.assert_allclose(y.std(axis=axis), 1, rtol=1e-6)
