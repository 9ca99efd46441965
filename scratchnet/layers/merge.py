"""Keras's merging layers: ``Add``, ``Subtract``, ``Multiply``, ``Average``, ``Concatenate``.

Each takes a list of inputs (``sn.layers.Add()([a, b])``), the way a
functional model (:mod:`scratchnet.model.functional`) joins two branches: a
residual block is ``y = sn.layers.Add()([x, f(x)])``. ``backprop(dy)``
returns the list of the inputs' gradients. The math, broadcasting included,
is :mod:`scratchnet.ops.merge`'s.

Masks follow Keras 3: the elementwise layers give no mask when an input has
none, else a position kept by any input; ``Concatenate`` widens each mask to
its input's shape (all True where an input has none), joins them along its
axis, and keeps a position where any of it is kept along the last axis.
"""
from __future__ import annotations

from .. import ops
from ..backend import get_backend
from ..serialization import register
from .base import Layer


class _Merge(Layer):
    """What the merging layers share: a list of inputs, handed to the op; masks combined."""

    supports_masking = True
    op_name = None

    def call(self, x, training=False):
        if not isinstance(x, list):
            raise ValueError(f"{type(self).__name__} {self.name!r}: takes a list of at least 2 inputs, got "
                             f"{type(x).__name__}")
        return getattr(ops, self.op_name)(x)

    def compute_mask(self, x, mask=None):
        if not isinstance(mask, (list, tuple)) or any(m is None for m in mask):
            return None
        out = mask[0]
        for m in mask[1:]:
            out = out | m
        return out


@register
class Add(_Merge):
    """``y = x_1 + x_2 + ...``; each input's gradient is ``dy`` (summed where it was broadcast)."""

    op_name = "add"


@register
class Subtract(_Merge):
    """``y = x_1 - x_2`` (exactly two inputs); the gradients are ``dy`` and ``-dy``."""

    op_name = "subtract"


@register
class Multiply(_Merge):
    """``y = x_1 * x_2 * ...``; input ``i``'s gradient is ``dy`` times the product of the others."""

    op_name = "multiply"


@register
class Average(_Merge):
    """``y = (x_1 + ... + x_k) / k``; each input's gradient is ``dy / k``."""

    op_name = "average"


@register
class Concatenate(_Merge):
    """The inputs joined along ``axis`` (default -1, the features); ``dy`` is cut back into their pieces.

    Parameters
    ----------
    axis : int
        Any axis but the batch axis; negative counts from the end.
    """

    def __init__(self, axis=-1, name=None, dtype=None):
        super().__init__(name, dtype)
        if isinstance(axis, bool) or not isinstance(axis, int) or axis == 0:
            raise ValueError(f"Concatenate: axis must be an int other than 0 (the batch axis), got {axis!r}")
        self.axis = axis

    def call(self, x, training=False):
        if not isinstance(x, list):
            raise ValueError(f"Concatenate {self.name!r}: takes a list of inputs, got {type(x).__name__}")
        if self.axis % x[0].ndim == 0:
            raise ValueError(f"Concatenate {self.name!r}: axis={self.axis} is the batch axis of inputs of rank "
                             f"{x[0].ndim}")
        return ops.concatenate(x, axis=self.axis)

    def compute_mask(self, x, mask=None):
        if not isinstance(mask, (list, tuple)) or all(m is None for m in mask):
            return None
        xp = get_backend().xp
        full = []
        for t, m in zip(x, mask):
            if m is None:
                m = xp.ones(t.shape, dtype=bool)
            elif m.ndim < t.ndim:
                m = xp.broadcast_to(m[..., None], t.shape)
            full.append(m)
        return xp.any(xp.concatenate(full, axis=self.axis), axis=-1)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}
