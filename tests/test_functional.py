"""The functional API: sn.Input, layers called on placeholders, sn.Model(inputs, outputs), the merge layers.

TensorFlow is the referee: a Keras functional model with branches, a shared layer and a tensor read
several times, converted by from_keras, computes the same outputs and the same gradients (of the input
and of every weight) as tf.GradientTape; a functional ResNet with batch norm trains like Keras in float64.
"""
from __future__ import annotations

import numpy as np
import pytest

import scratchnet as sn
from helpers import load_tensorflow, to_backend, tolerances
from scratchnet.interop import from_keras, to_keras


def branchy_keras_model(keras, dtype):
    """Two inputs; a Dense shared by two branches; x read three times; every merge layer; two outputs."""
    d = {"dtype": dtype}
    a = keras.Input((6,), dtype=dtype, name="a")
    b = keras.Input((4,), dtype=dtype, name="b")
    shared = keras.layers.Dense(5, activation="tanh", name="shared", **d)
    h1 = shared(keras.layers.Dense(6, name="pre", **d)(a))
    h2 = shared(a)  # the same weights on another tensor: their gradient is the sum of both calls'
    s = keras.layers.Add(name="add", **d)([h1, h2, shared(a)])
    m = keras.layers.Multiply(name="mul", **d)([s, keras.layers.Dense(5, name="gate", **d)(b)])
    v = keras.layers.Subtract(name="sub", **d)([m, h1])
    av = keras.layers.Average(name="avg", **d)([v, s])
    c = keras.layers.Concatenate(name="cat", **d)([av, b, a])
    out1 = keras.layers.Dense(3, name="out1", **d)(c)
    out2 = keras.layers.Dense(2, activation="relu", name="out2", **d)(av)
    return keras.Model([a, b], [out1, out2], name="branchy")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_branching_keras_model_converts_and_every_gradient_matches_tensorflow(backend, dtype):
    tf = load_tensorflow()
    import keras

    rng = np.random.default_rng(0)
    km = branchy_keras_model(keras, dtype)
    km.set_weights([rng.normal(scale=0.5, size=w.shape).astype(dtype) for w in km.get_weights()])
    model = from_keras(km)
    assert isinstance(model, sn.model.Functional) and model.dtype == np.dtype(dtype)
    assert [layer.name for layer in model.layers].count("shared") == 1
    A, B = rng.normal(size=(7, 6)).astype(dtype), rng.normal(size=(7, 4)).astype(dtype)
    d1, d2 = rng.normal(size=(7, 3)).astype(dtype), rng.normal(size=(7, 2)).astype(dtype)

    ta, tb = tf.constant(A), tf.constant(B)
    with tf.GradientTape() as tape:
        tape.watch([ta, tb])
        k1, k2 = km([ta, tb])
        objective = tf.reduce_sum(k1 * d1) + tf.reduce_sum(k2 * d2)
    grads = tape.gradient(objective, [ta, tb] + km.trainable_weights)

    model.zero_grad()
    (y1, y2), backprop = model.forward(list(to_backend(backend, A, B)), training=True)
    da, db = backprop(list(to_backend(backend, d1, d2)))
    rtol, atol = tolerances(dtype)
    np.testing.assert_allclose(sn.to_numpy(y1), k1.numpy(), rtol=rtol, atol=atol)
    np.testing.assert_allclose(sn.to_numpy(y2), k2.numpy(), rtol=rtol, atol=atol)
    np.testing.assert_allclose(sn.to_numpy(da), grads[0].numpy(), rtol=rtol, atol=atol)
    np.testing.assert_allclose(sn.to_numpy(db), grads[1].numpy(), rtol=rtol, atol=atol)
    ours = {p.name: sn.to_numpy(p.grad) for p in model.parameters()}
    for w, g in zip(km.trainable_weights, grads[2:]):
        np.testing.assert_allclose(ours[w.path], g.numpy(), rtol=rtol, atol=atol, err_msg=w.path)


