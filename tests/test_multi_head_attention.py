"""sn.layers.MultiHeadAttention against Keras's MultiHeadAttention with the same weights: outputs, input
gradients and every weight's gradient (tf.GradientTape), float32 and float64, self- and cross-attention, masks."""
from __future__ import annotations

import numpy as np
import pytest

import scratchnet as sn
from helpers import assert_close, load_tensorflow, to_backend

DTYPES = [np.float32, np.float64]
DTYPE_IDS = ["float32", "float64"]


def keras_reference(layer_kwargs, dtype, query, value=None, key=None, mask=None, causal=False, dy=None):
    """Keras's output, input gradients and weight gradients (Keras's weight order), and its weights."""
    tf = load_tensorflow()
    keras_dtype = "float64" if dtype == np.float64 else "float32"
    kl = tf.keras.layers.MultiHeadAttention(**layer_kwargs, dtype=keras_dtype)
    rng = np.random.default_rng(7)
    tensors = {"query": tf.constant(query)}
    tensors["value"] = tensors["query"] if value is None else tf.constant(value)  # self-attention: one tensor
    if key is not None:
        tensors["key"] = tf.constant(key)
    kl(**tensors)  # build
    # Non-zero biases, so that their gradients and layout are tested too.
    kl.set_weights([(0.3 * rng.standard_normal(w.shape)).astype(dtype) for w in kl.get_weights()])
    with tf.GradientTape(persistent=True) as tape:
        for t in tensors.values():
            tape.watch(t)
        y = kl(**tensors, attention_mask=None if mask is None else tf.constant(mask), use_causal_mask=causal)
        loss = tf.reduce_sum(y * dy) if dy is not None else None
    grads = {name: tape.gradient(loss, t).numpy() for name, t in tensors.items()}
    weight_grads = [g.numpy() for g in tape.gradient(loss, kl.weights)]
    return y.numpy(), grads, kl.get_weights(), weight_grads, [w.path if hasattr(w, "path") else w.name for w in kl.weights]


def ours(backend, layer_kwargs, weights, dtype, query, value=None, key=None, mask=None, causal=False, dy=None):
    layer = sn.layers.MultiHeadAttention(**layer_kwargs, dtype=dtype)
    kwargs = {}
    if value is not None:
        kwargs["value"] = to_backend(backend, value)
    if key is not None:
        kwargs["key"] = to_backend(backend, key)
    layer.forward(to_backend(backend, query), **kwargs)  # build
    layer.set_weights(weights)
    y, backprop = layer.forward(to_backend(backend, query), attention_mask=None if mask is None else
                                to_backend(backend, mask), use_causal_mask=causal, **kwargs)
    layer.zero_grad()
    grads = backprop(to_backend(backend, dy))
    return sn.to_numpy(y), grads, layer


