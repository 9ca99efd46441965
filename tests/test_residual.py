"""ResidualBlock: every gradient by finite differences (identity and projection shortcuts, training and inference
mode), the skip connection's gradient, the model's dtype reaching its parts, and the zoo's ResNet."""
from __future__ import annotations

import numpy as np
import pytest

import scratchnet as sn
from scratchnet.gradcheck import check_layer

L = sn.layers


@pytest.mark.parametrize("filters, strides, training", [(3, 1, False), (5, 2, True), (4, 1, True)],
                         ids=["identity, inference", "projection, stride 2, training", "projection, training"])
def test_residual_block_gradients_by_finite_differences(filters, strides, training):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 4, 3))
    with sn.use_backend("numpy"):
        block = L.ResidualBlock(filters, strides=strides, dtype="float64")
        block.forward(x)
        assert block.projection == (filters != 3 or strides != 1)
        for p in block.parameters():
            if p.trainable:
                p.value[...] += 0.2 * rng.standard_normal(p.shape)
        assert check_layer(block, x, training=training, mode="full").passed


def test_the_skip_connection_passes_the_gradient_unchanged():
    """With the main branch's last batch norm scaled to zero, y = relu(x) for x > 0 and dx = dy there."""
    rng = np.random.default_rng(1)
    x = np.abs(rng.standard_normal((1, 4, 4, 2))) + 0.1
    with sn.use_backend("numpy"):
        block = L.ResidualBlock(2, dtype="float64")
        block.forward(x)
        block.bn2.gamma.value[...] = 0
        block.bn2.beta.value[...] = 0
        y, backprop = block.forward(x)
        dy = rng.standard_normal(y.shape)
        np.testing.assert_allclose(y, x, rtol=1e-12)
        np.testing.assert_allclose(backprop(dy), dy, rtol=1e-12)


def test_a_model_s_dtype_reaches_the_parts_of_its_blocks():
    with sn.use_backend("numpy"):
        model = sn.Sequential([L.Reshape((6, 6, 1)), L.ResidualBlock(2), L.Flatten(), L.Dense(2)], dtype="float64")
        model.build((None, 36))
        assert {p.dtype for p in model.parameters()} == {np.dtype("float64")}
        assert [p.name for p in model.layers[1].parameters()][:2] == ["residual_block/conv1/kernel",
                                                                      "residual_block/bn1/gamma"]


def test_the_zoo_resnet_trains_on_the_sample_and_its_config_round_trips():
    rng = np.random.default_rng(2)
    x = rng.random((16, 784)).astype(np.float32)
    y = rng.integers(0, 10, 16)
    with sn.use_backend("numpy"):
        recipe = sn.zoo.build("resnet", widths=(4, 8, 8), blocks_per_stage=1)
        first = recipe.train_step(x, y)["loss"]
        for _ in range(15):
            last = recipe.train_step(x, y)["loss"]
        assert last < first
        block = recipe.model.layers[4]
        config = block.get_config()
        assert L.deserialize({"class_name": "ResidualBlock", "config": config}).get_config() == config
