"""Masking: mark the time steps whose features all equal ``mask_value`` as padding, as Keras's ``Masking``."""
from __future__ import annotations

import numbers

from ..backend import get_backend
from ..serialization import register
from .base import Layer, as_backend_array


@register
class Masking(Layer):
    """``mask[n, t] = any(x[n, t, :] != mask_value)``; the output is ``x`` with the masked steps zeroed.

    As Keras's: the output's mask (:meth:`compute_mask`) is that boolean array
    over every axis but the last, and the output is ``x * mask[..., None]``, so
    ``backprop(dy) = dy * mask[..., None]``. Layers after it that take masks
    (LSTM, GRU, SimpleRNN, Bidirectional, MultiHeadAttention, the losses and
    metrics) skip the masked steps.

    Parameters
    ----------
    mask_value : float
        The value of every feature of a padded step (default 0.0).
    """

    supports_masking = True

    def __init__(self, mask_value=0.0, name=None, dtype=None):
        super().__init__(name, dtype)
        if isinstance(mask_value, bool) or not isinstance(mask_value, numbers.Real):
            raise ValueError(f"Masking: mask_value must be a number, got {mask_value!r}")
        self.mask_value = float(mask_value)

    def build(self, input_shape):
        if len(input_shape) < 2:
            raise ValueError(f"Masking {self.name!r}: input must have a feature axis ([N, ..., C]), got shape "
                             f"{input_shape}")

    def _keep(self, x):
        return (x != x.dtype.type(self.mask_value)).any(axis=-1)

    def compute_mask(self, x, mask=None):
        """``any(x != mask_value, axis=-1)`` (the input's own mask is replaced, as in Keras)."""
        return self._keep(as_backend_array(x, self.dtype))

    def call(self, x, training=False):
        keep = self._keep(x)[..., None]
        y = x * keep.astype(x.dtype)

        def backprop(dy):
            return get_backend().xp.where(keep, dy, 0).astype(dy.dtype, copy=False)

        return y, backprop

    def get_config(self):
        return {**super().get_config(), "mask_value": self.mask_value}
