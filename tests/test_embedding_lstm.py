"""embedding_lstm: an LSTM over a lookup, against Keras's Embedding + LSTM, finite differences,
the unfused pair, and Sequential's use of it."""
from __future__ import annotations

import functools

import numpy as np
import pytest

import scratchnet as sn
from helpers import assert_close, load_tensorflow, to_backend
from scratchnet.gradcheck import check_op

DTYPES = [np.float32, np.float64]

# (N, T, V, D, H). Every case has fewer table rows than positions (where the fused op pays) and ids
# that repeat; the last table row is never picked, so its gradient must be zero.
CASES = {
    "general": (3, 4, 6, 5, 7),
    "one_step": (5, 1, 4, 3, 2),
    "one_sequence": (1, 9, 5, 2, 3),
}


def make_inputs(case, dtype, seed=0):
    N, T, V, D, H = CASES[case]
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, V - 1, (N, T))  # row V-1 never picked
    ids.flat[:3] = 0  # id 0 at least three times: its gradient is a sum
    arrays = dict(
        table=rng.standard_normal((V, D)),
        kernel=0.5 * rng.standard_normal((D, 4 * H)),
        recurrent_kernel=0.5 * rng.standard_normal((H, 4 * H)),
        bias=0.5 * rng.standard_normal(4 * H),
        h0=0.5 * rng.standard_normal((N, H)),
        c0=0.5 * rng.standard_normal((N, H)),
        dys=rng.standard_normal((N, T, H)),
        dh=rng.standard_normal((N, H)),
        dc=rng.standard_normal((N, H)),
    )
    return ids, {k: v.astype(dtype) for k, v in arrays.items()}


@functools.lru_cache(maxsize=None)
def keras_reference(case, dtype_name):
    """Outputs and gradients of ``sum(ys*dys) + sum(h*dh) + sum(c*dc)`` through Keras's Embedding then LSTM."""
    tf_ = load_tensorflow()
    ids, a = make_inputs(case, np.dtype(dtype_name))
    N, T, V, D, H = CASES[case]
    embedding = tf_.keras.layers.Embedding(V, D, dtype=dtype_name)
    embedding.build((N, T))
    embedding.set_weights([a["table"]])
    layer = tf_.keras.layers.LSTM(H, return_sequences=True, return_state=True, dtype=dtype_name)
    layer.build((N, T, D))
    layer.set_weights([a["kernel"], a["recurrent_kernel"], a["bias"]])
    h0, c0 = (tf_.constant(a[k]) for k in ("h0", "c0"))
    with tf_.GradientTape() as tape:
        tape.watch([h0, c0])
        ys, h, c = layer(embedding(tf_.constant(ids)), initial_state=[h0, c0])
        loss = tf_.reduce_sum(ys * a["dys"]) + tf_.reduce_sum(h * a["dh"]) + tf_.reduce_sum(c * a["dc"])
    grads = tape.gradient(loss, [embedding.embeddings, *layer.trainable_weights, h0, c0])
    return [t.numpy() for t in (ys, h, c)], [tf_.convert_to_tensor(g).numpy() for g in grads]


GRAD_NAMES = ("dtable", "dkernel", "drecurrent_kernel", "dbias", "dh0", "dc0")
WEIGHTS = ("table", "kernel", "recurrent_kernel", "bias")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("case", list(CASES))
def test_embedding_lstm_matches_keras_embedding_then_lstm(backend, case, dtype):
    ids, a = make_inputs(case, dtype)
    (ys, h, c), bp = sn.ops.embedding_lstm(
        to_backend(backend, ids), *to_backend(backend, *(a[k] for k in WEIGHTS)),
        h0=to_backend(backend, a["h0"]), c0=to_backend(backend, a["c0"]),
    )
    grads = bp(*to_backend(backend, a["dys"], a["dh"], a["dc"]))
    (e_ys, e_h, e_c), e_grads = keras_reference(case, np.dtype(dtype).name)
    for name, got, want in zip(("ys", "h", "c"), (ys, h, c), (e_ys, e_h, e_c)):
        assert got.dtype == dtype, name
        assert_close(sn.to_numpy(got), want, dtype, name)
    for name, got, want in zip(GRAD_NAMES, grads, e_grads):
        assert got.dtype == dtype, name
        assert_close(sn.to_numpy(got), want, dtype, name)
    np.testing.assert_array_equal(sn.to_numpy(grads[0])[-1], 0)  # the row no id picked


