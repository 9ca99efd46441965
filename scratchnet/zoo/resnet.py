"""``resnet``: a small residual network with batch normalization, beside lesson 2's LeNet (lesson 7).

The same 28x28 images (MNIST, or Fashion-MNIST with ``--fashion``), batches of
100, and the same flat ``(N, 784)`` input as the other MNIST models. What is
new is the network: a 3x3 stem, three :class:`~scratchnet.layers.ResidualBlock`
stages (16, 32 and 64 channels, the last two halving the image), global
average pooling instead of flattening, and batch normalization after every
convolution, trained with SGD and momentum.
"""
from __future__ import annotations

from .. import layers, optimizers
from ..model import Sequential
from .mnist import MnistRecipe


class ResNet(MnistRecipe):
    """A 6-block ResNet (He et al.'s basic blocks), 16-32-64 channels, batch norm, global average pooling.

    SGD, momentum 0.9, learning rate 0.05, batch 100, 10 epochs; no weight
    decay, no moving average of the weights (batch norm keeps its own moving
    averages of the activations' statistics, used at inference). The batch
    norms' momentum is 0.9 (PyTorch's default; Keras's is 0.99), so that the
    moving averages follow the statistics of a fast-changing network within
    tens of steps, not hundreds.
    """

    name = "resnet"
    hparams = dict(
        widths=(16, 32, 64), blocks_per_stage=2, bn_momentum=0.9,
        optimizer="sgd", learning_rate=0.05, momentum=0.9,
        batch_size=100, epochs=10, steps=None,
    )

    def make_model(self, hp, dtype):
        stack = [
            layers.Reshape((28, 28, 1)),
            layers.Conv2D(hp["widths"][0], 3, padding="same", use_bias=False, name="stem_conv"),
            layers.BatchNormalization(momentum=hp["bn_momentum"], name="stem_bn"),
            layers.Activation("relu", name="stem_relu"),
        ]
        for stage, width in enumerate(hp["widths"]):
            for block in range(hp["blocks_per_stage"]):
                strides = 2 if stage > 0 and block == 0 else 1
                stack.append(layers.ResidualBlock(width, strides=strides, momentum=hp["bn_momentum"],
                                                  name=f"stage{stage + 1}_block{block + 1}"))
        stack += [layers.GlobalAveragePooling2D(name="pool"), layers.Dense(10, name="logits")]
        model = Sequential(stack, name="resnet", dtype=dtype)
        model.build((None, 784))
        return model

    def make_optimizer(self, hp):
        return optimizers.SGD(hp["learning_rate"], momentum=hp["momentum"])
