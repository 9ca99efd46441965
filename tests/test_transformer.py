"""TokenAndPositionEmbedding and TransformerBlock: gradients by finite differences (every weight), the block against
the same computation written with Keras's layers and the same weights, and a causal model that learns."""
from __future__ import annotations

import numpy as np
import pytest

import scratchnet as sn
from helpers import assert_close, load_tensorflow, to_backend
from scratchnet.gradcheck import check_layer

L = sn.layers


@pytest.mark.parametrize("normalize_first", [False, True], ids=["post-norm", "pre-norm"])
def test_transformer_block_gradients_by_finite_differences(normalize_first):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 8))
    with sn.use_backend("numpy"):
        block = L.TransformerBlock(2, 12, activation="gelu", normalize_first=normalize_first, dtype="float64")
        block.forward(x)
        for p in block.parameters():  # biases and norms away from their zero / one start
            p.value[...] += 0.1 * rng.standard_normal(p.shape)
        report = check_layer(block, x, mode="full")
    assert report.passed
    assert len(list(block.parameters())) == 16


def test_token_and_position_embedding_gradients_and_shape_checks():
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 7, size=(3, 5))
    with sn.use_backend("numpy"):
        layer = L.TokenAndPositionEmbedding(7, 6, 4, dtype="float64")
        report = check_layer(layer, ids, mode="full")
        assert report.passed
        assert [p.name for p in layer.parameters()] == ["token_and_position_embedding/token_embedding/embeddings",
                                                         "token_and_position_embedding/position_embedding/embeddings"]
        y = sn.to_numpy(layer(ids))
        table, positions = (sn.to_numpy(w) for w in layer.get_weights())
        np.testing.assert_array_equal(y, table[ids] + positions[:5])
        with pytest.raises(ValueError, match="at most sequence_length=6"):
            layer(rng.integers(0, 7, size=(3, 7)))


