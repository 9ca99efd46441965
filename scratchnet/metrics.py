"""Metrics: ``metric(y_true, y_pred) -> float`` for one batch.

``Model.evaluate`` and ``Model.fit`` average them over batches, weighted by
batch size. ``metric(y_true, y_pred, mask=m)`` takes Keras's mask of the
output: positions where it is False count for nothing
(``sum(mask * correct) / sum(mask)``, 0 when nothing is left, as Keras's). ``"accuracy"`` picks the sparse or the categorical form from the
labels' shape, as Keras's ``"accuracy"`` does with the matching loss.

:func:`on_device` gives a built-in metric's form that leaves its value a 0-d
array of the backend, for a training step that reads all its numbers from
the device in one transfer (``scratchnet.model.step.train_step``).
"""
from __future__ import annotations

import numpy

from ._checks import check_ids
from .backend import get_backend


def _masked_mean(op, correct, mask):
    """The mean of ``correct`` over the positions where ``mask`` is True (0 where none is)."""
    if mask is None:
        return correct.mean()
    be = get_backend()
    mask = be.native(op, "mask", mask)
    if mask.dtype != numpy.bool_ or tuple(mask.shape) != tuple(correct.shape):
        raise ValueError(f"{op}: mask must be boolean of the positions' shape {tuple(correct.shape)}, got "
                         f"{mask.dtype} {tuple(mask.shape)}")
    count = mask.sum()
    return (correct & mask).sum() / be.xp.where(count > 0, count, 1)


def sparse_categorical_accuracy(y_true, y_pred, mask=None):
    """Fraction of positions whose largest ``y_pred`` entry is the class id in ``y_true``."""
    return float(_sparse_categorical_accuracy(y_true, y_pred, mask))


def _sparse_categorical_accuracy(y_true, y_pred, mask=None):
    ids = y_true
    if ids.ndim == y_pred.ndim and ids.shape[-1] == 1:
        ids = ids.reshape(ids.shape[:-1])
    if tuple(ids.shape) != tuple(y_pred.shape[:-1]):
        raise ValueError(
            f"sparse_categorical_accuracy: y_true must have shape {tuple(y_pred.shape[:-1])}, got {tuple(y_true.shape)}"
        )
    if ids.dtype.kind == "f":  # 1.0 is class 1; 1.7 is a mistake that a cast would truncate
        K = y_pred.shape[-1]
        ids = check_ids("sparse_categorical_accuracy", get_backend(), "y_true", ids, K, f"y_pred has {K} classes",
                        floats=True)
    return _masked_mean("sparse_categorical_accuracy", y_pred.argmax(axis=-1) == ids, mask)


def categorical_accuracy(y_true, y_pred, mask=None):
    """Fraction of positions where ``y_pred`` and the one-hot ``y_true`` peak at the same class."""
    return float(_categorical_accuracy(y_true, y_pred, mask))


def _categorical_accuracy(y_true, y_pred, mask=None):
    if tuple(y_true.shape) != tuple(y_pred.shape):
        raise ValueError(
            f"categorical_accuracy: y_true must have y_pred's shape {tuple(y_pred.shape)}, got {tuple(y_true.shape)}"
        )
    return _masked_mean("categorical_accuracy", y_pred.argmax(axis=-1) == y_true.argmax(axis=-1), mask)


def accuracy(y_true, y_pred, mask=None):
    """Categorical accuracy when ``y_true`` is one-hot (``y_pred``'s shape), sparse otherwise."""
    return float(_accuracy(y_true, y_pred, mask))


def _accuracy(y_true, y_pred, mask=None):
    if tuple(y_true.shape) == tuple(y_pred.shape) and y_pred.shape[-1] > 1:
        return _categorical_accuracy(y_true, y_pred, mask)
    return _sparse_categorical_accuracy(y_true, y_pred, mask)


_ON_DEVICE = {
    accuracy: _accuracy,
    sparse_categorical_accuracy: _sparse_categorical_accuracy,
    categorical_accuracy: _categorical_accuracy,
}


def on_device(fn):
    """``fn``'s form that returns its value as a 0-d array of the backend (not read yet), or ``fn`` itself
    for a metric that is not built in (its float is then read where it is computed)."""
    return _ON_DEVICE.get(fn, fn)


_BY_NAME = {
    "accuracy": accuracy,
    "acc": accuracy,
    "sparse_categorical_accuracy": sparse_categorical_accuracy,
    "categorical_accuracy": categorical_accuracy,
}


def get(identifier):
    """``(name, fn)`` for a metric name or a function (named after the function)."""
    if isinstance(identifier, str):
        fn = _BY_NAME.get(identifier.lower())
        if fn is None:
            raise ValueError(f"metrics.get: unknown metric {identifier!r}; choose one of {sorted(_BY_NAME)}")
        return ("accuracy" if fn is accuracy else identifier.lower()), fn
    if callable(identifier):
        return getattr(identifier, "__name__", type(identifier).__name__), identifier
    raise ValueError(f"metrics.get: expected a metric name or function, got {identifier!r}")
