"""log_softmax and the sparse cross-entropy's options (ignore_index, class_weight, reduction).

TensorFlow referees what it has (``tf.nn.log_softmax``; class weights as
``sample_weight = class_weight[y]``; the reductions by hand over its
per-example losses); ``ignore_index``, which it lacks, is checked against a
plain NumPy formula written out below.
"""
from __future__ import annotations

import numpy as np
import pytest

import scratchnet as sn
from helpers import assert_close, load_tensorflow, to_backend
from scratchnet.gradcheck import check_op

DTYPES = [np.float32, np.float64]
DTYPE_IDS = ["float32", "float64"]
L = sn.layers


def make_logits(shape, dtype, seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    return (scale * rng.standard_normal(shape)).astype(dtype), rng.standard_normal(shape).astype(dtype)


def tf_log_softmax(x, dy, axis=-1):
    tf_ = load_tensorflow()
    x_t = tf_.constant(x)
    with tf_.GradientTape() as tape:
        tape.watch(x_t)
        y = tf_.nn.log_softmax(x_t, axis=axis)
        loss = tf_.reduce_sum(y * dy)
    return y.numpy(), tape.gradient(loss, x_t).numpy()


# --- log_softmax ----------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape,axis", [((4, 6), -1), ((2, 3, 5), -1), ((2, 3, 5), 1), ((4, 6), 0), ((5, 1), -1)],
                         ids=["rank2", "rank3", "rank3_axis1", "axis0", "one_class"])
def test_log_softmax_matches_tensorflow_value_and_gradient(backend, shape, axis, dtype):
    x, dy = make_logits(shape, dtype)
    y, bp = sn.ops.log_softmax(to_backend(backend, x), axis=axis)
    dx = bp(to_backend(backend, dy))
    want_y, want_dx = tf_log_softmax(x, dy, axis)
    assert y.dtype == dtype and dx.dtype == dtype and dx.shape == x.shape
    assert_close(sn.to_numpy(y), want_y, dtype, "y")
    assert_close(sn.to_numpy(dx), want_dx, dtype, "dx")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_log_softmax_stays_finite_and_exact_for_logits_of_1e4(backend, dtype):
    x = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [-1e4, -1e4, -1e4]], dtype)
    dy = np.array([[1.0, 2.0, -1.0], [0.5, 0.0, 1.0], [1.0, 1.0, 1.0]], dtype)
    y, bp = sn.ops.log_softmax(to_backend(backend, x))
    dx = bp(to_backend(backend, dy))
    y, dx = sn.to_numpy(y), sn.to_numpy(dx)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx))
    # Exact answers: softmax underflows to 0 for the -2e4 gap, but its log is the gap itself.
    assert_close(y[0], np.array([0.0, -2e4, -1e4], dtype), dtype, "y[0]")
    assert_close(y[1], np.array([-2e4 - np.log(2), -np.log(2), -np.log(2)], dtype), dtype, "y[1]")
    want_y, want_dx = tf_log_softmax(x, dy)
    assert_close(y, want_y, dtype, "y")
    assert_close(dx, want_dx, dtype, "dx")


def test_log_softmax_is_the_log_of_softmax_and_its_gradient_sums_to_zero(backend):
    x, dy = make_logits((3, 4, 5), np.float64)
    for axis in (-1, 0, 1):
        y, bp = sn.ops.log_softmax(to_backend(backend, x), axis=axis)
        p, _ = sn.ops.softmax(to_backend(backend, x), axis=axis)
        np.testing.assert_allclose(np.exp(sn.to_numpy(y)), sn.to_numpy(p), rtol=1e-12)
        # Adding a constant along the axis changes nothing: dx has no component along (1, ..., 1).
        np.testing.assert_allclose(sn.to_numpy(bp(to_backend(backend, dy))).sum(axis=axis), 0, atol=1e-12)


@pytest.mark.parametrize("axis", [-1, 0])
def test_log_softmax_gradient_matches_finite_differences(axis):
    x, dy = make_logits((3, 5), np.float64, seed=2, scale=1.0)
    with sn.use_backend("numpy"):
        assert check_op(lambda z: sn.ops.log_softmax(z, axis=axis), x, dy=dy, mode="full").passed