@pytest.mark.parametrize("case", list(CASES))
def test_embedding_lstm_equals_the_lookup_then_the_lstm(backend, case):
    ids, a = make_inputs(case, np.float64, seed=2)
    weights = to_backend(backend, *(a[k] for k in WEIGHTS))
    dys, dh, dc = to_backend(backend, a["dys"], a["dh"], a["dc"])
    (ys, h, c), bp = sn.ops.embedding_lstm(to_backend(backend, ids), *weights)
    fused = bp(dys, dh, dc)
    x, lookup_bp = sn.ops.embedding(to_backend(backend, ids), weights[0])
    (e_ys, e_h, e_c), lstm_bp = sn.ops.lstm(x, *weights[1:])
    dx, *rest = lstm_bp(dys, dh, dc)
    unfused = [lookup_bp(dx), *rest]
    for name, got, want in zip(("ys", "h", "c", *GRAD_NAMES), (ys, h, c, *fused), (e_ys, e_h, e_c, *unfused)):
        assert_close(sn.to_numpy(got), sn.to_numpy(want), np.float64, name)


def test_embedding_lstm_without_the_table_gradient_skips_it_and_keeps_the_rest(backend):
    ids, a = make_inputs("general", np.float64, seed=3)
    weights = to_backend(backend, *(a[k] for k in WEIGHTS))
    dys = to_backend(backend, a["dys"])
    _, bp = sn.ops.embedding_lstm(to_backend(backend, ids), *weights)
    _, frozen_bp = sn.ops.embedding_lstm(to_backend(backend, ids), *weights, need_dtable=False)
    want, got = bp(dys), frozen_bp(dys)
    assert got[0] is None
    for name, g, w in zip(GRAD_NAMES[1:], got[1:], want[1:]):
        np.testing.assert_array_equal(sn.to_numpy(g), sn.to_numpy(w), err_msg=name)


@pytest.mark.parametrize("case", list(CASES))
def test_embedding_lstm_gradients_match_finite_differences(case):
    ids, a = make_inputs(case, np.float64, seed=1)
    with sn.use_backend("numpy"):
        report = check_op(sn.ops.embedding_lstm, ids, *(a[k] for k in (*WEIGHTS, "h0", "c0")),
                          dy=(a["dys"], a["dh"], a["dc"]))
    assert [c.name for c in report] == [*WEIGHTS, "h0", "c0"]


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(ids=np.array([[0, 6]])), r"embedding_lstm: ids must lie in \[0, 6\) \(table has 6 rows\), found 6"),
        (dict(ids=np.array([0, 1, 2])), r"embedding_lstm: ids must have rank 2 \[N, T\]"),
        (dict(ids=np.zeros((2, 0), dtype=int)), r"embedding_lstm: ids must have at least one time step"),
        (dict(ids=np.array([[0.0, 1.0]])), r"embedding_lstm: ids must be integers"),
        (dict(kernel=np.zeros((4, 28), np.float32)), r"embedding_lstm: kernel must have shape \(D, 4H\) = \(5, 28\).*table: \(6, 5\)"),
        (dict(bias=np.zeros(27, np.float32)), r"embedding_lstm: bias must have shape \(28,\)"),
    ],
)
def test_embedding_lstm_rejects_bad_input_naming_the_argument(change, message):
    ids, a = make_inputs("general", np.float32)
    args = dict(ids=ids, **{k: a[k] for k in WEIGHTS})
    args.update(change)
    args = {k: to_backend(sn.backend.get_backend(), v) for k, v in args.items()}  # the current backend's arrays
    with pytest.raises(ValueError, match=message):
        sn.ops.embedding_lstm(**args)


# ------------------------------------------------------------------ in a Sequential


def _language_model(V, D=4, H=5, stateful=False, seed=0):
    sn.random.seed(seed)
    model = sn.Sequential([
        sn.layers.Embedding(V, D, name="embedding"),
        sn.layers.LSTM(H, return_sequences=True, stateful=stateful, name="lstm"),
        sn.layers.Dense(V, name="logits"),
    ])
    model.build((None, 1))
    return model


def _step_gradients(model, ids, dy, fused):
    """The output and every parameter's gradient of one forward/backward, fused or not."""
    ids, dy = to_backend(sn.backend.get_backend(), ids, dy)
    for p in model.parameters():
        p.grad = None
    if fused:
        y, bp = model.forward(ids, training=True)
        bp(dy)
    else:
        x, backprops = ids, []
        for layer in model.layers:
            x, layer_bp = layer.forward(x, training=True)
            backprops.append(layer_bp)
        y, g = x, dy
        for layer_bp in reversed(backprops):
            g = layer_bp(g)
    return sn.to_numpy(y), {p.name: None if p.grad is None else sn.to_numpy(p.grad) for p in model.parameters()}