def keras_block(tf, x, weights, normalize_first, dy):
    """The block written with Keras's layers, with the given weights; output and input gradient, float64."""
    D = x.shape[-1]
    mha = tf.keras.layers.MultiHeadAttention(2, D // 2, dtype="float64")
    norm1 = tf.keras.layers.LayerNormalization(epsilon=1e-5, dtype="float64")
    dense1 = tf.keras.layers.Dense(12, activation="gelu", dtype="float64")
    dense2 = tf.keras.layers.Dense(D, dtype="float64")
    norm2 = tf.keras.layers.LayerNormalization(epsilon=1e-5, dtype="float64")
    xt = tf.constant(x)
    mha(xt, xt)
    norm1(xt), norm2(xt)
    dense2(dense1(xt))
    pieces = [mha, norm1, dense1, dense2, norm2]
    i = 0
    for layer in pieces:
        n = len(layer.weights)
        layer.set_weights(weights[i:i + n])
        i += n

    def gelu_exact(v):  # Keras's float64 gelu is off by 5e-9 (see test_gelu.py); the exact formula with tf.math.erf
        return 0.5 * v * (1 + tf.math.erf(v / np.sqrt(2.0)))

    dense1.activation = gelu_exact
    with tf.GradientTape() as tape:
        tape.watch(xt)
        if normalize_first:
            n1 = norm1(xt)
            h = xt + mha(n1, n1, use_causal_mask=True)
            y = h + dense2(dense1(norm2(h)))
        else:
            h = norm1(xt + mha(xt, xt, use_causal_mask=True))
            y = norm2(h + dense2(dense1(h)))
        loss = tf.reduce_sum(y * dy)
    return y.numpy(), tape.gradient(loss, xt).numpy()


@pytest.mark.parametrize("normalize_first", [False, True], ids=["post-norm", "pre-norm"])
def test_transformer_block_matches_keras_layers_with_the_same_weights(backend, normalize_first):
    tf = load_tensorflow()
    rng = np.random.default_rng(2)
    x, dy = rng.standard_normal((2, 6, 8)), rng.standard_normal((2, 6, 8))
    block = L.TransformerBlock(2, 12, activation="gelu", normalize_first=normalize_first, dtype="float64")
    block.forward(to_backend(backend, x))
    weights = [w + 0.1 * rng.standard_normal(w.shape) for w in (sn.to_numpy(v) for v in block.get_weights())]
    block.set_weights(weights)
    y, backprop = block.forward(to_backend(backend, x))
    dx = sn.to_numpy(backprop(to_backend(backend, dy)))
    y_k, dx_k = keras_block(tf, x, weights, normalize_first, dy)
    assert_close(sn.to_numpy(y), y_k, np.float64, "y")
    assert_close(dx, dx_k, np.float64, "dx")


def test_a_causal_block_does_not_look_ahead():
    """Changing the last position's input changes no earlier output (and no earlier input's gradient from them)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 6, 8))
    with sn.use_backend("numpy"):
        block = L.TransformerBlock(2, 16, dtype="float64")
        y1 = sn.to_numpy(block(x))
        x2 = x.copy()
        x2[0, -1] += 5.0
        y2 = sn.to_numpy(block(x2))
    np.testing.assert_array_equal(y1[0, :-1], y2[0, :-1])
    assert not np.allclose(y1[0, -1], y2[0, -1])


def test_a_small_transformer_language_model_learns_a_pattern_and_round_trips_its_config():
    """A sequence that repeats with period 5 is learned to near certainty by a 1-block causal model."""
    ids = np.tile(np.arange(5), 8)[None].repeat(8, axis=0)
    for row in range(8):
        ids[row] = np.roll(ids[row], row)
    x, y = ids[:, :-1], ids[:, 1:]
    with sn.use_backend("numpy"):
        sn.random.seed(0)
        model = sn.Sequential([L.TokenAndPositionEmbedding(5, 40, 16), L.TransformerBlock(2, 32, normalize_first=True),
                               L.Dense(5)])
        model.compile(optimizer=sn.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        for _ in range(60):
            result = model.train_on_batch(x, y)
        assert result["accuracy"] > 0.95
        for layer in model.layers[:2]:
            config = layer.get_config()
            assert L.deserialize({"class_name": type(layer).__name__, "config": config}).get_config() == config


def test_sine_position_encoding_is_the_papers_formula():
    pe = L.sine_position_encoding(50, 16, dtype=np.float64)
    t, i = 7, 3  # an odd channel: cos(t / 10000^(2 * 1 / 16))
    assert pe[t, i] == pytest.approx(np.cos(t / 10000 ** (2 / 16)), abs=1e-15)
    assert pe[t, 2] == pytest.approx(np.sin(t / 10000 ** (2 / 16)), abs=1e-15)
    np.testing.assert_array_equal(pe[0, ::2], 0)
    np.testing.assert_array_equal(pe[0, 1::2], 1)


@pytest.mark.parametrize("make, message", [
    (lambda: L.TransformerBlock(0, 8), "num_heads must be a positive int"),
    (lambda: L.TransformerBlock(2, 8, dropout=-0.1), "dropout must be a number in [0, 1)"),
    (lambda: L.TokenAndPositionEmbedding(5, 0, 4), "sequence_length must be a positive int"),
])
def test_bad_arguments_are_one_clear_error(make, message):
    with pytest.raises(ValueError) as info:
        make()
    assert message in str(info.value)


def test_a_block_narrower_than_its_heads_is_refused():
    with sn.use_backend("numpy"), pytest.raises(ValueError, match="smaller than num_heads"):
        L.TransformerBlock(4, 8)(np.ones((1, 2, 3)))


def test_the_new_layers_export_and_load_with_the_same_outputs(tmp_path):
    """save_model / load_model of a Transformer LM and of a batch-normalized MLP (moving averages included)."""
    from scratchnet.export import load_model, save_model

    rng = np.random.default_rng(4)
    with sn.use_backend("numpy"):
        lm = sn.Sequential([L.TokenAndPositionEmbedding(20, 16, 8), L.TransformerBlock(2, 32),
                            L.LayerNormalization(), L.Dense(20)], dtype="float64")
        mlp = sn.Sequential([L.Dense(6), L.BatchNormalization(), L.Activation("gelu"), L.Dense(3)], dtype="float64")
        for model, x in ((lm, rng.integers(0, 20, size=(2, 10))), (mlp, rng.standard_normal((5, 4)))):
            model(x)
            for p in model.parameters():
                p.value[...] += 0.1 * rng.standard_normal(p.shape)
            path = str(tmp_path / f"{model.name}.snm")
            save_model(model, path)
            np.testing.assert_array_equal(sn.to_numpy(load_model(path)(x)), sn.to_numpy(model(x)))
