"""avg_pool2d and global pooling: forward and gradient against TensorFlow on every backend, and the layers."""
from __future__ import annotations

import functools
import os

import numpy as np
import pytest

import scratchnet as sn
from helpers import assert_close, load_tensorflow, to_backend
from scratchnet.gradcheck import check_op

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

DTYPES = [np.float32, np.float64]

# (x shape NHWC, ksize, strides, padding)
CASES = {
    "random_2x2_valid": ((2, 8, 8, 3), 2, 2, "VALID"),
    "overlapping_3x3_stride2_valid": ((2, 9, 9, 3), 3, 2, "VALID"),
    "overlapping_3x3_stride1_same_pads_both_sides": ((2, 5, 6, 2), 3, 1, "SAME"),
    "overlapping_3x3_stride2_same": ((2, 8, 7, 2), 3, 2, "SAME"),
    "odd_size_stride2_same": ((2, 7, 9, 3), 2, 2, "SAME"),
    "stride_larger_than_window_valid": ((1, 9, 8, 2), 2, 3, "VALID"),
    "window_larger_than_input_same": ((2, 2, 3, 2), 4, 1, "SAME"),
    "one_by_one_image_same": ((3, 1, 1, 4), 3, 2, "SAME"),
    "one_by_one_window": ((2, 4, 5, 3), 1, 1, "VALID"),
    "batch1_nonsquare_same": ((1, 7, 10, 2), (2, 3), (1, 2), "SAME"),
}


def _inputs(case, dtype):
    x_shape, ksize, strides, padding = CASES[case]
    rng = np.random.default_rng(list(CASES).index(case))
    return rng.standard_normal(x_shape).astype(dtype), ksize, strides, padding, rng


@functools.lru_cache(maxsize=None)
def tf_reference(case, dtype):
    """TensorFlow's y and dx for a random upstream gradient (computed once per case)."""
    tfm = load_tensorflow()
    x, ksize, strides, padding, rng = _inputs(case, dtype)
    xt = tfm.Variable(x)
    with tfm.GradientTape() as tape:
        y = tfm.nn.avg_pool2d(xt, ksize, strides, padding)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = tape.gradient(y, xt, output_gradients=tfm.constant(dy))
    return y.numpy(), dy, dx.numpy()


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("case", list(CASES))
def test_avg_pool2d_matches_tensorflow(backend, case, dtype):
    x, ksize, strides, padding, _ = _inputs(case, dtype)
    y_tf, dy, dx_tf = tf_reference(case, dtype)
    y, bp = sn.ops.avg_pool2d(to_backend(backend, x), ksize, strides, padding)
    dx = bp(to_backend(backend, dy))
    assert y.dtype == dtype and dx.dtype == dtype
    assert_close(sn.to_numpy(y), y_tf, dtype, "y")
    assert_close(sn.to_numpy(dx), dx_tf, dtype, "dx")


def test_same_padding_is_not_counted_in_the_mean(backend):
    # A 3x3 image of ones, 2x2 windows with stride 2 under SAME: the input is
    # padded to 4x4 at the bottom and right. Counting the padding would give
    # 0.5 and 0.25 at the border; only real cells are counted, so every mean is 1.
    x = np.ones((1, 3, 3, 1), dtype=np.float64)
    y, bp = sn.ops.avg_pool2d(to_backend(backend, x), 2, 2, "SAME")
    np.testing.assert_array_equal(sn.to_numpy(y), np.ones((1, 2, 2, 1)))
    # Each output spreads its gradient over its real cells: 1/4, 1/2, 1/2, 1.
    dx = sn.to_numpy(bp(to_backend(backend, np.ones((1, 2, 2, 1)))))
    expected = np.array([[0.25, 0.25, 0.5], [0.25, 0.25, 0.5], [0.5, 0.5, 1.0]]).reshape(1, 3, 3, 1)
    np.testing.assert_array_equal(dx, expected)


