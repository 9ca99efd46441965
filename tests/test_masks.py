"""Masks against Keras 3 (the installed Keras is the referee): LSTM, GRU, SimpleRNN and Bidirectional given a mask
(holes in the middle, all-masked rows, go_backwards, initial states, return_sequences / return_state), Masking,
Embedding(mask_zero) and the fused Embedding->LSTM, MultiHeadAttention with its inputs' masks; outputs and every
gradient (tf.GradientTape), float32 and float64, on every backend the ``backend`` fixture gives (numpy, numba, and
cupy where it runs, the CuPy stand-in included)."""
from __future__ import annotations

import numpy as np
import pytest

import scratchnet as sn
from helpers import assert_close, load_tensorflow, to_backend

DTYPES = [np.float32, np.float64]
DTYPE_IDS = ["float32", "float64"]
L = sn.layers
N, T, D, H = 4, 6, 3, 5


def _mask(kind, rng):
    """(N, T) masks Keras takes: right padding, holes in the middle (with a row masked throughout), leading padding."""
    if kind == "right":
        return np.arange(T)[None, :] < np.array([T, 4, 1, 3])[:, None]
    if kind == "holes":
        m = rng.random((N, T)) > 0.4
        m[0] = False  # a row masked throughout
        m[1] = [True, False, False, True, False, True]  # holes in the middle
        return m
    m = np.arange(T)[None, :] >= np.array([0, 2, 5, 3])[:, None]  # leading padding
    return m


def _random_weights(weights, rng, dtype):
    return [(0.5 * rng.standard_normal(w.shape)).astype(dtype) for w in weights]


def _keras_gradients(tf, fn, inputs, weights_of, dys):
    """Keras's outputs and the gradients of ``sum(outputs * dys)`` for ``inputs`` and the trainable weights."""
    ts = [tf.constant(a) for a in inputs]
    with tf.GradientTape(persistent=True) as tape:
        for t in ts:
            tape.watch(t)
        out = fn(*ts)
        outs = list(out) if isinstance(out, (list, tuple)) else [out]
        loss = sum(tf.reduce_sum(o * d) for o, d in zip(outs, dys))
    grads = [tape.gradient(loss, t) for t in ts]
    wgrads = tape.gradient(loss, weights_of())
    return [o.numpy() for o in outs], [None if g is None else g.numpy() for g in grads], [tf.convert_to_tensor(g).numpy() for g in wgrads]