def test_an_output_without_a_gradient_and_an_unused_state_output_are_fine(backend):
    x = sn.Input((5, 3), dtype="float64")
    seq, state = sn.layers.GRU(4, return_sequences=True, return_state=True, name="gru")(x)
    out = sn.layers.Dense(2, name="head")(sn.layers.Flatten()(seq))
    model = sn.Model(x, [out, state])
    a = np.random.default_rng(1).normal(size=(3, 5, 3))
    (y, h), backprop = model.forward(to_backend(backend, a), training=True)
    dx = backprop([backend.xp.ones_like(y), None])
    assert dx.shape == a.shape and model.get_layer("gru").kernel.grad is not None
    # The same model trained through the state alone: the head gets no gradient at all.
    model.zero_grad()
    (y, h), backprop = model.forward(to_backend(backend, a), training=True)
    backprop([None, backend.xp.ones_like(h)])
    assert all(p.grad is None for p in model.get_layer("head").parameters())
    assert model.get_layer("gru").kernel.grad is not None


def test_a_tensor_read_twice_gets_the_sum_of_both_gradients_checked_by_finite_differences():
    with sn.use_backend("numpy"):
        x = sn.Input((3,), dtype="float64")
        d = sn.layers.Dense(3, activation="tanh", name="d")
        y = sn.layers.Multiply()([d(x), x])  # x read by d and by the product
        model = sn.Model(x, sn.layers.Add()([y, d(y)]))
        rng = np.random.default_rng(2)
        a, dy = rng.normal(size=(2, 3)), rng.normal(size=(2, 3))

        def objective(values):
            return float(np.sum(sn.to_numpy(model(values)) * dy))

        out, backprop = model.forward(a, training=True)
        dx = backprop(dy)
        eps = 1e-6
        numeric = np.zeros_like(a)
        for i in np.ndindex(a.shape):
            up, down = a.copy(), a.copy()
            up[i] += eps
            down[i] -= eps
            numeric[i] = (objective(up) - objective(down)) / (2 * eps)
        np.testing.assert_allclose(dx, numeric, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("layer, shapes", [
    ("Add", [(4, 1, 3), (4, 5, 3)]), ("Multiply", [(4, 5, 1), (4, 5, 3), (4, 1, 3)]),
    ("Subtract", [(4, 5, 3), (4, 1, 3)]), ("Average", [(4, 5, 3), (4, 5, 3)]),
])
def test_merge_layers_broadcast_as_keras_does_and_sum_the_gradient_where_they_do(backend, layer, shapes):
    tf = load_tensorflow()
    import keras

    rng = np.random.default_rng(3)
    xs = [rng.normal(size=s) for s in shapes]
    ts = [tf.constant(x) for x in xs]
    with tf.GradientTape() as tape:
        tape.watch(ts)
        ky = getattr(keras.layers, layer)(dtype="float64")(ts)
    dy = rng.normal(size=tuple(ky.shape))
    kgrads = tape.gradient(ky, ts, output_gradients=tf.constant(dy))
    y, backprop = getattr(sn.layers, layer)(dtype="float64").forward(list(to_backend(backend, *xs)))
    np.testing.assert_allclose(sn.to_numpy(y), ky.numpy(), rtol=1e-12)
    for ours, theirs in zip(backprop(to_backend(backend, dy)), kgrads):
        np.testing.assert_allclose(sn.to_numpy(ours), theirs.numpy(), rtol=1e-12)


@pytest.mark.parametrize("axis", [-1, 1, 2])
def test_concatenate_matches_keras_along_any_axis_but_the_batch(backend, axis):
    tf = load_tensorflow()
    import keras

    rng = np.random.default_rng(4)
    shapes = {-1: [(2, 3, 4), (2, 3, 1)], 1: [(2, 1, 4), (2, 5, 4)], 2: [(2, 3, 2), (2, 3, 6)]}[axis]
    xs = [rng.normal(size=s).astype(np.float32) for s in shapes]
    ts = [tf.constant(x) for x in xs]
    with tf.GradientTape() as tape:
        tape.watch(ts)
        ky = keras.layers.Concatenate(axis=axis)(ts)
    dy = rng.normal(size=tuple(ky.shape)).astype(np.float32)
    kgrads = tape.gradient(ky, ts, output_gradients=tf.constant(dy))
    y, backprop = sn.layers.Concatenate(axis=axis).forward(list(to_backend(backend, *xs)))
    np.testing.assert_array_equal(sn.to_numpy(y), ky.numpy())
    for ours, theirs in zip(backprop(to_backend(backend, dy)), kgrads):
        np.testing.assert_array_equal(sn.to_numpy(ours), theirs.numpy())


def keras_resnet(keras):
    """A small functional ResNet with batch norm: a stem, a block with an identity skip, one with a projection."""
    d = {"dtype": "float64"}
    x = keras.Input((8, 8, 2), dtype="float64")
    h = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, **d)(x)
    h = keras.layers.BatchNormalization(momentum=0.9, **d)(h)
    h = keras.layers.Activation("relu", **d)(h)
    for filters, strides in ((4, 1), (6, 2)):
        r = keras.layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False, **d)(h)
        r = keras.layers.BatchNormalization(momentum=0.9, **d)(r)
        r = keras.layers.Activation("relu", **d)(r)
        r = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, **d)(r)
        r = keras.layers.BatchNormalization(momentum=0.9, **d)(r)
        skip = h
        if strides != 1 or filters != h.shape[-1]:
            skip = keras.layers.Conv2D(filters, 1, strides=strides, use_bias=False, **d)(h)
            skip = keras.layers.BatchNormalization(momentum=0.9, **d)(skip)
        h = keras.layers.Activation("relu", **d)(keras.layers.Add(**d)([r, skip]))
    h = keras.layers.GlobalAveragePooling2D(**d)(h)
    return keras.Model(x, keras.layers.Dense(3, **d)(h), name="resnet")


