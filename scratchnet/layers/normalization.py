"""LayerNormalization and BatchNormalization: Keras's layers on :mod:`scratchnet.ops.normalization`."""
from __future__ import annotations

import numbers

import numpy as np

from .. import initializers, ops, regularizers
from ..backend import get_backend
from .._checks import check_fraction
from ..serialization import initializer_config, register
from .base import Layer


def _check_axis(layer, axis):
    if axis != -1:
        raise ValueError(f"{layer}: axis must be -1 (channels last; the only layout scratchnet's layers use), "
                         f"got {axis!r}")


def _check_epsilon(layer, epsilon):
    if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real) or not epsilon > 0:
        raise ValueError(f"{layer}: epsilon must be a positive number, got {epsilon!r}")
    return float(epsilon)


class _Normalization(Layer):
    """What both share: ``gamma`` (when ``scale``) and ``beta`` (when ``center``) over the last axis."""

    def __init__(self, axis, epsilon, center, scale, beta_initializer, gamma_initializer, beta_regularizer,
                 gamma_regularizer, name, dtype):
        super().__init__(name, dtype)
        kind = type(self).__name__
        _check_axis(kind, axis)
        self.axis = axis
        self.epsilon = _check_epsilon(kind, epsilon)
        self.center, self.scale = bool(center), bool(scale)
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.gamma_regularizer = regularizers.get(gamma_regularizer)

    def _build_affine(self, input_shape):
        C = input_shape[-1]
        self.gamma = (self.add_weight("gamma", (C,), self.gamma_initializer, regularizer=self.gamma_regularizer)
                      if self.scale else None)
        self.beta = (self.add_weight("beta", (C,), self.beta_initializer, regularizer=self.beta_regularizer)
                     if self.center else None)
        return C

    def _affine(self):
        return (None if self.gamma is None else self.gamma.value), (None if self.beta is None else self.beta.value)

    def _accumulate(self, dgamma, dbeta):
        if self.gamma is not None:
            self.gamma.accumulate(dgamma, fresh=True)
        if self.beta is not None:
            self.beta.accumulate(dbeta, fresh=True)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "epsilon": self.epsilon, "center": self.center,
                "scale": self.scale, "beta_initializer": initializer_config(self.beta_initializer),
                "gamma_initializer": initializer_config(self.gamma_initializer),
                "beta_regularizer": regularizers.serialize(self.beta_regularizer),
                "gamma_regularizer": regularizers.serialize(self.gamma_regularizer)}


@register
class LayerNormalization(_Normalization):
    """``y = gamma * (x - mean) / sqrt(var + epsilon) + beta``, statistics over each example's last axis.

    Keras's arguments and defaults (``epsilon=1e-3``; PyTorch's ``LayerNorm``
    uses 1e-5). Weights, in Keras's order: ``gamma`` (C,), ``beta`` (C,). The
    same in training and at inference. A mask passes through (each position is normalized on its own).
    """

    supports_masking = True  # Keras's

    def __init__(self, axis=-1, epsilon=1e-3, center=True, scale=True, beta_initializer="zeros",
                 gamma_initializer="ones", beta_regularizer=None, gamma_regularizer=None, name=None, dtype=None):
        super().__init__(axis, epsilon, center, scale, beta_initializer, gamma_initializer, beta_regularizer,
                         gamma_regularizer, name, dtype)

    def build(self, input_shape):
        self._build_affine(input_shape)

    def call(self, x, training=False):
        gamma, beta = self._affine()
        y, op_backprop = ops.layer_norm(x, gamma, beta, self.epsilon)

        def backprop(dy):
            dx, dgamma, dbeta = op_backprop(dy)
            self._accumulate(dgamma, dbeta)
            return dx

        return y, backprop


