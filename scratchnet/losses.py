"""Losses as Keras names them: ``value, backprop = loss(y_true, y_pred)``.

``value`` is a Python float (the mean over every leading position);
``backprop(dloss=1.0)`` returns the gradient with respect to ``y_pred``.
``loss(y_true, y_pred, mask=m)`` takes Keras's mask of ``y_pred`` (a boolean
array over the positions, ``y_pred.shape[:-1]``): a position where it is False
counts for nothing, neither in the sum nor in the mean's divisor
(``sum(mask * loss) / sum(mask)``, 0 when nothing is left, as Keras's
``divide_no_nan``), and its gradient is 0.
``loss.on_device(y_true, y_pred)`` is the same with the value left a 0-d
array of the backend: on a GPU, reading it is a wait for the device, which a
training step makes once for all its numbers (``scratchnet.model.step.train_step``).
The cross-entropies with ``from_logits=True`` (the default here, unlike
Keras) run :func:`scratchnet.ops.softmax_cross_entropy`: log-sum-exp, finite
for any finite logits, and the fused ``softmax - onehot`` gradient.

:class:`SparseCategoricalCrossentropy` also takes PyTorch's options:
``ignore_index``, ``class_weight`` (PyTorch's ``weight=``) and ``reduction``.
"""
from __future__ import annotations

import functools
import inspect
import numbers

import numpy

from . import ops
from ._checks import check_ids, scalar_grad
from ._config import Configurable
from .backend import get_backend, to_numpy

# Keras clips probabilities to [EPSILON, 1 - EPSILON] before taking their log.
EPSILON = 1e-7


class Loss(Configurable):
    """Base class: ``__call__(y_true, y_pred) -> (value, backprop)``, ``value`` a Python float.

    A subclass implements :meth:`on_device` (and gets ``__call__``), or
    ``__call__`` alone (its :meth:`on_device` then returns that float).
    """

    name = "loss"

    def __call__(self, y_true, y_pred, mask=None):
        if type(self).on_device is Loss.on_device:
            raise NotImplementedError(f"{type(self).__name__} implements neither __call__ nor on_device")
        value, backprop = self.on_device(y_true, y_pred, mask=mask)
        return float(value), backprop

    def on_device(self, y_true, y_pred, mask=None):
        """``(value, backprop)`` with ``value`` a 0-d array of the backend (or a float): not read yet."""
        return with_mask(self, mask)(y_true, y_pred)


def with_mask(fn, mask, name=None):
    """``fn`` (a loss or a metric) called with ``mask=mask``; ``fn`` itself when there is no mask.

    A function that takes no ``mask`` cannot honour one: a ValueError says so
    rather than counting the padded positions.
    """
    if mask is None:
        return fn
    try:
        takes = "mask" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        takes = False
    if not takes:
        what = name or getattr(fn, "__name__", type(fn).__name__)
        raise ValueError(f"{what}: the model's output has a mask (from Embedding(mask_zero=True) or Masking) but "
                         f"this loss or metric takes no mask= argument; give it one (positions where the mask is "
                         f"False must count for nothing), or remove the mask")
    return functools.partial(fn, mask=mask)


def _positions_mask(op, be, mask, shape):
    """``mask`` as a boolean backend array of the per-position losses' ``shape``, or None."""
    if mask is None:
        return None
    mask = be.native(op, "mask", mask)
    if mask.dtype != numpy.bool_:
        raise ValueError(f"{op}: mask must be boolean (False: the position counts for nothing), got {mask.dtype}")
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{op}: mask must have the shape of the positions {tuple(shape)} (y_pred without its last "
                         f"axis), got {tuple(mask.shape)}")
    return mask


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

    def on_device(self, y_true, y_pred, mask=None):
        op = type(self).__name__
        if tuple(y_true.shape) != tuple(y_pred.shape):
            raise ValueError(
                f"{op}: y_true must have y_pred's shape {tuple(y_pred.shape)}, got {tuple(y_true.shape)}"
            )
        labels = y_true.astype(y_pred.dtype, copy=False)
        if mask is not None:  # per-position losses, then the masked mean
            be = get_backend()
            mask = _positions_mask(op, be, mask, y_pred.shape[:-1])
            if self.from_logits:
                log_p, log_softmax_backprop = ops.log_softmax(y_pred)
                losses = -(labels * log_p).sum(axis=-1)

                def rows_backprop(g):
                    return log_softmax_backprop(labels * -g[..., None])
            else:
                losses, rows_backprop = _crossentropy_rows_from_probabilities(op, labels, y_pred)
            w = mask.astype(y_pred.dtype)
            return _reduce(op, be, losses * w, w, "mean", rows_backprop)
        if self.from_logits:
            return ops.softmax_cross_entropy(y_pred, labels)
        return _crossentropy_from_probabilities(op, labels, y_pred)

    def get_config(self):
        return {"from_logits": self.from_logits}


