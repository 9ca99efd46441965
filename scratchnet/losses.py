"""Losses as Keras names them: ``value, backprop = loss(y_true, y_pred)``.

``value`` is a Python float (the mean over every leading position);
``backprop(dloss=1.0)`` returns the gradient with respect to ``y_pred``.
``loss.on_device(y_true, y_pred)`` is the same with the value left a 0-d
array of the backend: on a GPU, reading it is a wait for the device, which a
training step makes once for all its numbers (``Model.train_on_shard``).
The cross-entropies with ``from_logits=True`` (the default here, unlike
Keras) run :func:`scratchnet.ops.softmax_cross_entropy`: log-sum-exp, finite
for any finite logits, and the fused ``softmax - onehot`` gradient.
"""
from __future__ import annotations

from . import ops
from ._checks import check_ids, scalar_grad
from ._config import Configurable
from .backend import get_backend

# Keras clips probabilities to [EPSILON, 1 - EPSILON] before taking their log.
EPSILON = 1e-7


class Loss(Configurable):
    """Base class: ``__call__(y_true, y_pred) -> (value, backprop)``, ``value`` a Python float.

    A subclass implements :meth:`on_device` (and gets ``__call__``), or
    ``__call__`` alone (its :meth:`on_device` then returns that float).
    """

    name = "loss"

    def __call__(self, y_true, y_pred):
        if type(self).on_device is Loss.on_device:
            raise NotImplementedError(f"{type(self).__name__} implements neither __call__ nor on_device")
        value, backprop = self.on_device(y_true, y_pred)
        return float(value), backprop

    def on_device(self, y_true, y_pred):
        """``(value, backprop)`` with ``value`` a 0-d array of the backend (or a float): not read yet."""
        return self(y_true, y_pred)


class CategoricalCrossentropy(Loss):
    """Cross-entropy against one-hot (or probability) labels of ``y_pred``'s shape.

    Parameters
    ----------
    from_logits : bool
        ``y_pred`` holds logits (default) or probabilities. Probabilities are
        normalised to sum to 1 and clipped to [1e-7, 1 - 1e-7] first, as in Keras.
    """

    name = "categorical_crossentropy"

    def __init__(self, from_logits=True):
        self.from_logits = bool(from_logits)

    def on_device(self, y_true, y_pred):
        op = type(self).__name__
        if tuple(y_true.shape) != tuple(y_pred.shape):
            raise ValueError(
                f"{op}: y_true must have y_pred's shape {tuple(y_pred.shape)}, got {tuple(y_true.shape)}"
            )
        labels = y_true.astype(y_pred.dtype, copy=False)
        if self.from_logits:
            return ops.softmax_cross_entropy(y_pred, labels)
        return _crossentropy_from_probabilities(op, labels, y_pred)

    def get_config(self):
        return {"from_logits": self.from_logits}


class SparseCategoricalCrossentropy(CategoricalCrossentropy):
    """Cross-entropy against integer class ids of shape ``y_pred.shape[:-1]``.

    A trailing axis of size 1 on the ids (``(N, 1)``, Keras's habit) is dropped.
    """

    name = "sparse_categorical_crossentropy"

    def on_device(self, y_true, y_pred):
        op = type(self).__name__
        xp = get_backend().xp
        ids = y_true
        if ids.ndim == y_pred.ndim and ids.shape[-1] == 1:
            ids = ids.reshape(ids.shape[:-1])
        if tuple(ids.shape) != tuple(y_pred.shape[:-1]):
            raise ValueError(
                f"{op}: y_true must hold one class id per row of y_pred, shape {tuple(y_pred.shape[:-1])}; "
                f"got {tuple(y_true.shape)} (y_pred: {tuple(y_pred.shape)})"
            )
        if ids.dtype.kind == "f":  # float labels (Keras takes them): 1.0 is class 1; 1.7 is refused, not truncated
            K = y_pred.shape[-1]
            ids = check_ids(op, get_backend(), "y_true", ids, K, f"y_pred has {K} classes", floats=True)
        if self.from_logits:
            return ops.softmax_cross_entropy(y_pred, ids)
        K = y_pred.shape[-1]
        onehot = (ids[..., None] == xp.arange(K)).astype(y_pred.dtype)
        return _crossentropy_from_probabilities(op, onehot, y_pred)


def _crossentropy_from_probabilities(op, labels, P):
    """Mean of ``-sum(labels * log(clip(P / sum(P))))`` and its gradient with respect to ``P``."""
    xp = get_backend().xp
    S = P.sum(axis=-1, keepdims=True)
    Q = P / S
    inside = (Q > EPSILON) & (Q < 1 - EPSILON)
    Qc = xp.clip(Q, EPSILON, 1 - EPSILON)
    M = P.size // P.shape[-1]
    loss = -(labels * xp.log(Qc)).sum() / M

    def backprop(dloss=1.0):
        # dL/dQ = -labels / Q where unclipped; Q = P / S gives dL/dP_j = (g_j - sum_k g_k Q_k) / S.
        g = xp.where(inside, -labels / Qc, 0) * (scalar_grad(op, get_backend(), dloss) / M)
        return ((g - (g * Q).sum(axis=-1, keepdims=True)) / S).astype(P.dtype, copy=False)

    return loss, backprop


class MeanSquaredError(Loss):
    """``mean((y_pred - y_true) ** 2)`` over every element."""

    name = "mean_squared_error"

    def on_device(self, y_true, y_pred):
        if tuple(y_true.shape) != tuple(y_pred.shape):
            raise ValueError(
                f"MeanSquaredError: y_true must have y_pred's shape {tuple(y_pred.shape)}, got {tuple(y_true.shape)}"
            )
        D = y_pred - y_true.astype(y_pred.dtype, copy=False)
        loss = (D * D).mean()

        def backprop(dloss=1.0):
            return D * (2 * scalar_grad("MeanSquaredError", get_backend(), dloss) / D.size)

        return loss, backprop


_BY_NAME = {
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy,
    "mean_squared_error": MeanSquaredError,
    "mse": MeanSquaredError,
}


def get(identifier):
    """A loss from an instance, a callable ``(y_true, y_pred) -> (value, backprop)``, or a name.

    Names give the class defaults: the cross-entropies take LOGITS
    (``from_logits=True``), unlike Keras's string losses.
    """
    if isinstance(identifier, str):
        cls = _BY_NAME.get(identifier.lower())
        if cls is None:
            raise ValueError(f"losses.get: unknown loss {identifier!r}; choose one of {sorted(_BY_NAME)}")
        return cls()
    if callable(identifier):
        return identifier
    raise ValueError(f"losses.get: expected a loss, a callable or a name, got {identifier!r}")
