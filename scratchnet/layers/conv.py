"""Conv2D and MaxPool2D over NHWC images, as ``tf.nn.conv2d`` and ``tf.nn.max_pool2d``."""
from __future__ import annotations

from .. import initializers, ops, regularizers
from .._checks import pair
from ..ops.conv_transpose import check_output_padding
from ..serialization import initializer_config, register
from ._args import activated_with_weights, activation_name, fused_activation, op_padding, padding_name, positive_int
from .base import Layer


@register
class Conv2D(Layer):
    """2-D convolution over NHWC inputs with an HWIO kernel (``tf.nn.conv2d``).

    Parameters
    ----------
    filters : int
        O, the number of output channels.
    kernel_size : int or (kh, kw)
    strides : int or (sh, sw)
    padding : "valid", "same", int, (ph, pw) or ((top, bottom), (left, right))
        Keras's names, or an explicit padding (PyTorch's ``padding=``; Keras
        writes it as a ``ZeroPadding2D`` before a "valid" convolution).
    dilation_rate : int or (dh, dw)
        The kernel's taps ``dh`` rows and ``dw`` columns apart (strides 1 only, as Keras).
    groups : int
        Keras's grouped convolution: the channels and the filters split into ``groups`` groups, each
        group's filters seeing its channels only; the kernel is (kh, kw, C / groups, O)
        (:func:`scratchnet.ops.grouped_conv2d`, one ``conv2d`` per group).
    activation, use_bias, kernel_initializer, bias_initializer, kernel_regularizer : as :class:`Dense`

    Input ``(N, H, W, C)``, output ``(N, OH, OW, O)``.
    """

    def __init__(self, filters, kernel_size, strides=1, padding="valid", activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", kernel_regularizer=None,
                 bias_regularizer=None, dilation_rate=1, groups=1, name=None, dtype=None):
        super().__init__(name, dtype)
        self.filters = positive_int("Conv2D", "filters", filters)
        self.groups = positive_int("Conv2D", "groups", groups)
        if self.filters % self.groups:
            raise ValueError(f"Conv2D: groups={groups} must divide filters={filters}")
        self.kernel_size = pair("Conv2D", "kernel_size", kernel_size)
        self.strides = pair("Conv2D", "strides", strides)
        self.padding = padding_name("Conv2D", padding)
        self.dilation_rate = pair("Conv2D", "dilation_rate", dilation_rate)
        if self.dilation_rate != (1, 1) and self.strides != (1, 1):
            raise ValueError(f"Conv2D: dilation_rate {self.dilation_rate} with strides {self.strides}: a dilated "
                             "convolution takes strides 1 (as Keras's)")
        self.activation = activation_name("Conv2D", activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"Conv2D {self.name!r}: input must have rank 4 [N, H, W, C], got shape {input_shape}")
        if input_shape[-1] % self.groups:
            raise ValueError(f"Conv2D {self.name!r}: groups={self.groups} must divide the input's {input_shape[-1]} "
                             f"channels (input shape {input_shape})")
        self.kernel = self.add_weight(
            "kernel", self._kernel_shape(input_shape[-1]), self.kernel_initializer, regularizer=self.kernel_regularizer
        )
        self.bias = (
            self.add_weight("bias", (self.filters,), self.bias_initializer, regularizer=self.bias_regularizer)
            if self.use_bias
            else None
        )

    def _kernel_shape(self, channels):
        """HWIO: (kh, kw, input channels per group, filters)."""
        return (*self.kernel_size, channels // self.groups, self.filters)

    takes_need_dx = True

    def call(self, x, training=False, need_dx=True):
        if self.groups > 1:
            return self._grouped(x)
        fused = fused_activation(self.activation)  # a ReLU runs inside the conv kernel
        Z, conv_backprop = ops.conv2d(
            x, self.kernel.value, None if self.bias is None else self.bias.value, self.strides, op_padding(self.padding),
            activation=fused, need_dx=need_dx,
            # only when dilated: a student's conv2d swapped in by sn.exercises.use takes the classic arguments
            **({"dilations": self.dilation_rate} if self.dilation_rate != (1, 1) else {}),
        )
        return activated_with_weights(self.activation, Z, conv_backprop, self.kernel, self.bias, fused is not None)

    def _grouped(self, x):
        Z, conv_backprop = ops.grouped_conv2d(x, self.kernel.value, None if self.bias is None else self.bias.value,
                                              self.strides, op_padding(self.padding), self.groups, self.dilation_rate)
        return activated_with_weights(self.activation, Z, conv_backprop, self.kernel, self.bias)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size, "strides": self.strides,
                "padding": self.padding, "dilation_rate": self.dilation_rate, "groups": self.groups,
                "activation": self.activation,
                "use_bias": self.use_bias, "kernel_initializer": initializer_config(self.kernel_initializer),
                "bias_initializer": initializer_config(self.bias_initializer),
                "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": regularizers.serialize(self.bias_regularizer)}