class SparseCategoricalCrossentropy(CategoricalCrossentropy):
    """Cross-entropy against integer class ids of shape ``y_pred.shape[:-1]``.

    A trailing axis of size 1 on the ids (``(N, 1)``, Keras's habit) is dropped.
    ``y_pred`` may be ``(N, K)`` or a sequence's ``(N, T, K)`` with ids ``(N, T)``.

    Parameters
    ----------
    from_logits : bool
        As in :class:`CategoricalCrossentropy`.
    ignore_index : int, optional
        PyTorch's: positions whose id equals it count for nothing, neither in
        the sum nor in the mean's divisor (padding, ``-100``). It need not be a
        class id; the other ids must be.
    class_weight : sequence of K non-negative floats, optional
        PyTorch's ``weight=``: position ``m`` counts ``w[m] = class_weight[y[m]]``
        times. The mean is the weighted mean ``sum_m w[m] loss_m / sum_m w[m]``
        over the counted positions, as PyTorch divides.
    reduction : {"mean", "sum", "none"}
        ``"mean"`` (Keras's ``"sum_over_batch_size"`` is the same here): the
        (weighted) mean over counted positions; ``"sum"``: ``sum_m w[m] loss_m``;
        ``"none"``: the array ``w[m] loss_m`` of the ids' shape (0 where ignored),
        whose ``backprop(dloss)`` takes a ``dloss`` of that shape (or a scalar).
        ``__call__`` returns it as a NumPy array; a model's ``compile`` needs a
        scalar loss, so ``"none"`` is for calling the loss yourself.

    When every position is ignored (or has weight 0) the mean is 0 with a zero
    gradient: a batch of padding teaches nothing. PyTorch returns nan (0/0)
    there, which would poison a training step. Without options (and for
    ``"sum"`` without ``ignore_index`` and ``class_weight``) the loss is
    :func:`scratchnet.ops.softmax_cross_entropy`, the fused op; with them it
    is built from :func:`scratchnet.ops.log_softmax` (per-position losses
    times ``w``, then the reduction, and the gradient
    ``(softmax - onehot) * w / divisor``).
    """

    name = "sparse_categorical_crossentropy"

    def __init__(self, from_logits=True, ignore_index=None, class_weight=None, reduction="mean"):
        super().__init__(from_logits)
        op = type(self).__name__
        if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral)):
            raise ValueError(f"{op}: ignore_index must be an int or None, got {ignore_index!r}")
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        self.class_weight = _check_class_weight(op, class_weight)
        if not isinstance(reduction, str) or reduction.lower() not in _REDUCTIONS:
            raise ValueError(f"{op}: reduction must be one of {', '.join(map(repr, _REDUCTIONS))}, got {reduction!r}")
        self.reduction = _REDUCTIONS[reduction.lower()]

    def __call__(self, y_true, y_pred, mask=None):
        if self.reduction != "none":
            return super().__call__(y_true, y_pred, mask=mask)
        value, backprop = self.on_device(y_true, y_pred, mask=mask)
        return to_numpy(value), backprop

    def on_device(self, y_true, y_pred, mask=None):
        op = type(self).__name__
        be = get_backend()
        xp = be.xp
        ids = y_true
        if ids.ndim == y_pred.ndim and ids.shape[-1] == 1:
            ids = ids.reshape(ids.shape[:-1])
        if tuple(ids.shape) != tuple(y_pred.shape[:-1]):
            raise ValueError(
                f"{op}: y_true must hold one class id per row of y_pred, shape {tuple(y_pred.shape[:-1])}; "
                f"got {tuple(y_true.shape)} (y_pred: {tuple(y_pred.shape)})"
            )
        K = y_pred.shape[-1]
        mask = _positions_mask(op, be, mask, ids.shape)
        if self.ignore_index is None and self.class_weight is None and self.reduction != "none" and mask is None:
            value, backprop = self._plain(op, ids, y_pred)
            if self.reduction == "mean":
                return value, backprop
            M = y_pred.size // K  # "sum" = M * mean: the fused op still serves
            return value * M, lambda dloss=1.0: backprop(scalar_grad(op, be, dloss) * M)
        ids = be.native(op, "y_true", ids)
        counted = None if self.ignore_index is None else ids != self.ignore_index
        if mask is not None:  # Keras's mask: the masked positions count as ignored ones (any id there is read as 0)
            counted = mask if counted is None else counted & mask
        if counted is not None:
            ids = xp.where(counted, ids, 0)  # an ignored position's id may be any int (-100): read as class 0
        ids = check_ids(op, be, "y_true", ids, K, f"y_pred has {K} classes", floats=True)
        if self.class_weight is not None:
            if len(self.class_weight) != K:
                raise ValueError(
                    f"{op}: class_weight has {len(self.class_weight)} entries but y_pred has {K} classes "
                    f"(class_weight: ({len(self.class_weight)},), y_pred: {tuple(y_pred.shape)})"
                )
            w = xp.asarray(self.class_weight, dtype=y_pred.dtype)[ids]
            if counted is not None:
                w = w * counted
        else:
            w = (xp.ones(ids.shape, y_pred.dtype) if counted is None else counted.astype(y_pred.dtype))
        onehot = ids[..., None] == xp.arange(K)
        if self.from_logits:
            losses, rows_backprop = _crossentropy_rows_from_logits(ids, onehot, y_pred)
        else:
            losses, rows_backprop = _crossentropy_rows_from_probabilities(op, onehot.astype(y_pred.dtype), y_pred)
        return _reduce(op, be, losses * w, w, self.reduction, rows_backprop)

    def _plain(self, op, ids, y_pred):
        """The mean without options: the fused op for logits."""
        if ids.dtype.kind == "f":  # float labels (Keras takes them): 1.0 is class 1; 1.7 is refused, not truncated
            K = y_pred.shape[-1]
            ids = check_ids(op, get_backend(), "y_true", ids, K, f"y_pred has {K} classes", floats=True)
        if self.from_logits:
            return ops.softmax_cross_entropy(y_pred, ids)
        xp = get_backend().xp
        onehot = (ids[..., None] == xp.arange(y_pred.shape[-1])).astype(y_pred.dtype)
        return _crossentropy_from_probabilities(op, onehot, y_pred)

    def get_config(self):
        return {**super().get_config(), "ignore_index": self.ignore_index,
                "class_weight": None if self.class_weight is None else [float(v) for v in self.class_weight],
                "reduction": self.reduction}