def test_a_keras_functional_resnet_predicts_like_keras_and_round_trips(backend):
    load_tensorflow()
    import keras

    km = keras_resnet(keras)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(5, 8, 8, 2))
    model = from_keras(km)
    np.testing.assert_allclose(sn.to_numpy(model(to_backend(backend, x))), km(x).numpy(), rtol=1e-10, atol=1e-12)
    again = to_keras(model)
    np.testing.assert_array_equal(again(x).numpy(), km(x).numpy())


def trains_like_keras(keras, km, batch):
    """``from_keras(km)`` and ``km`` take 50 SGD steps on the same batches (``batch(rng) -> (x, y)``) in float64:
    every weight of every layer (the moving statistics included) within 1e-9 of Keras's, layer by layer (the
    layers keep their Keras names), and the weights moved."""
    rng = np.random.default_rng(6)
    with sn.use_backend("numpy"):
        model = from_keras(km)
        model.compile(optimizer=sn.optimizers.SGD(0.0625), loss="sparse_categorical_crossentropy")
    km.compile(optimizer=keras.optimizers.SGD(0.0625),  # a Keras loss computes in floatx() unless given a dtype
               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype="float64"))
    initial = [w.numpy().copy() for w in km.weights]
    for _ in range(50):
        x, y = batch(rng)
        with sn.use_backend("numpy"):
            model.train_on_batch(x, y)
        km.train_on_batch(x, y)
    layers = [kl for kl in km.layers if kl.weights]
    assert sum(len(kl.weights) for kl in layers) == len(list(model.parameters()))
    for kl in layers:
        for mine, w in zip(model.get_layer(kl.name).get_weights(), kl.weights):
            np.testing.assert_allclose(mine, w.numpy(), rtol=1e-9, atol=1e-11, err_msg=w.path)
    moved = [np.abs(w.numpy() - before).max() for w, before in zip(km.weights, initial)]
    assert max(moved) > 1e-3  # the weights moved: the comparison proves something