def test_log_softmax_refuses_a_scalar_and_an_axis_out_of_range(backend):
    with pytest.raises(ValueError, match="log_softmax: x must have rank >= 1"):
        sn.ops.log_softmax(to_backend(backend, np.array(1.0)))
    with pytest.raises(ValueError, match=r"log_softmax: axis 2 is out of range for x of shape \(3, 4\)"):
        sn.ops.log_softmax(to_backend(backend, np.zeros((3, 4))), axis=2)


def test_log_softmax_layer_and_activation_match_the_op_and_serialize(backend):
    x, dy = make_logits((4, 6), np.float32)
    want_y, want_dx = tf_log_softmax(x, dy)
    for layer in (L.LogSoftmax(), L.Activation("log_softmax")):
        y, bp = layer.forward(to_backend(backend, x))
        assert_close(sn.to_numpy(y), want_y, np.float32, "y")
        assert_close(sn.to_numpy(bp(to_backend(backend, dy))), want_dx, np.float32, "dx")
    again = L.deserialize(L.serialize(L.LogSoftmax(axis=1, name="lsm")))
    assert isinstance(again, L.LogSoftmax) and again.axis == 1 and again.name == "lsm"
    with pytest.raises(ValueError, match="LogSoftmax: axis must be an int"):
        L.LogSoftmax(axis="last")


def test_log_softmax_layer_goes_to_keras_as_activation_log_softmax():
    model = sn.Sequential([L.Dense(5), L.LogSoftmax()])
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    want = model.predict(x)
    keras_model = sn.interop.to_keras(model)
    assert type(keras_model.layers[-1]).__name__ == "Activation"
    np.testing.assert_allclose(keras_model.predict(x, verbose=0), want, rtol=1e-5, atol=1e-5)
    back = sn.interop.from_keras(keras_model)
    assert isinstance(back.layers[-1], L.Activation) and back.layers[-1].activation == "log_softmax"
    np.testing.assert_allclose(back.predict(x), want, rtol=1e-6, atol=1e-6)
    other_axis = sn.Sequential([L.Dense(5), L.LogSoftmax(axis=1)])
    other_axis.build((None, 4))
    with pytest.raises(ValueError, match="to_keras: LogSoftmax .* has axis=1"):
        sn.interop.to_keras(other_axis)


def test_log_softmax_records_its_cost():
    x = np.zeros((8, 10), np.float32)
    cost = sn.ops.activations.log_softmax_cost(x)
    assert cost.flops == 5 * 80 and cost.backward_flops == 4 * 80


# --- the sparse cross-entropy's options ------------------------------------------


def numpy_reference(logits, ids, ignore_index=None, class_weight=None, reduction="mean"):
    """The loss and d(loss)/d(logits) by the plain formula, in float64.

    loss_m = -log softmax(z_m)[y_m];  w_m = class_weight[y_m] (1 without), 0 where y_m == ignore_index;
    mean = sum_m w_m loss_m / sum_m w_m (0 if that is 0);  d/dz_m = w_m (softmax(z_m) - onehot(y_m)) / divisor.
    """
    z = logits.astype(np.float64).reshape(-1, logits.shape[-1])
    y = ids.reshape(-1)
    K = z.shape[1]
    counted = np.ones(y.shape, bool) if ignore_index is None else y != ignore_index
    safe = np.where(counted, y, 0)
    w = (np.ones(K) if class_weight is None else np.asarray(class_weight, np.float64))[safe] * counted
    log_p = z - z.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    losses = -log_p[np.arange(len(y)), safe] * w
    grad = (np.exp(log_p) - np.eye(K)[safe]) * w[:, None]
    if reduction == "none":
        return losses.reshape(ids.shape), grad.reshape(logits.shape)
    divisor = 1.0 if reduction == "sum" else (w.sum() if w.sum() > 0 else 1.0)
    return losses.sum() / divisor, (grad / divisor).reshape(logits.shape)


