"""AveragePooling2D and global pooling over NHWC images, as Keras's layers of those names.

``MaxPool2D`` sits beside ``Conv2D`` in ``conv.py``; the ops are all in
``scratchnet/ops/pooling.py``.
"""
from __future__ import annotations

from .. import ops
from .._checks import pair
from ..serialization import register
from ._args import op_padding, padding_name
from .base import Layer


@register
class AveragePooling2D(Layer):
    """Average pooling over NHWC inputs (``tf.nn.avg_pool2d``); ``strides`` defaults to ``pool_size``.

    Under ``padding="same"`` the padded cells are not counted in a window's mean, as in Keras.
    ``pool_size`` defaults to 2 as in tf.keras 2 and ``MaxPool2D`` (Keras 3 requires it).
    """

    def __init__(self, pool_size=2, strides=None, padding="valid", name=None, dtype=None):
        super().__init__(name, dtype)
        self.pool_size = pair("AveragePooling2D", "pool_size", pool_size)
        self.strides = self.pool_size if strides is None else pair("AveragePooling2D", "strides", strides)
        self.padding = padding_name("AveragePooling2D", padding)

    def call(self, x, training=False):
        return ops.avg_pool2d(x, self.pool_size, self.strides, op_padding(self.padding))

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size, "strides": self.strides, "padding": self.padding}


class _GlobalPooling2D(Layer):
    """One window over each image's whole height and width: ``(N, H, W, C)`` -> ``(N, C)``,
    or ``(N, 1, 1, C)`` when ``keepdims``."""

    def __init__(self, keepdims=False, name=None, dtype=None):
        super().__init__(name, dtype)
        if not isinstance(keepdims, bool):
            raise ValueError(f"{type(self).__name__}: keepdims must be True or False, got {keepdims!r}")
        self.keepdims = keepdims

    def get_config(self):
        return {**super().get_config(), "keepdims": self.keepdims}


@register
class GlobalAveragePooling2D(_GlobalPooling2D):
    """The mean of each channel over the image (:func:`scratchnet.ops.global_avg_pool2d`)."""

    def call(self, x, training=False):
        return ops.global_avg_pool2d(x, self.keepdims)


@register
class GlobalMaxPooling2D(_GlobalPooling2D):
    """The max of each channel over the image (:func:`scratchnet.ops.global_max_pool2d`).

    At a tie the gradient goes whole to the first maximum (max_pool2d's rule);
    Keras's layer splits it between the tied cells. Away from ties they agree.
    """

    def call(self, x, training=False):
        return ops.global_max_pool2d(x, self.keepdims)


AvgPool2D = AveragePooling2D
GlobalAvgPool2D = GlobalAveragePooling2D
GlobalMaxPool2D = GlobalMaxPooling2D
