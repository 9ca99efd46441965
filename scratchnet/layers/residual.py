"""ResidualBlock: ResNet's basic block (He et al. 2015), two 3x3 convolutions with batch norm and a skip connection.

::

    main     = BN(Conv3x3(ReLU(BN(Conv3x3(x, strides)))))
    shortcut = x                                   when the shape is kept
             = BN(Conv1x1(x, strides))             when the block halves the image or changes the channels
    y        = ReLU(main + shortcut)

The backward of the sum is the whole point of the block: ``y = f(x) + x``
gives ``dx = f'(x)^T dy + dy``, so the gradient reaches ``x`` along the
skip connection unchanged, however many blocks lie between ``x`` and the
loss. Without it the gradient of a deep stack is a product of many Jacobians,
which shrinks (or grows) with the depth.
"""
from __future__ import annotations

from .. import ops
from ..serialization import register
from ._args import positive_int
from .base import Layer
from .conv import Conv2D
from .normalization import BatchNormalization


@register
class ResidualBlock(Layer):
    """ResNet's basic block (v1), NHWC: ``y = ReLU(BN(Conv(ReLU(BN(Conv(x))))) + shortcut(x))``.

    Parameters
    ----------
    filters : int
        Channels of the output.
    strides : int
        1 keeps the image size; 2 halves it (the first convolution and the
        shortcut's 1x1 convolution stride).
    momentum, epsilon : float
        The batch norms' (Keras's defaults).

    The shortcut is the identity when the input already has ``filters``
    channels and ``strides`` is 1, else a 1x1 convolution with batch norm.
    Sublayers (and weight names): ``conv1``, ``bn1``, ``conv2``, ``bn2``, and
    ``shortcut_conv``, ``shortcut_bn`` when there is a projection.
    """

    def __init__(self, filters, strides=1, momentum=0.99, epsilon=1e-3, name=None, dtype=None):
        super().__init__(name, dtype)
        self.filters = positive_int("ResidualBlock", "filters", filters)
        if strides not in (1, 2):
            raise ValueError(f"ResidualBlock: strides must be 1 or 2, got {strides!r}")
        self.strides = strides
        self.momentum, self.epsilon = float(momentum), float(epsilon)

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"ResidualBlock {self.name!r}: input must be [N, H, W, C], got shape {input_shape}")
        F, dtype = self.filters, self.dtype
        bn = {"momentum": self.momentum, "epsilon": self.epsilon, "dtype": dtype}
        self.conv1 = self._add_part(Conv2D(F, 3, strides=self.strides, padding="same", use_bias=False, name="conv1",
                                      dtype=dtype))
        self.bn1 = self._add_part(BatchNormalization(name="bn1", **bn))
        self.conv2 = self._add_part(Conv2D(F, 3, padding="same", use_bias=False, name="conv2", dtype=dtype))
        self.bn2 = self._add_part(BatchNormalization(name="bn2", **bn))
        self.projection = input_shape[-1] != F or self.strides != 1
        if self.projection:
            self.shortcut_conv = self._add_part(Conv2D(F, 1, strides=self.strides, padding="same", use_bias=False,
                                                  name="shortcut_conv", dtype=dtype))
            self.shortcut_bn = self._add_part(BatchNormalization(name="shortcut_bn", **bn))

    def _chain(self, layers, x, training):
        backprops = []
        for layer in layers:
            x, backprop = layer.forward(x, training)
            backprops.append(backprop)

        def backprop(dy):
            for b in reversed(backprops):
                dy = b(dy)
            return dy

        return x, backprop

    def call(self, x, training=False):
        h, conv1_backprop = self._chain([self.conv1, self.bn1], x, training)
        a, relu1_backprop = ops.relu(h)
        main, main_backprop = self._chain([self.conv2, self.bn2], a, training)
        if self.projection:
            skip, skip_backprop = self._chain([self.shortcut_conv, self.shortcut_bn], x, training)
        else:
            skip, skip_backprop = x, (lambda dy: dy)
        y, relu2_backprop = ops.relu(main + skip)

        def backprop(dy):
            ds = relu2_backprop(dy)  # the sum sends the same gradient down both branches
            dx_main = conv1_backprop(relu1_backprop(main_backprop(ds)))
            return dx_main + skip_backprop(ds)

        return y, backprop

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "strides": self.strides, "momentum": self.momentum,
                "epsilon": self.epsilon}
