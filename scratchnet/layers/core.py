"""Dense, Activation, LogSoftmax, Dropout, Flatten and Reshape: Keras's core layers."""
from __future__ import annotations

import math

import numpy

from .. import initializers, ops, regularizers
from .._checks import check_fraction
from ..distributed.shard import Shard
from ..serialization import initializer_config, register
from ._args import activate, activated_with_weights, activation_name, fused_activation, positive_int
from .base import Layer


@register
class Dense(Layer):
    """``y = activation(x @ kernel + bias)`` on the last axis of ``x``.

    Parameters
    ----------
    units : int
        K, the output size.
    activation : {None, "linear", "relu", "sigmoid", "tanh", "softmax", "log_softmax"}
    use_bias : bool
    kernel_initializer, bias_initializer : name or callable
    kernel_regularizer, bias_regularizer : Regularizer, optional

    Input ``(N, ..., C)``, output ``(N, ..., K)``: leading axes are flattened
    for the GEMM, as Keras does for a sequence fed to a Dense.
    """

    supports_masking = True  # Keras's: the mask passes through

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None, name=None, dtype=None):
        super().__init__(name, dtype)
        self.units = positive_int("Dense", "units", units)
        self.activation = activation_name("Dense", activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)

    def build(self, input_shape):
        if len(input_shape) < 2:
            raise ValueError(f"Dense {self.name!r}: input must have rank >= 2 [N, ..., C], got shape {input_shape}")
        C = input_shape[-1]
        self.kernel = self.add_weight("kernel", (C, self.units), self.kernel_initializer, regularizer=self.kernel_regularizer)
        self.bias = (
            self.add_weight("bias", (self.units,), self.bias_initializer, regularizer=self.bias_regularizer)
            if self.use_bias
            else None
        )

    takes_need_dx = True

    def call(self, x, training=False, need_dx=True):
        lead = tuple(x.shape[:-1])
        X = x.reshape(-1, x.shape[-1])
        fused = fused_activation(self.activation)  # a ReLU runs inside the dense kernel
        Z, dense_backprop = ops.dense(X, self.kernel.value, None if self.bias is None else self.bias.value,
                                      activation=fused, need_dx=need_dx)
        Y, flat_backprop = activated_with_weights(self.activation, Z, dense_backprop, self.kernel, self.bias,
                                                  fused is not None)

        def backprop(dY):
            dX = flat_backprop(dY.reshape(Y.shape))
            return None if dX is None else dX.reshape(x.shape)

        return Y.reshape(lead + (self.units,)), backprop

    def get_config(self):
        return {**super().get_config(), "units": self.units, "activation": self.activation, "use_bias": self.use_bias,
                "kernel_initializer": initializer_config(self.kernel_initializer),
                "bias_initializer": initializer_config(self.bias_initializer),
                "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": regularizers.serialize(self.bias_regularizer)}


@register
class Activation(Layer):
    """An activation as a layer: ``Activation("relu")``."""

    supports_masking = True  # Keras's: the mask passes through

    def __init__(self, activation, name=None, dtype=None):
        super().__init__(name, dtype)
        self.activation = activation_name("Activation", activation)

    def call(self, x, training=False):
        return activate(self.activation, x)

    def get_config(self):
        return {**super().get_config(), "activation": self.activation}


@register
class LogSoftmax(Layer):
    """``y = log softmax(x)`` along ``axis``: :func:`scratchnet.ops.log_softmax` as a layer.

    Keras has no LogSoftmax layer; ``Activation("log_softmax")`` is its
    equivalent for ``axis=-1``, and ``to_keras`` writes this layer as that.
    """

    supports_masking = True  # Keras's: the mask passes through

    def __init__(self, axis=-1, name=None, dtype=None):
        super().__init__(name, dtype)
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise ValueError(f"LogSoftmax: axis must be an int, got {axis!r}")
        self.axis = axis

    def call(self, x, training=False):
        return ops.log_softmax(x, axis=self.axis)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


@register
class Dropout(Layer):
    """Inverted dropout in training mode; the identity in inference mode.

    ``seed`` seeds a layer-private generator (each call draws a new mask from
    it); without one, masks come from ``scratchnet.random``. Under data
    parallelism the step runs the forward pass with ``training=shard``, a
    :class:`scratchnet.distributed.Shard` (which rows of the global batch
    this rank holds): the mask is drawn for the whole global batch, as one
    process would draw it, and this rank keeps its rows of it
    (:func:`scratchnet.ops.dropout`'s ``global_shape`` and ``offset``), so
    the masks do not depend on the number of ranks.
    """

    supports_masking = True  # Keras's: the mask passes through

    def __init__(self, rate, seed=None, name=None, dtype=None):
        super().__init__(name, dtype)
        check_fraction("Dropout", "rate", rate)
        self.rate = float(rate)
        self.seed = seed
        self._rng = None if seed is None else numpy.random.default_rng(seed)

    def call(self, x, training=False):
        if not training or self.rate == 0:
            return x, lambda dY: dY
        seed = None if self._rng is None else int(self._rng.integers(2**31))
        if isinstance(training, Shard):  # these rows of a global batch
            return ops.dropout(x, self.rate, seed, global_shape=training.global_shape(x), offset=training.start)
        return ops.dropout(x, self.rate, seed)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@register
class Flatten(Layer):
    """``(N, ...)`` -> ``(N, prod(...))`` in row-major (NHWC) order, as Keras."""

    def call(self, x, training=False):
        shape = x.shape
        return x.reshape(shape[0], -1), lambda dY: dY.reshape(shape)


@register
class Reshape(Layer):
    """``(N, ...)`` -> ``(N,) + target_shape``; one entry of ``target_shape`` may be -1."""

    def __init__(self, target_shape, name=None, dtype=None):
        super().__init__(name, dtype)
        self.target_shape = tuple(int(s) for s in target_shape)
        if sum(s == -1 for s in self.target_shape) > 1 or any(s < -1 or s == 0 for s in self.target_shape):
            raise ValueError(f"Reshape: target_shape must hold positive sizes and at most one -1, got {target_shape!r}")

    def call(self, x, training=False):
        shape = x.shape
        size = math.prod(shape[1:])
        known = math.prod(s for s in self.target_shape if s != -1)
        if (-1 in self.target_shape and size % known) or (-1 not in self.target_shape and known != size):
            raise ValueError(
                f"Reshape {self.name!r}: cannot reshape input {tuple(shape)} ({size} values per example) "
                f"to {self.target_shape}"
            )
        return x.reshape((shape[0],) + self.target_shape), lambda dY: dY.reshape(shape)

    def get_config(self):
        return {**super().get_config(), "target_shape": self.target_shape}
