"""Weight penalties added to the loss, with their gradients.

A regularizer is attached to a parameter (``Dense(..., kernel_regularizer=l2(1e-4))``).
The model collects the penalties into the reported loss
(:meth:`scratchnet.model.Layer.regularization_loss`) and adds their gradients to
the parameters' ``.grad`` (:meth:`scratchnet.model.Layer.regularization_backward`).
"""
from __future__ import annotations

import numbers

from ._config import Configurable
from .backend import get_backend


class Regularizer(Configurable):
    """``penalty = reg(w)`` (a float) and ``reg.gradient(w)`` (an array of w's shape).

    ``reg.add_gradient(w, grad)`` adds the gradient into an existing ``grad``
    in place; a subclass may do that without the temporary ``gradient(w)``.
    """

    def __call__(self, w):
        raise NotImplementedError

    def gradient(self, w):
        raise NotImplementedError

    def add_gradient(self, w, grad):
        """``grad += gradient(w)``, in place."""
        grad += self.gradient(w)


class L1L2(Regularizer):
    """``l1 * sum(|w|) + l2 * sum(w**2)``, Keras's convention.

    TensorFlow 1's ``tf.contrib.layers.l2_regularizer(scale)`` computes
    ``scale * sum(w**2) / 2`` (``tf.nn.l2_loss``) instead: Keras's ``l2(s)``
    equals ``l2_regularizer(2 * s)``, and a tutorial's ``l2_regularizer(s)`` is
    ``l2(s / 2)`` here.
    """

    def __init__(self, l1=0.0, l2=0.0):
        for name, v in (("l1", l1), ("l2", l2)):
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or v < 0:
                raise ValueError(f"L1L2: {name} must be a non-negative number, got {v!r}")
        self.l1, self.l2 = float(l1), float(l2)

    def __call__(self, w):
        total = 0.0
        if self.l1:
            total += self.l1 * float(abs(w).sum())
        if self.l2:
            total += self.l2 * get_backend().sum_of_squares(w)  # sum(w**2) without the temporary w * w
        return total

    def gradient(self, w):
        # d/dw |w| is sign(w), 0 at 0 (as TensorFlow's).
        g = 2 * self.l2 * w
        if self.l1:
            g = g + self.l1 * (w > 0) - self.l1 * (w < 0)
        return g.astype(w.dtype, copy=False)

    def add_gradient(self, w, grad):
        if self.l1:
            return super().add_gradient(w, grad)
        if self.l2:
            get_backend().scaled_add(grad, w, 2 * self.l2)  # grad += 2 l2 w, in one pass

    def get_config(self):
        return {"l1": self.l1, "l2": self.l2}


def l2(scale=0.01):
    """``scale * sum(w**2)``; ``tf.contrib.layers.l2_regularizer(2 * scale)`` in TF 1 terms."""
    return L1L2(l2=scale)


def l1(scale=0.01):
    """``scale * sum(|w|)``."""
    return L1L2(l1=scale)


def get(identifier):
    """``None``, a :class:`Regularizer`, or a config dict ``{"class_name": "L1L2", "config": {...}}``."""
    if identifier is None or isinstance(identifier, Regularizer):
        return identifier
    if isinstance(identifier, dict) and identifier.get("class_name") == "L1L2":
        return L1L2(**identifier.get("config", {}))
    raise ValueError(f"regularizers.get: expected None, a Regularizer or a config dict, got {identifier!r}")


def serialize(reg):
    return None if reg is None else {"class_name": type(reg).__name__, "config": reg.get_config()}