def tf_weighted(logits, ids, class_weight, reduction):
    """TensorFlow's per-example losses times class_weight[ids], reduced by hand; and the gradient.

    (Keras's loss objects compute in float32; ``tf.nn`` keeps float64. Keras's own
    ``sample_weight`` is checked in float32 below.)
    """
    tf_ = load_tensorflow()
    z = tf_.constant(logits)
    sw = tf_.constant(np.asarray(class_weight, logits.dtype)[ids])
    with tf_.GradientTape() as tape:
        tape.watch(z)
        per = tf_.nn.sparse_softmax_cross_entropy_with_logits(labels=ids, logits=z) * sw
        loss = {"sum": tf_.reduce_sum(per), "mean": tf_.reduce_sum(per) / tf_.reduce_sum(sw)}.get(reduction, per)
        target = tf_.reduce_sum(loss)
    return loss.numpy(), tape.gradient(target, z).numpy()


CASES = {"rank2": ((6, 5), None), "rank3_sequence": ((2, 4, 7), None), "one_class": ((4, 1), None)}


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("case", list(CASES))
def test_class_weight_and_reduction_match_tensorflow_sample_weights(backend, case, reduction, dtype):
    shape, _ = CASES[case]
    logits, _ = make_logits(shape, dtype)
    K = shape[-1]
    ids = np.random.default_rng(3).integers(0, K, size=shape[:-1])
    class_weight = np.linspace(0.5, 2.0, K)
    loss = sn.losses.SparseCategoricalCrossentropy(class_weight=class_weight, reduction=reduction)
    value, bp = loss(*to_backend(backend, ids, logits))
    dlogits = bp(1.0)
    want, want_dlogits = tf_weighted(logits, ids, class_weight, reduction)
    assert dlogits.dtype == dtype and dlogits.shape == logits.shape
    assert_close(np.asarray(value), want, dtype, "loss")
    assert_close(sn.to_numpy(dlogits), want_dlogits, dtype, "dlogits")


@pytest.mark.parametrize("keras_reduction", ["sum", "sum_over_batch_size", None])
def test_class_weight_matches_keras_sample_weight(backend, keras_reduction):
    logits, _ = make_logits((2, 4, 5), np.float32)
    ids = np.random.default_rng(8).integers(0, 5, size=(2, 4))
    class_weight = np.array([0.5, 1.0, 2.0, 0.0, 3.0])
    keras_loss = load_tensorflow().keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=keras_reduction)
    want = keras_loss(ids, logits, sample_weight=class_weight[ids].astype(np.float32)).numpy()
    reduction = {"sum": "sum", None: "none", "sum_over_batch_size": "sum"}[keras_reduction]
    value, _ = sn.losses.SparseCategoricalCrossentropy(class_weight=class_weight, reduction=reduction)(
        *to_backend(backend, ids, logits))
    if keras_reduction == "sum_over_batch_size":
        want = want * ids.size  # Keras divides a weighted sum by the count of positions; PyTorch, and here, by sum(w)
    assert_close(np.asarray(value), want, np.float32, "loss")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(6, 5), (2, 4, 7)], ids=["rank2", "rank3_sequence"])