# key_dim 1, 4 or 16: Keras rounds the scale 1 / sqrt(key_dim) to float32 even in a float64 layer (with key_dim 2
# its float64 outputs are off by 7e-9; with the scale rounded the same way ours match it to 4e-16), so only a
# key_dim whose scale float32 holds exactly lets Keras referee float64 to round-off.
CASES = {
    "self, 2 heads": (dict(num_heads=2, key_dim=4), (3, 5, 6), None, None),
    "self, value_dim and output_shape": (dict(num_heads=3, key_dim=4, value_dim=5, output_shape=7), (2, 4, 6), None,
                                         None),
    "cross, other depths": (dict(num_heads=2, key_dim=16), (2, 3, 5), (2, 6, 4), None),
    "cross with a key": (dict(num_heads=4, key_dim=1), (2, 3, 5), (2, 6, 4), (2, 6, 8)),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("masking", ["none", "causal", "padding"])
def test_multi_head_attention_matches_keras(backend, case, dtype, masking):
    layer_kwargs, q_shape, v_shape, k_shape = CASES[case]
    rng = np.random.default_rng(0)
    query = rng.standard_normal(q_shape).astype(dtype)
    value = None if v_shape is None else rng.standard_normal(v_shape).astype(dtype)
    key = None if k_shape is None else rng.standard_normal(k_shape).astype(dtype)
    Tk = (v_shape or q_shape)[1]
    mask, causal = None, masking == "causal"
    if masking == "padding":
        mask = np.ones((q_shape[0], q_shape[1], Tk), bool)
        mask[0, :, Tk - 2:] = False  # the first sequence's last two keys are padding
    out_dim = layer_kwargs.get("output_shape") or q_shape[-1]
    dy = rng.standard_normal(q_shape[:2] + (out_dim,)).astype(dtype)

    y_k, grads_k, weights, wgrads_k, names = keras_reference(layer_kwargs, dtype, query, value, key, mask, causal, dy)
    y, grads, layer = ours(backend, layer_kwargs, weights, dtype, query, value, key, mask, causal, dy)

    assert_close(y, y_k, dtype, "y")
    if value is None:
        assert_close(sn.to_numpy(grads), grads_k["query"], dtype, "dquery")
    else:
        dq, dv, dk = grads
        assert_close(sn.to_numpy(dq), grads_k["query"], dtype, "dquery")
        assert_close(sn.to_numpy(dv), grads_k["value"], dtype, "dvalue")
        if key is None:
            assert dk is None
        else:
            assert_close(sn.to_numpy(dk), grads_k["key"], dtype, "dkey")
    params = list(layer.parameters())
    assert [p.shape for p in params] == [w.shape for w in weights]
    for p, g_k, name in zip(params, wgrads_k, names):
        assert_close(sn.to_numpy(p.grad), g_k, dtype, f"{p.name} (Keras: {name})")


def test_multi_head_attention_in_a_sequential_trains_and_round_trips_its_config():
    """Self-attention is a one-input layer, so a Sequential can hold it; the config rebuilds the same layer."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 6, 10)).astype(np.float64)
    y = rng.integers(0, 3, size=(8,))
    with sn.use_backend("numpy"):
        model = sn.Sequential([sn.layers.MultiHeadAttention(2, 5, name="mha"), sn.layers.Flatten(),
                               sn.layers.Dense(3)], dtype="float64")
        model.compile(optimizer=sn.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
        first = model.train_on_batch(x, y)
        for _ in range(30):
            last = model.train_on_batch(x, y)
        assert last["loss"] < first["loss"] / 2
        config = model.layers[0].get_config()
        again = sn.layers.deserialize({"class_name": "MultiHeadAttention", "config": config})
        assert again.get_config() == config


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_heads=0, key_dim=4), "num_heads must be a positive int"),
    (dict(num_heads=2, key_dim=4, dropout=1.0), "dropout must be a number in [0, 1)"),
    (dict(num_heads=2, key_dim=4, value_dim=-1), "value_dim must be a positive int"),
])
def test_bad_arguments_name_the_layer_and_the_argument(kwargs, message):
    with pytest.raises(ValueError, match="MultiHeadAttention") as info:
        sn.layers.MultiHeadAttention(**kwargs)
    assert message in str(info.value)


def test_bad_calls_are_one_clear_error():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 6))
    with sn.use_backend("numpy"):
        layer = sn.layers.MultiHeadAttention(2, 4, dtype="float64")
        layer(x)
        with pytest.raises(ValueError, match=r"query must have shape \[N, T, 6\]"):
            layer(rng.standard_normal((2, 3, 5)))
        with pytest.raises(ValueError, match="attention_mask must be boolean"):
            layer(x, attention_mask=np.ones((2, 3, 3)))
        with pytest.raises(ValueError, match="key is given without value"):
            layer(x, key=x)
        with pytest.raises(ValueError, match="rank 3"):
            sn.layers.MultiHeadAttention(2, 4)(rng.standard_normal((2, 6)))