def _calls(monkeypatch, name):
    """A list that grows by one each time ``sn.ops.<name>`` is called from a layer."""
    from scratchnet.layers import embedding as embedding_module
    from scratchnet.layers import recurrent as recurrent_module

    calls = []
    module = recurrent_module if name != "embedding" else embedding_module
    real = getattr(module.ops, name)

    def counting(*args, **kwargs):
        calls.append(name)
        return real(*args, **kwargs)

    monkeypatch.setattr(module.ops, name, counting)
    return calls


def test_sequential_runs_an_embedding_then_an_lstm_as_one_op_with_the_same_gradients(backend, monkeypatch):
    V, N, T = 7, 3, 5  # 7 rows < 15 positions
    rng = np.random.default_rng(0)
    ids = rng.integers(0, V, (N, T))
    dy = rng.standard_normal((N, T, V)).astype(np.float32)
    model = _language_model(V)
    fused_calls, lookups = _calls(monkeypatch, "embedding_lstm"), _calls(monkeypatch, "embedding")
    y, grads = _step_gradients(model, to_backend(backend, ids), to_backend(backend, dy), fused=True)
    assert (fused_calls, lookups) == (["embedding_lstm"], [])
    e_y, e_grads = _step_gradients(model, to_backend(backend, ids), to_backend(backend, dy), fused=False)
    assert lookups == ["embedding"]
    assert_close(y, e_y, np.float32, "logits")
    assert grads.keys() == e_grads.keys()
    for name in grads:
        assert_close(grads[name], e_grads[name], np.float32, name)


def test_sequential_keeps_the_lookup_when_the_table_has_as_many_rows_as_the_batch_has_positions(monkeypatch):
    model = _language_model(V=6)
    fused_calls = _calls(monkeypatch, "embedding_lstm")
    model.forward(np.zeros((2, 3), dtype=np.int64), training=True)  # 6 positions: the projection would not pay
    assert fused_calls == []
    model.forward(np.zeros((2, 4), dtype=np.int64), training=True)  # 8 positions
    assert fused_calls == ["embedding_lstm"]


def test_fused_pair_carries_a_stateful_lstm_state_and_leaves_a_frozen_table_alone():
    V, N, T = 5, 2, 4
    rng = np.random.default_rng(1)
    batches = [rng.integers(0, V, (N, T)) for _ in range(3)]
    dy = rng.standard_normal((N, T, V)).astype(np.float32)
    fused, unfused = _language_model(V, stateful=True), _language_model(V, stateful=True)
    for model in (fused, unfused):
        model.layers[0].embeddings.trainable = False
    for ids in batches:  # the state carried from each batch into the next
        y, grads = _step_gradients(fused, ids, dy, fused=True)
        e_y, e_grads = _step_gradients(unfused, ids, dy, fused=False)
        assert_close(y, e_y, np.float32, "logits")
        for name in grads:
            if grads[name] is None or e_grads[name] is None:
                assert grads[name] is None and e_grads[name] is None, name
            else:
                assert_close(grads[name], e_grads[name], np.float32, name)
        assert grads["embedding/embeddings"] is None  # frozen: collects nothing
    for got, want in zip(fused.layers[1].states, unfused.layers[1].states):
        assert_close(sn.to_numpy(got), sn.to_numpy(want), np.float32, "state")


def test_a_subclass_with_its_own_call_is_not_fused_away(monkeypatch):
    class ScaledEmbedding(sn.layers.Embedding):
        def call(self, x, training=False):
            y, bp = super().call(x, training)
            return 2 * y, lambda dy: bp(2 * dy)

    V, N, T = 5, 2, 4
    sn.random.seed(0)
    model = sn.Sequential([ScaledEmbedding(V, 3, name="embedding"), sn.layers.LSTM(4, return_sequences=True, name="lstm")])
    model.build((None, 1))
    fused_calls = _calls(monkeypatch, "embedding_lstm")
    ids = np.random.default_rng(2).integers(0, V, (N, T))
    dy = np.random.default_rng(3).standard_normal((N, T, 4)).astype(np.float32)
    y, grads = _step_gradients(model, ids, dy, fused=True)
    e_y, e_grads = _step_gradients(model, ids, dy, fused=False)
    assert fused_calls == []
    np.testing.assert_array_equal(y, e_y)
    for name in grads:
        np.testing.assert_array_equal(grads[name], e_grads[name], err_msg=name)