@pytest.mark.parametrize("ignore_index", [0, -100])
def test_ignore_index_matches_the_numpy_formula(backend, shape, reduction, ignore_index, dtype):
    logits, _ = make_logits(shape, dtype)
    K = shape[-1]
    ids = np.random.default_rng(4).integers(0, K, size=shape[:-1])
    ids.flat[::3] = ignore_index  # -100 is no class id: it must be accepted where ignored
    class_weight = np.linspace(2.0, 0.5, K)
    for weights in (None, class_weight):
        loss = sn.losses.SparseCategoricalCrossentropy(ignore_index=ignore_index, class_weight=weights,
                                                       reduction=reduction)
        value, bp = loss(*to_backend(backend, ids, logits))
        want, want_dlogits = numpy_reference(logits, ids, ignore_index, weights, reduction)
        assert_close(np.asarray(value), want, dtype, "loss")
        assert_close(sn.to_numpy(bp(0.5)), 0.5 * want_dlogits, dtype, "dlogits")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_every_target_ignored_gives_loss_0_and_a_zero_gradient(backend, dtype):
    # PyTorch returns nan (0/0) here; a batch of padding teaches nothing instead.
    logits, _ = make_logits((3, 4, 5), dtype)
    ids = np.full((3, 4), -1)
    for weights in (None, [1.0, 0, 0, 0, 0]):
        loss = sn.losses.SparseCategoricalCrossentropy(ignore_index=-1, class_weight=weights)
        value, bp = loss(*to_backend(backend, ids, logits))
        assert value == 0.0
        dlogits = sn.to_numpy(bp(1.0))
        assert dlogits.dtype == dtype and not dlogits.any()
    # Weight 0 on every present class is the same case.
    value, bp = sn.losses.SparseCategoricalCrossentropy(class_weight=[0.0] * 5)(*to_backend(backend, np.zeros((3, 4), int), logits))
    assert value == 0.0 and not sn.to_numpy(bp(1.0)).any()


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_options_stay_finite_for_logits_of_1e4(backend, dtype):
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [-1e4, -1e4, -1e4], [1e4, 1e4 - 5, -1e4]], dtype)
    ids = np.array([1, 0, 2, 1])
    loss = sn.losses.SparseCategoricalCrossentropy(ignore_index=2, class_weight=[1.0, 2.0, 3.0], reduction="sum")
    value, bp = loss(*to_backend(backend, ids, logits))
    want, want_dlogits = numpy_reference(logits, ids, 2, [1.0, 2.0, 3.0], "sum")
    assert np.isfinite(value) and np.all(np.isfinite(sn.to_numpy(bp(1.0))))
    assert_close(value, want, dtype, "loss")  # 2e4 * 2 + (1e4 + log 2) * 1 + 5 * 2 (approx)
    assert_close(sn.to_numpy(bp(1.0)), want_dlogits, dtype, "dlogits")


def test_default_options_keep_the_fused_op_and_sum_is_m_times_the_mean(backend):
    logits, _ = make_logits((2, 3, 4), np.float64)
    ids = np.random.default_rng(5).integers(0, 4, size=(2, 3))
    x, y = to_backend(backend, logits, ids)
    want, want_bp = sn.ops.softmax_cross_entropy(x, y)
    for reduction in ("mean", "sum_over_batch_size"):
        value, bp = sn.losses.SparseCategoricalCrossentropy(reduction=reduction)(y, x)
        assert value == float(want)
        np.testing.assert_array_equal(sn.to_numpy(bp(1.0)), sn.to_numpy(want_bp(1.0)))
    value, bp = sn.losses.SparseCategoricalCrossentropy(reduction="sum")(y, x)
    np.testing.assert_allclose(value, 6 * float(want), rtol=1e-12)
    np.testing.assert_allclose(sn.to_numpy(bp(1.0)), 6 * sn.to_numpy(want_bp(1.0)), rtol=1e-12)


def test_reduction_none_takes_a_gradient_per_position(backend):
    logits, _ = make_logits((3, 4), np.float64)
    ids = np.array([0, 3, 1])
    value, bp = sn.losses.SparseCategoricalCrossentropy(reduction="none")(*to_backend(backend, ids, logits))
    want, want_dlogits = numpy_reference(logits, ids, reduction="none")
    assert isinstance(value, np.ndarray) and value.shape == (3,)
    np.testing.assert_allclose(value, want, rtol=1e-12)
    dloss = np.array([1.0, 0.0, -2.0])
    np.testing.assert_allclose(sn.to_numpy(bp(to_backend(backend, dloss))), want_dlogits * dloss[:, None],
                               rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match=r"SparseCategoricalCrossentropy: dloss .* \(3,\), got \(2,\)"):
        bp(to_backend(backend, np.ones(2)))


@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_options_gradient_matches_finite_differences(from_logits, reduction):
    logits, _ = make_logits((2, 3, 4), np.float64, seed=6, scale=1.0)
    x = logits if from_logits else np.exp(logits)  # positive "probabilities", normalised by the loss
    ids = np.array([[0, 3, 9], [1, 9, 2]])
    loss = sn.losses.SparseCategoricalCrossentropy(from_logits=from_logits, ignore_index=9,
                                                   class_weight=[0.5, 1.0, 2.0, 3.0], reduction=reduction)
    dy = np.random.default_rng(7).standard_normal((2, 3)) if reduction == "none" else 1.0
    with sn.use_backend("numpy"):
        assert check_op(lambda z: loss.on_device(ids, z), x, dy=dy, mode="full").passed