def test_a_keras_functional_resnet_with_batch_norm_trains_like_keras_in_float64():
    """50 SGD steps on the same batches: every weight, the moving statistics included, within 1e-9 of Keras's."""
    load_tensorflow()
    import keras

    trains_like_keras(keras, keras_resnet(keras),
                      lambda rng: (rng.normal(size=(8, 8, 8, 2)), rng.integers(0, 3, size=8)))


def test_config_round_trip_export_and_checkpoint_keep_the_graph(tmp_path):
    x1, x2 = sn.Input((4,), name="left"), sn.Input((3,), name="right")
    shared = sn.layers.Dense(5, name="shared")
    h = sn.layers.Concatenate()([shared(sn.layers.Dense(5)(x2)), x1])
    out = sn.layers.Dense(2)(sn.layers.Add()([shared(sn.layers.Dense(5)(x1)), sn.layers.Dense(5)(h)]))
    model = sn.Model([x1, x2], out, name="two_in")
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=(6, 4)).astype(np.float32), rng.normal(size=(6, 3)).astype(np.float32)
    expected = model.predict([a, b])

    rebuilt = sn.layers.deserialize(sn.layers.serialize(model))
    rebuilt.build()
    rebuilt.set_weights(model.get_weights())
    np.testing.assert_array_equal(rebuilt.predict([a, b]), expected)
    assert [p.name for p in rebuilt.parameters()] == [p.name for p in model.parameters()]

    sn.export.save_model(model, str(tmp_path / "m"))
    loaded = sn.export.load_model(str(tmp_path / "m"))
    np.testing.assert_array_equal(loaded.predict([a, b]), expected)

    ckpt = sn.Checkpoint(model=model)
    path = ckpt.save(str(tmp_path / "ckpt" / "model"))
    for p in model.parameters():
        p.value = p.value * 0
    ckpt.restore(path)
    np.testing.assert_array_equal(model.predict([a, b]), expected)