# Keras's "sum_over_batch_size" is the mean over every position: "mean" here.
_REDUCTIONS = {"mean": "mean", "sum_over_batch_size": "mean", "sum": "sum", "none": "none"}


def _check_class_weight(op, class_weight):
    """``class_weight`` as a host float64 vector of finite non-negative weights, or None."""
    if class_weight is None:
        return None
    try:
        w = numpy.asarray(to_numpy(class_weight), dtype=numpy.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{op}: class_weight must be a vector of K non-negative numbers, got {class_weight!r}") from None
    if w.ndim != 1 or w.size == 0:
        raise ValueError(f"{op}: class_weight must be a vector of K non-negative numbers, got shape {w.shape}")
    if not numpy.all(numpy.isfinite(w)) or numpy.any(w < 0):
        raise ValueError(f"{op}: class_weight must hold finite non-negative weights, got {w.tolist()}")
    return w


def _crossentropy_rows_from_logits(ids, onehot, z):
    """Per-position ``-log softmax(z)[y]`` and ``rows_backprop(g) -> g * (softmax(z) - onehot)``."""
    xp = get_backend().xp
    log_p, log_softmax_backprop = ops.log_softmax(z)
    losses = -xp.take_along_axis(log_p, ids[..., None], axis=-1)[..., 0]

    def rows_backprop(g):
        # d(-log p[y]) / d log p = -onehot; log_softmax's backprop adds the softmax term.
        return log_softmax_backprop(onehot * -g[..., None])

    return losses, rows_backprop


def _reduce(op, be, weighted, w, reduction, rows_backprop):
    """``(value, backprop)`` of ``reduction`` over the weighted per-position losses.

    ``backprop(dloss)`` hands ``rows_backprop`` the gradient of each position's
    (unweighted) loss: ``dloss * w`` for "sum", ``dloss * w / sum(w)`` for
    "mean" (0 where ``sum(w) == 0``), ``dloss[m] * w[m]`` for "none".
    """
    xp = be.xp
    if reduction == "none":
        def backprop(dloss=1.0):
            if not isinstance(dloss, numbers.Number):
                dloss = be.native(op, "dloss", dloss)
                if dloss.size != 1 and tuple(dloss.shape) != tuple(w.shape):
                    raise ValueError(f"{op}: dloss of reduction='none' must be a scalar or have the losses' shape "
                                     f"{tuple(w.shape)}, got {tuple(dloss.shape)}")
                dloss = dloss.reshape(w.shape) if dloss.size != 1 else dloss.reshape(())
            return rows_backprop(w * dloss)

        return weighted, backprop
    total = weighted.sum()
    if reduction == "sum":
        return total, lambda dloss=1.0: rows_backprop(w * scalar_grad(op, be, dloss))
    # An empty divisor (every position ignored) gives 0, not 0/0, without reading it on the device.
    count = w.sum()
    divisor = xp.where(count > 0, count, 1)
    return total / divisor, lambda dloss=1.0: rows_backprop(w * (scalar_grad(op, be, dloss) / divisor))


def _crossentropy_rows_from_probabilities(op, labels, P):
    """Per-position ``-sum(labels * log(clip(P / sum(P))))`` and ``rows_backprop(g)`` (``g`` per position)."""
    xp = get_backend().xp
    S = P.sum(axis=-1, keepdims=True)
    Q = P / S
    inside = (Q > EPSILON) & (Q < 1 - EPSILON)
    Qc = xp.clip(Q, EPSILON, 1 - EPSILON)
    losses = -(labels * xp.log(Qc)).sum(axis=-1)

    def rows_backprop(g):
        # dL/dQ = -labels / Q where unclipped; Q = P / S gives dL/dP_j = (g_j - sum_k g_k Q_k) / S.
        dQ = xp.where(inside, -labels / Qc, 0) * g[..., None]
        return ((dQ - (dQ * Q).sum(axis=-1, keepdims=True)) / S).astype(P.dtype, copy=False)

    return losses, rows_backprop


def _crossentropy_from_probabilities(op, labels, P):
    """Mean of ``-sum(labels * log(clip(P / sum(P))))`` and its gradient with respect to ``P``."""
    losses, rows_backprop = _crossentropy_rows_from_probabilities(op, labels, P)
    M = losses.size

    def backprop(dloss=1.0):
        g = get_backend().xp.full(losses.shape, scalar_grad(op, get_backend(), dloss) / M, dtype=P.dtype)
        return rows_backprop(g)

    return losses.sum() / M, backprop


class MeanSquaredError(Loss):
    """``mean((y_pred - y_true) ** 2)`` over every element (with a mask: Keras's, the masked mean over the
    positions of each position's mean over the last axis)."""

    name = "mean_squared_error"

    def on_device(self, y_true, y_pred, mask=None):
        if tuple(y_true.shape) != tuple(y_pred.shape):
            raise ValueError(
                f"MeanSquaredError: y_true must have y_pred's shape {tuple(y_pred.shape)}, got {tuple(y_true.shape)}"
            )
        D = y_pred - y_true.astype(y_pred.dtype, copy=False)
        if mask is not None:  # Keras's: the mean over the last axis per position, then the masked mean of those
            be = get_backend()
            w = _positions_mask("MeanSquaredError", be, mask, y_pred.shape[:-1]).astype(y_pred.dtype)
            C = y_pred.shape[-1]

            def rows_backprop(g):
                return D * (2 * g / C)[..., None]

            return _reduce("MeanSquaredError", be, (D * D).mean(axis=-1) * w, w, "mean", rows_backprop)
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