def test_probabilities_with_options_match_the_logits_path(backend):
    logits, _ = make_logits((5, 4), np.float64, scale=1.0)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    ids = np.array([0, 1, 7, 3, 2])
    kw = dict(ignore_index=7, class_weight=[1.0, 2.0, 0.5, 1.5])
    want, _ = numpy_reference(logits, ids, 7, kw["class_weight"])
    value, _ = sn.losses.SparseCategoricalCrossentropy(from_logits=False, **kw)(*to_backend(backend, ids, probs))
    np.testing.assert_allclose(value, want, rtol=1e-12)


def test_bad_options_are_clear_errors_naming_the_loss_and_the_argument(backend):
    S = sn.losses.SparseCategoricalCrossentropy
    with pytest.raises(ValueError, match="SparseCategoricalCrossentropy: ignore_index must be an int or None, got 1.5"):
        S(ignore_index=1.5)
    with pytest.raises(ValueError, match="SparseCategoricalCrossentropy: ignore_index must be an int"):
        S(ignore_index=True)
    with pytest.raises(ValueError, match="SparseCategoricalCrossentropy: class_weight must hold finite non-negative"):
        S(class_weight=[1.0, -1.0])
    with pytest.raises(ValueError, match=r"SparseCategoricalCrossentropy: class_weight must be a vector .* shape \(2, 2\)"):
        S(class_weight=np.ones((2, 2)))
    with pytest.raises(ValueError, match="SparseCategoricalCrossentropy: reduction must be one of 'mean', "):
        S(reduction="average")
    with pytest.raises(ValueError, match=r"class_weight has 3 entries but y_pred has 4 classes .*y_pred: \(2, 4\)"):
        S(class_weight=[1.0, 1.0, 1.0])(*to_backend(backend, np.array([0, 1]), np.zeros((2, 4))))
    # Ids out of range are still refused where they are not ignored.
    with pytest.raises(ValueError, match="SparseCategoricalCrossentropy"):
        S(ignore_index=-100)(*to_backend(backend, np.array([0, 4]), np.zeros((2, 4))))


def test_options_survive_get_config():
    loss = sn.losses.SparseCategoricalCrossentropy(ignore_index=0, class_weight=np.array([1.0, 2.0]),
                                                   reduction="sum_over_batch_size")
    config = loss.get_config()
    assert config == {"from_logits": True, "ignore_index": 0, "class_weight": [1.0, 2.0], "reduction": "mean"}
    assert sn.losses.SparseCategoricalCrossentropy(**config).get_config() == config


def test_a_model_trains_with_ignore_index_0(backend):
    # Class 0 is padding: its positions must neither count nor break the step.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=32)
    sn.random.seed(0)
    model = sn.Sequential([L.Dense(8, activation="relu"), L.Dense(3)])
    model.compile(sn.optimizers.Adam(0.05),
                  loss=sn.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_index=0), metrics=[])
    losses = [model.train_on_batch(to_backend(backend, x), to_backend(backend, y))["loss"] for _ in range(5)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_compile_refuses_a_loss_that_returns_one_value_per_example():
    model = sn.Sequential([sn.layers.Dense(3)])
    loss = sn.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")
    with pytest.raises(ValueError, match=r"compile: the loss SparseCategoricalCrossentropy has reduction='none'"):
        model.compile("sgd", loss)


def test_a_model_ending_in_log_softmax_exports_and_loads(tmp_path):
    model = sn.Sequential([sn.layers.Dense(4), sn.layers.LogSoftmax()])
    model.build((None, 3))
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    path = str(tmp_path / "model.snx")
    sn.export.save_model(model, path)
    loaded = sn.export.load_model(path)
    np.testing.assert_array_equal(sn.to_numpy(loaded(x)), sn.to_numpy(model(x)))