OPTIONS = {
    "last": dict(),
    "sequences": dict(return_sequences=True),
    "state": dict(return_state=True, return_sequences=True),
    "state last": dict(return_state=True),
    "backwards": dict(go_backwards=True, return_sequences=True),
    "backwards last": dict(go_backwards=True),
    "initial state": dict(return_sequences=True),
    "zero outputs": dict(return_sequences=True, zero_output_for_mask=True),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("mask_kind", ["right", "holes", "leading"])
@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("kind", ["LSTM", "GRU", "SimpleRNN"])
def test_masked_recurrent_layer_matches_keras(backend, kind, option, mask_kind, dtype):
    tf = load_tensorflow()
    rng = np.random.default_rng(3)
    kwargs = OPTIONS[option]
    mask = _mask(mask_kind, rng)
    x = rng.standard_normal((N, T, D)).astype(dtype)
    states = (2 if kind == "LSTM" else 1) if option == "initial state" else 0
    h0 = [rng.standard_normal((N, H)).astype(dtype) for _ in range(states)]
    keras_layer = getattr(tf.keras.layers, kind)(H, dtype=np.dtype(dtype).name, **kwargs)
    keras_layer(tf.constant(x))
    weights = _random_weights(keras_layer.get_weights(), rng, dtype)
    keras_layer.set_weights(weights)
    sequences = kwargs.get("return_sequences", False)
    n_states = (2 if kind == "LSTM" else 1) if kwargs.get("return_state") else 0
    dys = [rng.standard_normal((N, T, H) if sequences else (N, H)).astype(dtype)]
    dys += [rng.standard_normal((N, H)).astype(dtype) for _ in range(n_states)]

    def keras_call(xt, *h0t):
        return keras_layer(xt, mask=tf.constant(mask), initial_state=list(h0t) if h0t else None)

    outs_k, grads_k, wgrads_k = _keras_gradients(tf, keras_call, [x, *h0], lambda: keras_layer.trainable_weights, dys)

    ours = getattr(L, kind)(H, dtype=dtype, **kwargs)
    ours.forward(to_backend(backend, x))
    ours.set_weights(weights)
    extra = {"initial_state": [to_backend(backend, h) for h in h0]} if h0 else {}
    out, backprop = ours.forward(to_backend(backend, x), mask=to_backend(backend, mask), **extra)
    outs = out if isinstance(out, list) else [out]
    for i, (o, o_k) in enumerate(zip(outs, outs_k)):
        assert_close(sn.to_numpy(o), o_k, dtype, f"output {i}")
    ours.zero_grad()
    dY = [to_backend(backend, d) for d in dys] if len(dys) > 1 else to_backend(backend, dys[0])
    grads = backprop(dY)
    grads = grads if isinstance(grads, list) else [grads]
    for name, g, g_k in zip(["dx", "dh0", "dc0"], grads, grads_k):
        assert_close(sn.to_numpy(g), g_k, dtype, name)
    for p, g_k in zip(ours.parameters(), wgrads_k):
        assert_close(sn.to_numpy(p.grad), g_k, dtype, p.name)
    mask_out = ours.compute_mask(x, mask)
    expected = mask if sequences else None
    mask_out = mask_out[0] if kwargs.get("return_state") else mask_out
    assert (mask_out is None) == (expected is None)
    if expected is not None:
        np.testing.assert_array_equal(sn.to_numpy(mask_out), expected)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul"])
@pytest.mark.parametrize("inner, sequences", [("GRU", True), ("GRU", False), ("SimpleRNN", True), ("LSTM", True),
                                               ("LSTM", False)])
def test_masked_bidirectional_matches_keras(backend, inner, sequences, merge_mode, dtype):
    """Both directions get the mask (the backward one reversed); with sequences both zero the masked steps."""
    tf = load_tensorflow()
    rng = np.random.default_rng(4)
    mask = _mask("holes", rng)
    x = rng.standard_normal((N, T, D)).astype(dtype)
    name = np.dtype(dtype).name
    keras_layer = tf.keras.layers.Bidirectional(getattr(tf.keras.layers, inner)(H, return_sequences=sequences,
                                                                                dtype=name),
                                                merge_mode=merge_mode, dtype=name)
    keras_layer(tf.constant(x))
    weights = _random_weights(keras_layer.get_weights(), rng, dtype)
    keras_layer.set_weights(weights)
    dy = rng.standard_normal((N, T, 2 * H if merge_mode == "concat" else H) if sequences else
                             (N, 2 * H if merge_mode == "concat" else H)).astype(dtype)
    outs_k, (dx_k,), wgrads_k = _keras_gradients(tf, lambda xt: keras_layer(xt, mask=tf.constant(mask)), [x],
                                                 lambda: keras_layer.trainable_weights, [dy])
    ours = L.Bidirectional(getattr(L, inner)(H, return_sequences=sequences, dtype=dtype), merge_mode=merge_mode)
    ours.forward(to_backend(backend, x))
    ours.set_weights(weights)
    y, backprop = ours.forward(to_backend(backend, x), mask=to_backend(backend, mask))
    assert_close(sn.to_numpy(y), outs_k[0], dtype, "y")
    ours.zero_grad()
    assert_close(sn.to_numpy(backprop(to_backend(backend, dy))), dx_k, dtype, "dx")
    for p, g_k in zip(ours.parameters(), wgrads_k):
        assert_close(sn.to_numpy(p.grad), g_k, dtype, p.name)
    assert (ours.compute_mask(x, mask) is None) == (not sequences)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_masking_layer_matches_keras(backend, dtype):
    tf = load_tensorflow()
    rng = np.random.default_rng(5)
    x = rng.standard_normal((N, T, D)).astype(dtype)
    x[0, 2] = 0.5
    x[1, :3] = 0.5
    x[3, -1] = 0.5
    x[2, 1, 0] = 0.5  # one feature alone at the mask value: not masked
    keras_layer = tf.keras.layers.Masking(mask_value=0.5, dtype=np.dtype(dtype).name)
    dy = rng.standard_normal(x.shape).astype(dtype)
    outs_k, (dx_k,), _ = _keras_gradients(tf, keras_layer, [x], lambda: [], [dy])
    mask_k = keras_layer.compute_mask(tf.constant(x)).numpy()
    ours = L.Masking(mask_value=0.5, dtype=dtype)
    y, backprop = ours.forward(to_backend(backend, x))
    assert_close(sn.to_numpy(y), outs_k[0], dtype, "y")
    assert_close(sn.to_numpy(backprop(to_backend(backend, dy))), dx_k, dtype, "dx")
    np.testing.assert_array_equal(sn.to_numpy(ours.compute_mask(to_backend(backend, x), None)), mask_k)
    assert L.Masking.from_config(ours.get_config()).mask_value == 0.5


def test_embedding_mask_zero(backend):
    tf = load_tensorflow()
    ids = np.array([[3, 0, 2, 0], [0, 0, 0, 0], [1, 2, 3, 4]])
    ours = L.Embedding(5, 2, mask_zero=True)
    keras_mask = tf.keras.layers.Embedding(5, 2, mask_zero=True).compute_mask(tf.constant(ids)).numpy()
    np.testing.assert_array_equal(sn.to_numpy(ours.compute_mask(to_backend(backend, ids), None)), keras_mask)
    assert L.Embedding(5, 2).compute_mask(ids, None) is None
    config = ours.get_config()
    assert config["mask_zero"] is True and L.Embedding.from_config(config).mask_zero
    with pytest.raises(ValueError, match="Embedding: mask_zero"):
        L.Embedding(5, 2, mask_zero="yes")


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
def test_sequential_embedding_mask_zero_lstm_matches_keras(backend, fused, monkeypatch):
    """Embedding(mask_zero) then LSTM: the fused op (few rows, many positions) and the plain pair honour the mask."""
    tf = load_tensorflow()
    rng = np.random.default_rng(6)
    V = 4 if fused else 40
    ids = rng.integers(1, V, (N, T))
    ids[0, 3:] = 0
    ids[1, 1] = 0
    ids[2] = 0
    keras_model = tf.keras.Sequential([tf.keras.Input((T,), dtype="int32"),
                                       tf.keras.layers.Embedding(V, D, mask_zero=True, dtype="float64"),
                                       tf.keras.layers.LSTM(H, return_sequences=True, dtype="float64")])
    weights = _random_weights(keras_model.get_weights(), rng, np.float64)
    keras_model.set_weights(weights)
    dy = rng.standard_normal((N, T, H))
    outs_k, _, wgrads_k = _keras_gradients(tf, lambda: keras_model(tf.constant(ids)), [],
                                           lambda: keras_model.trainable_weights, [dy])
    model = sn.Sequential([L.Embedding(V, D, mask_zero=True), L.LSTM(H, return_sequences=True)], dtype="float64")
    model.build((None, T))
    model.set_weights(weights)
    calls = []
    fused_op = sn.ops.embedding_lstm
    monkeypatch.setattr(sn.ops, "embedding_lstm", lambda *a, **k: calls.append(k) or fused_op(*a, **k))
    y, backprop = model.forward(to_backend(backend, ids))
    assert len(calls) == fused and all(c.get("mask") is not None for c in calls)
    assert_close(sn.to_numpy(y), outs_k[0], np.float64, "y")
    np.testing.assert_array_equal(sn.to_numpy(model.output_mask), ids != 0)
    model.zero_grad()
    backprop(to_backend(backend, dy))
    for p, g_k in zip(model.parameters(), wgrads_k):
        assert_close(sn.to_numpy(p.grad), g_k, np.float64, p.name)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("causal", [False, True], ids=["plain", "causal"])
@pytest.mark.parametrize("form", ["self", "cross", "cross+key"])
def test_multi_head_attention_with_input_masks_matches_keras(backend, form, causal, dtype):
    """Keras 3 builds the attention mask from the query's, value's (and key's) masks; a query left no key (leading
    padding under a causal mask, a masked query) gets weights 0."""
    tf = load_tensorflow()
    rng = np.random.default_rng(7)
    Tq, Tk = (T, T) if form == "self" or causal else (T, 5)
    q = rng.standard_normal((N, Tq, D)).astype(dtype)
    v = q if form == "self" else rng.standard_normal((N, Tk, 4)).astype(dtype)
    k = rng.standard_normal((N, Tk, 2)).astype(dtype) if form == "cross+key" else None
    q_mask = _mask("leading", rng)[:, :Tq]
    v_mask = q_mask if form == "self" else _mask("holes", rng)[:, :Tk]
    k_mask = None if k is None else _mask("right", rng)[:, :Tk]
    name = np.dtype(dtype).name
    keras_layer = tf.keras.layers.MultiHeadAttention(2, 4, dtype=name)  # key_dim 4: see test_multi_head_attention
    args = [q] if form == "self" else ([q, v] if k is None else [q, v, k])

    from keras.src.backend import set_keras_mask

    def keras_call(*ts):
        # Keras 3 reads the query's mask from the tensor (its call overrides a query_mask argument), and the value's
        # and key's from theirs when no argument gives them: the masks a model's layers attach.
        qt, vt, kt = ts[0], ts[1] if len(ts) > 1 else ts[0], ts[2] if len(ts) > 2 else None
        for t, m in ((qt, q_mask), (vt, v_mask), (kt, k_mask)):
            if t is not None:
                set_keras_mask(t, tf.constant(m))
        return keras_layer(qt, vt, key=kt, use_causal_mask=causal)

    keras_call(*[tf.constant(a) for a in args])
    weights = _random_weights(keras_layer.get_weights(), rng, dtype)
    keras_layer.set_weights(weights)
    dy = rng.standard_normal((N, Tq, D)).astype(dtype)
    outs_k, grads_k, wgrads_k = _keras_gradients(tf, keras_call, args, lambda: keras_layer.trainable_weights, [dy])
    ours = L.MultiHeadAttention(2, 4, dtype=dtype)
    xs = [to_backend(backend, a) for a in args]
    masks = [q_mask] if form == "self" else ([q_mask, v_mask] if k is None else [q_mask, v_mask, k_mask])
    masks = [to_backend(backend, m) for m in masks]
    x_in, mask_in = (xs[0], masks[0]) if form == "self" else (xs, masks)
    ours.forward(x_in, use_causal_mask=causal)
    ours.set_weights(weights)
    y, backprop = ours.forward(x_in, use_causal_mask=causal, mask=mask_in)
    assert_close(sn.to_numpy(y), outs_k[0], dtype, "y")
    ours.zero_grad()
    grads = backprop(to_backend(backend, dy))
    grads = [grads] if form == "self" else grads
    for name_, g, g_k in zip(["dquery", "dvalue", "dkey"], grads, grads_k):
        assert_close(sn.to_numpy(g), g_k, dtype, name_)
    for p, g_k in zip(ours.parameters(), wgrads_k):
        assert_close(sn.to_numpy(p.grad), g_k, dtype, p.name)
    np.testing.assert_array_equal(sn.to_numpy(ours.compute_mask(x_in, mask_in)), q_mask)


def test_mask_errors(backend):
    x, w = to_backend(backend, np.zeros((2, 3, 1))), to_backend(backend, np.zeros((1, 4)), np.zeros((1, 4)), np.zeros(4))
    with pytest.raises(ValueError, match=r"lstm: mask must have shape \(N, T\) = \(2, 3\)"):
        sn.ops.lstm(x, *w, mask=to_backend(backend, np.ones((2, 4), bool)))
    with pytest.raises(ValueError, match="gru: mask must be boolean"):
        sn.ops.gru(x, *to_backend(backend, np.zeros((1, 3)), np.zeros((1, 3)), np.zeros((2, 3))),
                   mask=to_backend(backend, np.ones((2, 3))))
    with pytest.raises(ValueError, match="Masking: mask_value"):
        L.Masking("0")
    layer = L.Flatten()
    with pytest.warns(UserWarning, match="does not support masking"):
        assert layer.compute_mask(x, np.ones((2, 3), bool)) is None


def test_batch_norm_passes_a_mask_at_inference_and_refuses_one_that_hides_positions_in_training():
    with sn.use_backend("numpy"):
        model = sn.Sequential([sn.layers.Embedding(5, 3, mask_zero=True), sn.layers.BatchNormalization(),
                               sn.layers.GRU(2)], dtype="float64")
        ids = np.array([[1, 2, 0], [3, 0, 0]])
        model(ids)  # inference: the moving statistics, the mask passed on to the GRU
        assert model.layers[1].compute_mask(None, ids != 0) is not None
        with pytest.raises(ValueError, match=r"BatchNormalization 'batch_normalization': its input has a mask hiding "
                                             r"3 of 6 positions"):
            model.forward(ids, training=True)
        model.forward(np.array([[1, 2, 3], [3, 1, 2]]), training=True)  # nothing hidden: Keras's statistics