@register
class BatchNormalization(_Normalization):
    """Batch normalization with Keras's arguments, defaults and weights.

    In training (``training=True``: ``fit``, ``train_on_batch``) each channel
    is normalized with the batch's mean and (biased) variance, over every
    axis but the last, and the moving averages follow them::

        moving_mean     = momentum * moving_mean     + (1 - momentum) * batch_mean
        moving_variance = momentum * moving_variance + (1 - momentum) * batch_variance

    At inference (``evaluate``, ``predict``, a plain call) it uses the moving
    averages: ``y = gamma * (x - moving_mean) / sqrt(moving_variance + epsilon) + beta``.

    Weights, in Keras's order: ``gamma``, ``beta`` (trainable), ``moving_mean``,
    ``moving_variance`` (not trainable; saved in checkpoints).

    Under data parallelism (:class:`scratchnet.distributed.DataParallel`)
    each rank normalizes its rows with its own shard's statistics, as Keras
    and PyTorch do by default (not a synchronized batch norm), but the moving
    averages follow the *global* batch's mean and variance: ``DataParallel``
    sets :attr:`statistics_reducer` for the step, which combines the shards'
    ``(mean, variance)``, weighted by their rows, into the global batch's. So
    the moving averages are the same on every rank after each step, and the
    same as one process on the whole batch would keep.
    """

    #: ``(mean, variance) -> (mean, variance)`` of the global batch, set by DataParallel during its step; None
    #: otherwise (the batch's own statistics update the moving averages).
    statistics_reducer = None

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True, beta_initializer="zeros",
                 gamma_initializer="ones", moving_mean_initializer="zeros", moving_variance_initializer="ones",
                 beta_regularizer=None, gamma_regularizer=None, name=None, dtype=None):
        super().__init__(axis, epsilon, center, scale, beta_initializer, gamma_initializer, beta_regularizer,
                         gamma_regularizer, name, dtype)
        check_fraction("BatchNormalization", "momentum", momentum)
        self.momentum = float(momentum)
        self.moving_mean_initializer = initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = initializers.get(moving_variance_initializer)

    def build(self, input_shape):
        if len(input_shape) < 2:
            raise ValueError(f"BatchNormalization {self.name!r}: input must have rank >= 2 [N, ..., C], got shape "
                             f"{input_shape}")
        C = self._build_affine(input_shape)
        self.moving_mean = self.add_weight("moving_mean", (C,), self.moving_mean_initializer, trainable=False)
        self.moving_variance = self.add_weight("moving_variance", (C,), self.moving_variance_initializer,
                                               trainable=False)

    #: Keras's: a mask passes through. At inference the moving statistics ignore it, as Keras's do; in training
    #: Keras takes the batch statistics over the unmasked positions only, which this layer does not do: a mask
    #: that hides a position in training is refused (call) rather than counted.
    supports_masking = True
    takes_mask = True

    def call(self, x, training=False, mask=None):
        gamma, beta = self._affine()
        if training and mask is not None and not bool(mask.all()):
            raise ValueError(f"BatchNormalization {self.name!r}: its input has a mask hiding "
                             f"{int(mask.size - mask.sum())} of {mask.size} positions (shape {tuple(mask.shape)}); "
                             f"Keras would take the batch statistics over the unmasked ones, which scratchnet's "
                             f"batch norm does not: use LayerNormalization, or drop the mask before this layer")
        if training:
            (y, mean, variance), op_backprop = ops.batch_norm(x, gamma, beta, self.epsilon)
            if self.statistics_reducer is not None:  # data-parallel: the moving averages follow the global batch
                mean, variance = self.statistics_reducer(mean, variance)
            m = x.dtype.type(self.momentum)
            self.moving_mean.value[...] = m * self.moving_mean.value + (1 - m) * mean
            self.moving_variance.value[...] = m * self.moving_variance.value + (1 - m) * variance
        else:
            y, op_backprop = self._inference(x, gamma, beta)

        def backprop(dy):
            dx, dgamma, dbeta = op_backprop(dy)
            self._accumulate(dgamma, dbeta)
            return dx

        return y, backprop

    def _inference(self, x, gamma, beta):
        """The affine map of the moving averages, per channel, and its backward."""
        xp = get_backend().xp
        s = 1 / xp.sqrt(self.moving_variance.value + x.dtype.type(self.epsilon))
        xhat = (x - self.moving_mean.value) * s
        y = xhat if gamma is None else xhat * gamma
        if beta is not None:
            y = y + beta
        axes = tuple(range(x.ndim - 1))

        def backprop(dy):
            dx = dy * s if gamma is None else dy * (gamma * s)
            dgamma = None if gamma is None else (dy * xhat).sum(axis=axes)
            dbeta = None if beta is None else dy.sum(axis=axes)
            return dx, dgamma, dbeta

        return y, backprop

    def check_weight_value(self, parameter, value):
        """What is wrong with ``value`` (host array) as ``parameter``'s value, or None: a checkpoint restore asks
        before it changes anything. A variance is a finite number >= 0 (a negative one makes the inference
        ``sqrt`` NaN), a mean a finite number."""
        if parameter is self.moving_variance:
            bad = ~np.isfinite(value) | (value < 0)
            what = "a variance must be finite and >= 0"
        elif parameter is self.moving_mean:
            bad = ~np.isfinite(value)
            what = "a mean must be finite"
        else:
            return None
        if not bad.any():
            return None
        k = int(np.flatnonzero(bad)[0])
        return (f"BatchNormalization {self.name!r} {parameter.name.rsplit('/', 1)[-1]} holds {float(value.flat[k])!r} "
                f"at channel {k} ({int(bad.sum())} of {value.size} channels bad): {what}")

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum,
                "moving_mean_initializer": initializer_config(self.moving_mean_initializer),
                "moving_variance_initializer": initializer_config(self.moving_variance_initializer)}
