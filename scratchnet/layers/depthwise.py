"""``DepthwiseConv2D``: each input channel convolved with its own filters (Keras's, ``tf.nn.depthwise_conv2d``)."""
from __future__ import annotations

from .. import initializers, ops, regularizers
from .._checks import pair
from ..serialization import initializer_config, register
from ._args import activated_with_weights, activation_name, op_padding, padding_name, positive_int
from .base import Layer


@register
class DepthwiseConv2D(Layer):
    """Depthwise 2-D convolution over NHWC inputs (:func:`scratchnet.ops.depthwise_conv2d`).

    Parameters
    ----------
    kernel_size : int or (kh, kw)
    strides : int or (sh, sw)
    padding : "valid", "same", int, (ph, pw) or ((top, bottom), (left, right))
    depth_multiplier : int
        M, the filters per input channel: the output has ``C * M`` channels, channel ``c * M + m``.
    dilation_rate : int or (dh, dw)
        Strides 1 only, as Keras.
    activation, use_bias, depthwise_initializer, bias_initializer, depthwise_regularizer, bias_regularizer :
        As :class:`Conv2D`'s (Keras's names).

    Weights, Keras's layout: ``depthwise_kernel`` (kh, kw, C, M), ``bias`` (C * M,). It runs as a grouped
    convolution of C groups, one ``conv2d`` per channel: exact, not yet fast for many channels.
    """

    def __init__(self, kernel_size, strides=1, padding="valid", depth_multiplier=1, dilation_rate=1,
                 activation=None, use_bias=True, depthwise_initializer="glorot_uniform", bias_initializer="zeros",
                 depthwise_regularizer=None, bias_regularizer=None, name=None, dtype=None):
        super().__init__(name, dtype)
        self.kernel_size = pair("DepthwiseConv2D", "kernel_size", kernel_size)
        self.strides = pair("DepthwiseConv2D", "strides", strides)
        self.padding = padding_name("DepthwiseConv2D", padding)
        self.depth_multiplier = positive_int("DepthwiseConv2D", "depth_multiplier", depth_multiplier)
        self.dilation_rate = pair("DepthwiseConv2D", "dilation_rate", dilation_rate)
        if self.dilation_rate != (1, 1) and self.strides != (1, 1):
            raise ValueError(f"DepthwiseConv2D: dilation_rate {self.dilation_rate} with strides {self.strides}: a "
                             "dilated convolution takes strides 1 (as Keras's)")
        self.activation = activation_name("DepthwiseConv2D", activation)
        self.use_bias = bool(use_bias)
        self.depthwise_initializer = initializers.get(depthwise_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.depthwise_regularizer = regularizers.get(depthwise_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"DepthwiseConv2D {self.name!r}: input must have rank 4 [N, H, W, C], got shape "
                             f"{input_shape}")
        C, M = input_shape[-1], self.depth_multiplier
        self.depthwise_kernel = self.add_weight("depthwise_kernel", (*self.kernel_size, C, M),
                                                self.depthwise_initializer, regularizer=self.depthwise_regularizer)
        self.bias = (self.add_weight("bias", (C * M,), self.bias_initializer, regularizer=self.bias_regularizer)
                     if self.use_bias else None)

    def call(self, x, training=False):
        Z, conv_backprop = ops.depthwise_conv2d(x, self.depthwise_kernel.value,
                                                None if self.bias is None else self.bias.value, self.strides,
                                                op_padding(self.padding), self.dilation_rate)
        return activated_with_weights(self.activation, Z, conv_backprop, self.depthwise_kernel, self.bias)

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size, "strides": self.strides,
                "padding": self.padding, "depth_multiplier": self.depth_multiplier,
                "dilation_rate": self.dilation_rate, "activation": self.activation, "use_bias": self.use_bias,
                "depthwise_initializer": initializer_config(self.depthwise_initializer),
                "bias_initializer": initializer_config(self.bias_initializer),
                "depthwise_regularizer": regularizers.serialize(self.depthwise_regularizer),
                "bias_regularizer": regularizers.serialize(self.bias_regularizer)}