def test_overlapping_windows_add_their_gradients(backend):
    # 3x3 windows, stride 2, on a 5x5 input: the centre lies in all four windows
    # and receives the sum of their gradients, each divided by its window's 9 cells.
    x = np.zeros((1, 5, 5, 1), dtype=np.float64)
    _, bp = sn.ops.avg_pool2d(to_backend(backend, x), 3, 2)
    dy = np.array([1.0, 2.0, 4.0, 8.0]).reshape(1, 2, 2, 1)
    dx = sn.to_numpy(bp(to_backend(backend, dy)))
    assert dx[0, 2, 2, 0] == pytest.approx(15.0 / 9)
    assert dx.sum() == pytest.approx(15.0)


def test_avg_pool2d_gradient_passes_a_finite_difference_check():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 7, 6, 2))
    with sn.use_backend("numpy"):
        pool = functools.partial(sn.ops.avg_pool2d, ksize=3, strides=2, padding="SAME")
        y, _ = pool(x)
        report = check_op(pool, x, dy=rng.standard_normal(y.shape), mode="full")
        assert report["x"].n_nondiff == 0


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_avg_pool2d_backprop_leaves_dy_untouched(backend, dtype):
    x, ksize, strides, padding, rng = _inputs("overlapping_3x3_stride2_same", dtype)
    y, bp = sn.ops.avg_pool2d(to_backend(backend, x), ksize, strides, padding)
    dy = to_backend(backend, rng.standard_normal(y.shape).astype(dtype))
    before = sn.to_numpy(dy)
    bp(dy)
    np.testing.assert_array_equal(sn.to_numpy(dy), before)


# --- numba kernels against the reference (the oracle) -----------------------

