"""Elementwise activations and softmax, each returning ``(Y, backprop)``."""
from __future__ import annotations

from .._checks import as_float_arrays, check_grad
from ..backend import get_backend


class ActivationKernels:
    """Reference kernels for the activations (none are hot enough to override yet)."""

    def sigmoid(self, X):
        """``1 / (1 + exp(-X))`` without overflow for large ``|X|``."""
        xp = self.xp
        # exp of a non-positive number never overflows.
        E = xp.exp(-xp.abs(X))
        return xp.where(X >= 0, 1 / (1 + E), E / (1 + E))


def _unary(op, x):
    be = get_backend()
    (x,) = as_float_arrays(op, be, x=x)
    return be, x


def relu(x):
    """``Y = max(X, 0)``; the gradient is 0 at 0, as in TensorFlow.

    ``backprop(dy) -> dx`` with ``dx = dy * (X > 0)``.
    """
    be, X = _unary("relu", x)
    Y = be.xp.maximum(X, 0)

    def backprop(dY):
        dY = check_grad("relu", dY, Y, be)
        return dY * (X > 0)

    return Y, backprop


def sigmoid(x):
    """``Y = 1 / (1 + exp(-X))``; ``dx = dy * Y * (1 - Y)``."""
    be, X = _unary("sigmoid", x)
    Y = be.sigmoid(X)

    def backprop(dY):
        dY = check_grad("sigmoid", dY, Y, be)
        return dY * Y * (1 - Y)

    return Y, backprop


def tanh(x):
    """``Y = tanh(X)``; ``dx = dy * (1 - Y**2)``."""
    be, X = _unary("tanh", x)
    Y = be.xp.tanh(X)

    def backprop(dY):
        dY = check_grad("tanh", dY, Y, be)
        return dY * (1 - Y * Y)

    return Y, backprop


def softmax(x, axis=-1):
    """``Y = exp(X - max X) / sum exp(X - max X)`` along ``axis``.

    ``dx = Y * (dy - sum(dy * Y, axis))``: the Jacobian-vector product of
    softmax without forming the Jacobian.
    """
    be, X = _unary("softmax", x)
    if X.ndim == 0:
        raise ValueError("softmax: x must have rank >= 1, got a scalar")
    if not -X.ndim <= axis < X.ndim:
        raise ValueError(f"softmax: axis {axis} is out of range for x of shape {tuple(X.shape)}")
    xp = be.xp
    E = xp.exp(X - X.max(axis=axis, keepdims=True))
    Y = E / E.sum(axis=axis, keepdims=True)

    def backprop(dY):
        dY = check_grad("softmax", dY, Y, be)
        return Y * (dY - (dY * Y).sum(axis=axis, keepdims=True))

    return Y, backprop