def test_fit_trains_a_functional_model():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(128, 10)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    inp = sn.Input((10,))
    h = sn.layers.Dense(16, activation="relu")(inp)
    out = sn.layers.Dense(2)(sn.layers.Add()([h, sn.layers.Dense(16, activation="relu")(h)]))
    model = sn.Model(inputs=inp, outputs=out)
    model.compile(optimizer=sn.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    history = model.fit(x, y, batch_size=32, epochs=15, verbose=0)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    assert model.evaluate(x, y)["accuracy"] > 0.9


def test_a_subclassed_model_using_layers_freely_still_works():
    class Net(sn.Model):
        def __init__(self):
            super().__init__()
            self.a = sn.layers.Dense(4)
            self.b = sn.layers.Dense(4)

        def call(self, x, training=False):
            h, back_a = self.a.forward(x, training)
            y, back_b = self.b.forward(h, training)
            return h + y, lambda dy: back_a(dy + back_b(dy))

    net = Net()
    assert type(net) is Net
    y = net(np.ones((2, 3), np.float32))
    assert y.shape == (2, 4) and len(net.weights) == 4


def test_the_placeholders_refuse_what_cannot_be_built():
    x = sn.Input((4,))
    other = sn.Input((4,))
    h = sn.layers.Dense(3)(x)
    with pytest.raises(ValueError, match="depend on the input .* not in inputs"):
        sn.Model(x, sn.layers.Add()([h, sn.layers.Dense(3)(other)]))
    with pytest.raises(ValueError, match="is not used by any output"):
        sn.Model([x, other], h)
    with pytest.raises(ValueError, match="mixed with arrays"):
        sn.layers.Add()([h, np.ones((1, 3), np.float32)])
    with pytest.raises(ValueError, match="do not broadcast"):
        sn.layers.Add()([h, sn.layers.Dense(2)(x)])
    with pytest.raises(ValueError, match="agree on every axis but"):
        sn.layers.Concatenate(axis=1)([sn.layers.Reshape((3, 1))(h), sn.layers.Reshape((2, 2))(x)])
    with pytest.raises(ValueError, match="exactly 2"):
        sn.layers.Subtract()([h, h, h])
    with pytest.raises(ValueError, match="Input: shape must hold positive sizes"):
        sn.Input((0, 3))
    model = sn.Model(x, h)
    with pytest.raises(ValueError, match=r"input .* must have shape \(None, 4\), got \(2, 5\)"):
        model(np.ones((2, 5), np.float32))
    two = sn.Model([x, other], sn.layers.Add()([h, sn.layers.Dense(3)(other)]))
    with pytest.raises(ValueError, match="takes a list of 2 arrays"):
        two(np.ones((2, 4), np.float32))
    with pytest.raises(TypeError, match="placeholder of a model being defined"):
        np.asarray(x)
    with pytest.raises(ValueError, match="compile: the model has 2 outputs"):
        sn.Model(x, [h, sn.layers.Dense(2)(h)]).compile(loss="sparse_categorical_crossentropy")


def test_a_crafted_config_is_refused_by_field():
    x = sn.Input((4,))
    config = sn.layers.serialize(sn.Model(x, sn.layers.Dense(2)(x)))
    bad = {**config["config"], "nodes": [{"layer": 5, "x": {"input": 0}, "kwargs": {}}]}
    with pytest.raises(ValueError, match="layer index 5 is not one of the 1"):
        sn.layers.deserialize({"class_name": config["class_name"], "config": bad})
    bad = {**config["config"], "nodes": [{"layer": 0, "x": {"node": 0, "index": 0}, "kwargs": {}}]}
    with pytest.raises(ValueError, match="node index 0 is not one of the 0 defined before it"):
        sn.layers.deserialize({"class_name": config["class_name"], "config": bad})


def test_the_graph_the_profiler_and_the_summary_see_the_branches(tmp_path):
    """On the reference backend, as the TensorBoard tests run (the graph is the same on every backend)."""
    with sn.use_backend("numpy"):
        see_the_branches(tmp_path)


def see_the_branches(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    x = sn.Input((8,))
    h = sn.layers.Dense(6, activation="relu", name="h")(x)
    y = sn.layers.Add(name="skip")([h, sn.layers.Dense(6, name="f")(h)])
    model = sn.Model(x, sn.layers.Dense(3, name="out")(y))
    model.compile(loss="sparse_categorical_crossentropy")
    data, labels = np.random.default_rng(9).random((4, 8), dtype=np.float32), np.array([0, 1, 2, 0])
    sn.summary.write_graph(tmp_path, model, data, labels)
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    graph = {n.name: list(n.input) for n in acc.Graph().node}
    assert graph["skip/add"] == ["h/relu", "f/dense"]
    assert graph["out/dense"][0] == "skip/add"
    with sn.profile() as prof:
        model.train_on_batch(data, labels)
    names = {r["name"] for r in prof.rows}
    assert {"add forward", "add backward"} <= names
    text = model.summary(print_fn=lambda _: None)
    assert "skip (Add)" in text and "Connected to" in text and "h[0][0], f[0][0]" in text


def keras_masked_sequence_model(keras):
    """Embedding(mask_zero=True) -> bidirectional GRU -> a MultiHeadAttention block (residual, layer norm) -> GRU.

    The mask of the padding (id 0) flows through all of it: the recurrent layers carry their state over
    padded steps, the attention never attends to a padded key."""
    d = {"dtype": "float64"}
    ids = keras.Input((7,), dtype="int32")
    e = keras.layers.Embedding(20, 8, mask_zero=True, **d)(ids)
    g = keras.layers.Bidirectional(keras.layers.GRU(4, return_sequences=True, **d), **d)(e)
    a = keras.layers.MultiHeadAttention(2, 4, **d)(g, g)
    h = keras.layers.LayerNormalization(**d)(keras.layers.Add(**d)([g, a]))
    out = keras.layers.Dense(3, **d)(keras.layers.GRU(5, **d)(h))
    return keras.Model(ids, out, name="masked")


def padded_ids(rng, n):
    ids = rng.integers(1, 20, size=(n, 7))
    for row in ids:
        start = rng.integers(0, 3)
        row[:start] = 0  # leading padding
        row[rng.integers(4, 8):] = 0  # and trailing
    ids[0] = 0  # a row of padding only
    return ids


def test_a_masked_keras_sequence_model_converts_predicts_like_keras_and_round_trips(backend):
    load_tensorflow()
    import keras

    km = keras_masked_sequence_model(keras)
    ids = padded_ids(np.random.default_rng(10), 6)
    model = from_keras(km)
    np.testing.assert_allclose(sn.to_numpy(model(to_backend(backend, ids))), km(ids).numpy(), rtol=1e-10,
                               atol=1e-12)
    again = to_keras(model)
    np.testing.assert_array_equal(again(ids).numpy(), km(ids).numpy())
    unmasked = ids.copy()
    unmasked[unmasked == 0] = 1
    assert np.abs(km(unmasked).numpy() - km(ids).numpy()).max() > 1e-3  # the mask matters here


def test_a_masked_keras_sequence_model_trains_like_keras_in_float64():
    """50 SGD steps on padded batches: every weight within 1e-9 of Keras's."""
    load_tensorflow()
    import keras

    trains_like_keras(keras, keras_masked_sequence_model(keras),
                      lambda rng: (padded_ids(rng, 8), rng.integers(0, 3, size=8)))


def test_multi_head_attention_takes_kerass_call_query_value_key(backend):
    """``mha(query, value)`` and ``mha(query, value, key)`` as in Keras, on arrays and on placeholders."""
    tf = load_tensorflow()
    import keras

    rng = np.random.default_rng(12)
    q, v, k = rng.normal(size=(2, 5, 4)), rng.normal(size=(2, 6, 3)), rng.normal(size=(2, 6, 2))
    kmha = keras.layers.MultiHeadAttention(2, 4, dtype="float64")
    expected = kmha(tf.constant(q), tf.constant(v), tf.constant(k)).numpy()
    mha = sn.layers.MultiHeadAttention(2, 4, dtype="float64")
    mha(*to_backend(backend, q, v, k))
    mha.set_weights(kmha.get_weights())
    np.testing.assert_allclose(sn.to_numpy(mha(*to_backend(backend, q, v, k))), expected, rtol=1e-10)
    inputs = [sn.Input(a.shape[1:], dtype="float64") for a in (q, v, k)]
    model = sn.Model(inputs, sn.layers.MultiHeadAttention(2, 4, name="cross")(*inputs))
    model.get_layer("cross").set_weights(kmha.get_weights())
    np.testing.assert_allclose(sn.to_numpy(model(list(to_backend(backend, q, v, k)))), expected, rtol=1e-10)
    with pytest.raises(ValueError, match="pass training= by keyword"):
        mha(to_backend(backend, q), True)


def test_fit_evaluate_and_predict_take_a_list_of_inputs_as_keras():
    rng = np.random.default_rng(13)
    a, b = rng.normal(size=(90, 4)).astype(np.float32), rng.normal(size=(90, 3)).astype(np.float32)
    y = (a[:, 0] - b[:, 1] > 0).astype(np.int64)
    x1, x2 = sn.Input((4,)), sn.Input((3,))
    h = sn.layers.Concatenate()([sn.layers.Dense(8, activation="relu")(x1), sn.layers.Dense(8, activation="relu")(x2)])
    model = sn.Model([x1, x2], sn.layers.Dense(2)(h))
    model.compile(optimizer=sn.optimizers.SGD(0.2), loss="sparse_categorical_crossentropy")
    history = model.fit([a, b], y, batch_size=16, epochs=20, verbose=0, validation_split=0.2)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    assert "val_accuracy" in history.history
    assert model.evaluate([a, b], y, batch_size=7)["accuracy"] > 0.85
    assert model.predict([a, b], batch_size=13).shape == (90, 2)
    with pytest.raises(ValueError, match=r"fit: the inputs must have the same number of examples, got \[90, 89\]"):
        model.fit([a, b[:89]], y, verbose=0)
    with pytest.raises(ValueError, match="validation_data: x_val must have x's shape per example"):
        model.fit([a, b], y, verbose=0, validation_data=([a, a], y))


def test_recurrent_interop_keeps_zero_output_for_mask_and_bidirectional_names():
    load_tensorflow()
    import keras

    km = keras.Sequential([keras.Input((5, 3)), keras.layers.Masking(),
                           keras.layers.GRU(4, return_sequences=True, zero_output_for_mask=True),
                           keras.layers.Bidirectional(keras.layers.SimpleRNN(2, return_sequences=True))])
    ours = from_keras(km)
    assert ours.layers[1].zero_output_for_mask and to_keras(ours).layers[1].zero_output_for_mask
    names = [p.name for p in ours.layers[2].parameters()]
    assert names[0].startswith(f"{ours.layers[2].name}/forward_simple_rnn") and "forward_forward" not in names[0]
    x = np.random.default_rng(14).random((2, 5, 3)).astype(np.float32)
    x[0, 3:] = 0  # masked steps: zeros out of the GRU, as Keras's
    np.testing.assert_allclose(ours.predict(x), km.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_a_built_model_nested_in_another_takes_its_name_in_its_weights_and_saves_apart(tmp_path):
    """A functional model is built when made, so its weights were named on their own (``dense/kernel``); inside
    another model they become ``block/dense/kernel`` and do not collide with the outer ``dense``. Two weights
    under one name could not be checkpointed apart: a save refuses them."""
    x = sn.Input((6,))
    block = sn.Model(x, sn.layers.Add()([x, sn.layers.Dense(6)(x)]), name="block")
    y = sn.Input((6,))
    outer = sn.Model(y, sn.layers.Dense(2)(block(block(y))), name="outer")  # the block twice: shared weights
    assert [p.name for p in outer.parameters()] == ["block/dense/kernel", "block/dense/bias", "dense/kernel",
                                                    "dense/bias"]
    a = np.random.default_rng(15).random((3, 6)).astype(np.float32)
    expected = outer.predict(a)
    path = sn.Checkpoint(model=outer).save(str(tmp_path / "ckpt" / "model"))
    for p in outer.parameters():
        p.value = p.value * 0
    sn.Checkpoint(model=outer).restore(path)
    np.testing.assert_array_equal(outer.predict(a), expected)
    sn.export.save_model(outer, str(tmp_path / "m"))
    np.testing.assert_array_equal(sn.export.load_model(str(tmp_path / "m")).predict(a), expected)

    first, second = sn.layers.Dense(3), sn.layers.Dense(3)
    first(a), second(np.zeros((1, 3), np.float32))
    assert [p.name for p in sn.Sequential([first, second]).parameters()] == ["dense/kernel", "dense/bias",
                                                                             "dense_1/kernel", "dense_1/bias"]
    # Two different weights under one name (however a model came to hold them) are refused by a save,
    # with nothing written: a restore would load one array into both.
    clash = sn.Sequential([sn.layers.Dense(3, name="a"), sn.layers.Dense(3, name="b")])
    clash(a)
    clash.layers[1].kernel.name = clash.layers[0].kernel.name
    with pytest.raises(sn.checkpoint.CheckpointError, match="two different weights named 'a/kernel'"):
        sn.Checkpoint(model=clash).save(str(tmp_path / "clash" / "model"))
    assert not list((tmp_path / "clash").rglob("model-*")) if (tmp_path / "clash").exists() else True