# (x shape, kh, kw, sh, sw, pads (top, bottom, left, right))
KERNEL_CASES = [
    ((2, 8, 8, 3), 2, 2, 2, 2, (0, 0, 0, 0)),
    ((2, 9, 9, 3), 3, 3, 2, 2, (1, 1, 1, 1)),
    ((2, 8, 7, 2), 3, 3, 2, 2, (0, 1, 1, 1)),
    ((1, 2, 3, 2), 4, 4, 1, 1, (1, 2, 1, 2)),
    ((1, 7, 10, 1), 2, 3, 1, 2, (0, 1, 0, 1)),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("x_shape, kh, kw, sh, sw, pads", KERNEL_CASES)
def test_numba_avg_pool2d_kernels_match_the_reference(numba_ops, x_shape, kh, kw, sh, sw, pads, dtype):
    from scratchnet.ops.reference import ReferenceOps

    ref = ReferenceOps()
    rng = np.random.default_rng(7)
    x = rng.standard_normal(x_shape).astype(dtype)
    y = numba_ops.avg_pool2d_forward(x, kh, kw, sh, sw, pads)
    assert y.dtype == dtype
    assert_close(y, ref.avg_pool2d_forward(x, kh, kw, sh, sw, pads), dtype, "avg_pool2d_forward")
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = numba_ops.avg_pool2d_backward(dy, x_shape, kh, kw, sh, sw, pads)
    assert dx.dtype == dtype
    assert_close(dx, ref.avg_pool2d_backward(dy, x_shape, kh, kw, sh, sw, pads), dtype, "avg_pool2d_backward")


# --- global pooling ----------------------------------------------------------

GLOBAL_SHAPES = {"odd_image": (2, 5, 7, 3), "one_by_one_image": (3, 1, 1, 2)}


@pytest.mark.parametrize("keepdims", [False, True], ids=["flat", "keepdims"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("shape", list(GLOBAL_SHAPES))
@pytest.mark.parametrize("kind", ["avg", "max"])
def test_global_pooling_matches_tensorflow(backend, kind, shape, dtype, keepdims):
    tfm = load_tensorflow()
    rng = np.random.default_rng(11)
    x_shape = GLOBAL_SHAPES[shape]
    # A shuffled ramp: no ties, where reduce_max's gradient would split and scratchnet's would not.
    x = (rng.permutation(int(np.prod(x_shape))).reshape(x_shape) / 50 - 0.5).astype(dtype)
    op = sn.ops.global_avg_pool2d if kind == "avg" else sn.ops.global_max_pool2d
    y, bp = op(to_backend(backend, x), keepdims=keepdims)
    xt = tfm.Variable(x)
    with tfm.GradientTape() as tape:
        reduce = tfm.reduce_mean if kind == "avg" else tfm.reduce_max
        yt = reduce(xt, axis=(1, 2), keepdims=keepdims)
    dy = rng.standard_normal(yt.shape).astype(dtype)
    dxt = tape.gradient(yt, xt, output_gradients=tfm.constant(dy))
    dx = bp(to_backend(backend, dy))
    assert y.dtype == dtype and dx.dtype == dtype
    assert_close(sn.to_numpy(y), yt.numpy(), dtype, "y")
    assert_close(sn.to_numpy(dx), dxt.numpy(), dtype, "dx")


def test_global_max_pool2d_sends_a_tie_whole_to_the_first_maximum(backend):
    # Two zeros tie as the maximum (after a ReLU); the first in row-major order takes all.
    x = np.array([[-1.0, 0.0], [0.0, -2.0]]).reshape(1, 2, 2, 1)
    _, bp = sn.ops.global_max_pool2d(to_backend(backend, x))
    dx = sn.to_numpy(bp(to_backend(backend, np.array([[3.0]]))))
    np.testing.assert_array_equal(dx.reshape(2, 2), [[0.0, 3.0], [0.0, 0.0]])


# --- layers ------------------------------------------------------------------


def _keras():
    load_tensorflow()
    import keras

    return keras


def test_layers_take_kerass_defaults_and_names():
    keras = _keras()
    # Keras 3 requires pool_size; (2, 2) is tf.keras 2's default and MaxPool2D's.
    pool = sn.layers.AveragePooling2D()
    assert (pool.pool_size, pool.strides, pool.padding) == ((2, 2), (2, 2), "valid")
    k = keras.layers.AveragePooling2D(2).get_config()
    assert tuple(k["pool_size"]) == pool.pool_size and tuple(k["strides"]) == pool.strides
    assert k["padding"] == pool.padding
    assert sn.layers.AveragePooling2D(3, strides=1).strides == (1, 1)
    for cls, kcls, name in [(sn.layers.AveragePooling2D, functools.partial(keras.layers.AveragePooling2D, 2),
                             "average_pooling2d"),
                            (sn.layers.GlobalAveragePooling2D, keras.layers.GlobalAveragePooling2D,
                             "global_average_pooling2d"),
                            (sn.layers.GlobalMaxPooling2D, keras.layers.GlobalMaxPooling2D, "global_max_pooling2d")]:
        assert cls().name == name
        assert kcls().name.startswith(name)
    assert sn.layers.GlobalAveragePooling2D().keepdims is keras.layers.GlobalAveragePooling2D().keepdims is False
    assert sn.layers.AvgPool2D is sn.layers.AveragePooling2D


def test_layer_configs_rebuild_the_layers():
    for layer in [sn.layers.AveragePooling2D((2, 3), strides=(1, 2), padding="same", name="p"),
                  sn.layers.GlobalAveragePooling2D(keepdims=True), sn.layers.GlobalMaxPooling2D()]:
        back = sn.layers.deserialize(sn.layers.serialize(layer))
        assert type(back) is type(layer) and back.get_config() == layer.get_config()


def _keras_pooling_model(keras, dtype):
    return keras.Sequential([
        keras.Input((7, 9, 2), dtype=dtype),
        keras.layers.Conv2D(3, 3, padding="same", activation="relu", dtype=dtype),
        keras.layers.AveragePooling2D(3, strides=2, padding="same", dtype=dtype),
        keras.layers.Conv2D(4, 2, dtype=dtype),
        keras.layers.AveragePooling2D((1, 2), dtype=dtype),
        keras.layers.GlobalAveragePooling2D(keepdims=True, dtype=dtype),
        keras.layers.GlobalMaxPooling2D(dtype=dtype),
        keras.layers.Dense(3, dtype=dtype),
    ], name="pools")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_from_keras_predicts_and_backpropagates_like_keras_and_to_keras_goes_back(backend, dtype):
    keras = _keras()
    tfm = load_tensorflow()
    keras_model = _keras_pooling_model(keras, dtype)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 7, 9, 2)).astype(dtype)
    model = sn.interop.from_keras(keras_model)
    assert [type(layer).__name__ for layer in model.layers][1:-1] == [
        "AveragePooling2D", "Conv2D", "AveragePooling2D", "GlobalAveragePooling2D", "GlobalMaxPooling2D"]
    y, bp = model.forward(to_backend(backend, x))
    xt = tfm.Variable(x)
    with tfm.GradientTape() as tape:
        yt = keras_model(xt)
    dy = rng.standard_normal(yt.shape).astype(dtype)
    dxt = tape.gradient(yt, xt, output_gradients=tfm.constant(dy))
    assert_close(sn.to_numpy(y), yt.numpy(), dtype, "y")
    assert_close(sn.to_numpy(bp(to_backend(backend, dy))), dxt.numpy(), dtype, "dx")

    back = sn.interop.to_keras(model)
    assert [type(layer).__name__ for layer in back.layers] == [type(layer).__name__ for layer in keras_model.layers]
    assert [layer.get_config() for layer in back.layers] == [layer.get_config() for layer in keras_model.layers]
    assert_close(back(x).numpy(), yt.numpy(), dtype, "to_keras")


def test_exported_pooling_model_gives_identical_predictions(tmp_path):
    L = sn.layers
    with sn.use_backend("numpy"):
        sn.random.seed(0)
        model = sn.Sequential([L.Conv2D(2, 3, padding="same", activation="relu"),
                               L.AveragePooling2D(2, padding="same"), L.GlobalMaxPooling2D(keepdims=True),
                               L.GlobalAveragePooling2D(), L.Dense(3)], name="pools")
        x = np.random.default_rng(2).standard_normal((2, 5, 5, 1)).astype(np.float32)
        expected = model.predict(x)
        path = str(tmp_path / "model.snm")
        sn.export.save_model(model, path)
        loaded = sn.export.load_model(path)
        assert [type(a) for a in loaded.layers] == [type(b) for b in model.layers]
        np.testing.assert_array_equal(loaded.predict(x), expected)


def test_avg_pool2d_reaches_the_profiler_with_its_cost():
    x = np.zeros((2, 7, 9, 3), np.float32)
    cost = sn.ops.avg_pool2d.cost(x, 3, 2, "SAME")
    assert sn.ops.avg_pool2d.op_name == "avg_pool2d"
    assert cost.flops == 2 * 4 * 5 * 3 * (9 + 1)
    assert cost.bytes == x.nbytes + 2 * 4 * 5 * 3 * 4


# --- bad input --------------------------------------------------------------


@pytest.mark.parametrize(
    "x, kwargs, fragment",
    [
        (np.zeros((8, 8, 3), np.float32), {}, "x must have rank 4 [N, H, W, C], got shape (8, 8, 3)"),
        (np.zeros((2, 8, 8, 3), np.float32), {"padding": "same-ish"}, "padding must be 'SAME' or 'VALID'"),
        (np.zeros((2, 8, 8, 3), np.float32), {"strides": 0}, "strides must be a positive int"),
        (np.zeros((2, 8, 8, 3), np.float32), {"ksize": 0}, "ksize must be a positive int"),
        (np.zeros((2, 8, 2, 3), np.float32), {"ksize": 3},
         "window width 3 is larger than the input width 2 under VALID padding (x: (2, 8, 2, 3), ksize: (3, 3))"),
        (np.zeros((2, 8, 8, 3), np.int64), {}, "x must be float32 or float64"),
    ],
    ids=["rank", "padding", "strides_0", "ksize_0", "valid_too_small", "int_x"],
)
def test_avg_pool2d_rejects_bad_input_naming_the_op(x, kwargs, fragment):
    args = {"ksize": 2, "strides": 2, "padding": "VALID", **kwargs}
    with sn.use_backend("numpy"):
        with pytest.raises(ValueError, match="^avg_pool2d: ") as err:
            sn.ops.avg_pool2d(x, **args)
    assert fragment in str(err.value)


def test_avg_pool2d_backprop_rejects_a_gradient_of_the_wrong_shape():
    with sn.use_backend("numpy"):
        _, bp = sn.ops.avg_pool2d(np.zeros((2, 8, 8, 3), np.float32), 2, 2)
        with pytest.raises(ValueError, match=r"^avg_pool2d: dy must have the output's shape \(2, 4, 4, 3\)"):
            bp(np.zeros((2, 8, 8, 3), np.float32))


@pytest.mark.parametrize("op", ["global_avg_pool2d", "global_max_pool2d"])
def test_global_pooling_rejects_a_3d_input_and_a_wrong_gradient(op):
    fn = getattr(sn.ops, op)
    with sn.use_backend("numpy"):
        with pytest.raises(ValueError, match=rf"^{op}: x must have rank 4 \[N, H, W, C\], got shape \(5, 5, 3\)"):
            fn(np.zeros((5, 5, 3), np.float32))
        _, bp = fn(np.zeros((2, 5, 5, 3), np.float32))
        with pytest.raises(ValueError, match=rf"^{op}: dy must have the output's shape \(2, 3\)"):
            bp(np.zeros((2, 1, 1, 3), np.float32))
        _, bp = fn(np.zeros((2, 5, 5, 3), np.float32), keepdims=True)
        with pytest.raises(ValueError, match=rf"^{op}: dy must have the output's shape \(2, 1, 1, 3\)"):
            bp(np.zeros((2, 3), np.float32))


def test_layers_reject_bad_arguments_naming_the_layer():
    with pytest.raises(ValueError, match="^AveragePooling2D: pool_size must be a positive int"):
        sn.layers.AveragePooling2D(0)
    with pytest.raises(ValueError, match="^AveragePooling2D: padding must be 'valid', 'same', an int"):
        sn.layers.AveragePooling2D(padding="full")
    with pytest.raises(ValueError, match="^GlobalMaxPooling2D: keepdims must be True or False"):
        sn.layers.GlobalMaxPooling2D(keepdims="yes")


def test_tensorboard_graph_shows_each_pooling_layer_as_one_node(tmp_path):
    pytest.importorskip("tensorboard", reason="TensorBoard reads the event files back; install scratchnet[test]")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    L = sn.layers
    with sn.use_backend("numpy"):
        model = sn.Sequential([L.Conv2D(2, 3, padding="same", name="conv"), L.AveragePooling2D(2, name="avg"),
                               L.GlobalMaxPooling2D(keepdims=True, name="gmax"),
                               L.GlobalAveragePooling2D(name="gavg"), L.Dense(3, name="fc")])
        x = np.random.default_rng(0).standard_normal((2, 6, 6, 1)).astype(np.float32)
        sn.summary.write_graph(tmp_path, model, x)
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    graph = {n.name: n for n in acc.Graph().node}
    assert list(graph["avg/avg_pool2d"].input) == ["conv/conv2d"]
    assert list(graph["gmax/max_pool2d"].input) == ["avg/avg_pool2d"]
    assert list(graph["gavg/avg_pool2d"].input) == ["gmax/max_pool2d"]
    assert list(graph["fc/dense"].input)[0] == "gavg/avg_pool2d"  # through the global pool's reshape