@register
class Conv2DTranspose(Conv2D):
    """Transposed 2-D convolution over NHWC inputs, Keras's ``Conv2DTranspose`` (:func:`scratchnet.ops.conv2d_transpose`).

    :class:`Conv2D`'s arguments without dilation, and Keras's ``output_padding``:

    padding : "valid", "same", int, (ph, pw) or ((top, bottom), (left, right))
        Keras's names: the output is ``H * s`` high under "same", ``(H - 1) * s + max(kh, s)`` under
        "valid". An explicit padding (PyTorch's ``ConvTranspose2d(padding=)``, which Keras does not
        take) is cut off the full ``(H - 1) * s + kh``.
    output_padding : None, int or (ph, pw)
        Extra rows (columns) at the bottom (right), each smaller than the stride: under "same" the
        output is then ``(H - 1) * s + kh % 2 + ph`` high, under "valid" ``(H - 1) * s + kh + ph``.

    Weights, Keras's layout: ``kernel`` (kh, kw, F, C) (output channels before input channels), ``bias`` (F,).
    """

    def __init__(self, filters, kernel_size, strides=1, padding="valid", output_padding=None, activation=None,
                 use_bias=True, kernel_initializer="glorot_uniform", bias_initializer="zeros", kernel_regularizer=None,
                 bias_regularizer=None, name=None, dtype=None):
        padding = padding_name("Conv2DTranspose", padding)
        super().__init__(filters, kernel_size, strides, padding, activation, use_bias, kernel_initializer,
                         bias_initializer, kernel_regularizer, bias_regularizer, name=name, dtype=dtype)
        self.output_padding = check_output_padding("Conv2DTranspose", output_padding, self.strides)

    def _kernel_shape(self, channels):
        """(kh, kw, filters, input channels): the transpose's output channels come first, as in Keras."""
        return (*self.kernel_size, self.filters, channels)

    takes_need_dx = False

    def call(self, x, training=False):
        Z, op_backprop = ops.conv2d_transpose(x, self.kernel.value, None if self.bias is None else self.bias.value,
                                              self.strides, op_padding(self.padding), self.output_padding)
        return activated_with_weights(self.activation, Z, op_backprop, self.kernel, self.bias)

    def get_config(self):
        config = super().get_config()
        del config["dilation_rate"], config["groups"]
        return {**config, "output_padding": self.output_padding}


@register
class MaxPool2D(Layer):
    """Max pooling over NHWC inputs (``tf.nn.max_pool2d``); ``strides`` defaults to ``pool_size``."""

    def __init__(self, pool_size=2, strides=None, padding="valid", name=None, dtype=None):
        super().__init__(name, dtype)
        self.pool_size = pair("MaxPool2D", "pool_size", pool_size)
        self.strides = self.pool_size if strides is None else pair("MaxPool2D", "strides", strides)
        self.padding = padding_name("MaxPool2D", padding)

    def call(self, x, training=False):
        return ops.max_pool2d(x, self.pool_size, self.strides, op_padding(self.padding))

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size, "strides": self.strides, "padding": self.padding}


MaxPooling2D = MaxPool2D
