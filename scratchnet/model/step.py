"""The training step, whole in one function: forward, loss, backward, regularizer, update.

:func:`train_step` is what ``Model.train_on_batch`` runs, on every backend,
in one process or many. Nothing else forks it:

- the optimizer owns the update (:meth:`scratchnet.optimizers.Optimizer.step`):
  it adds the penalties' gradients, clips, applies its rule and moves the
  moving average, and chooses for itself whether to fuse them into one
  kernel per parameter (:mod:`scratchnet.fused_update`);
- data parallelism wraps the step (:class:`scratchnet.distributed.DataParallel`,
  as PyTorch's DDP wraps a module): it hands the step its rows of the global
  batch (``rows``, a :class:`~scratchnet.distributed.Shard`, which the
  forward pass takes as its ``training`` argument so that dropout draws the
  global batch's mask) and a ``gradients_ready`` hook that averages the
  gradients over the ranks;
- on a GPU the step's numbers (the loss, the deferred checks, the finite
  test, the penalty's sums, the metrics) are read in one transfer before any
  update (:func:`read_numbers`); on the CPU backends each is a float at once.

:func:`test_step` is ``Model.test_on_batch``: the forward pass and the numbers.
"""
from __future__ import annotations

import numpy

from .. import losses as _losses
from .. import metrics as _metrics
from .. import recording
from .._checks import deferred_checks
from ..backend import get_backend
from ..finite import all_finite_on_device, check_step, read_back
from ..layers.base import as_backend_array
from ..training import input_list
from ..regularizers import L1L2


def train_step(model, x, y, gradients_ready=None, rows=None):
    """One step of ``model`` on the batch ``(x, y)``; returns its logs, measured before the update.

    Parameters
    ----------
    model : scratchnet.Model
        Compiled with an optimizer.
    x, y : arrays
        The batch (under data parallelism: this rank's rows of it).
    gradients_ready : callable, optional
        ``gradients_ready(loss, params)``, called once the backward pass has
        left the gradients in ``p.grad``, before they are checked and applied:
        :class:`~scratchnet.distributed.DataParallel` averages them over the ranks there.
    rows : scratchnet.distributed.Shard, optional
        Which rows of a global batch ``(x, y)`` are.

    Returns
    -------
    dict
        ``{"loss": loss + penalty, <metric>: value}``, the loss with the
        regularization penalty, as Keras reports it.

    With ``model.check_finite`` a step whose loss or gradients hold a NaN or
    an infinity raises :class:`scratchnet.training.NonFiniteError` before the
    update: the weights, the optimizer, the moving average and ``model.step``
    stay as they were.
    """
    model.require_compiled("train_on_batch", optimizer=True)
    x, y = inputs_as_arrays(x, model.dtype), as_backend_array(y, model.dtype)
    model.zero_grad()
    with deferred_checks() as checks:
        y_pred, backprop = model.forward(x, training=rows or True, need_dx=False)  # forward (x is data: no dx)
        mask = output_mask(model)  # Keras's: masked positions count for nothing in the loss and the metrics
        value, dloss = loss_of(model.loss, y, y_pred, mask)  # loss
        backprop(dloss(1.0))  # backward: p.grad
        metrics = measure(model.metrics, y, y_pred, mask)
    everything = list(model.parameters())  # after the forward pass: the first one builds the layers
    params = [p for p in everything if p.trainable]
    loss, penalty, finite, logs = read_numbers(model, value, metrics, checks, params, gradients_ready is None)
    if gradients_ready is not None:
        gradients_ready(loss, params)
    if model.check_finite:
        with recording.region("check_finite"):
            check_step(model, loss, params, x, y, finite=finite, rows=rows)
    # The regularizer and the update: the penalties' gradients, the optimizer's rule, the moving average.
    penalty = model.optimizer.step(everything, regularize=True, average=model.ema, penalty=penalty)
    model.step += 1
    return {"loss": loss + penalty, **logs}


def test_step(model, x, y):
    """Loss (with the penalty) and metrics of one batch in inference mode: ``Model.test_on_batch``."""
    model.require_compiled("test_on_batch")
    x, y = inputs_as_arrays(x, model.dtype), as_backend_array(y, model.dtype)
    with deferred_checks() as checks:
        y_pred, _ = model.forward(x, training=False)
        mask = output_mask(model)
        value, _ = loss_of(model.loss, y, y_pred, mask)
        metrics = measure(model.metrics, y, y_pred, mask)
    loss, penalty, _, logs = read_numbers(model, value, metrics, checks, (), False)
    if penalty is None:
        penalty = model.regularization_loss()
    return {"loss": loss + penalty, **logs}


def inputs_as_arrays(x, dtype):
    """The batch's input on the backend: an array, or each array of a model's list of inputs."""
    if input_list(x):
        return [as_backend_array(a, dtype) for a in x]
    return as_backend_array(x, dtype)


def _on_device():
    return get_backend().xp is not numpy


def output_mask(model):
    """The mask of the model's last output (``model.output_mask``; None for a list of outputs)."""
    mask = getattr(model, "output_mask", None)
    return None if isinstance(mask, (list, tuple)) else mask


def loss_of(loss, y, y_pred, mask=None):
    """``(value, backprop)`` of the loss; on a GPU the value is left unread (a 0-d array, or a custom loss's float).
    A mask is passed as ``mask=`` (:func:`scratchnet.losses.with_mask`)."""
    on_device = getattr(loss, "on_device", None) if _on_device() else None
    return _losses.with_mask(on_device or loss, mask)(y, y_pred)


def measure(metrics, y, y_pred, mask=None):
    """``[(name, value)]`` of the metrics: floats on the CPU backends, unread 0-d arrays on a GPU."""
    if _on_device():
        return [(name, _losses.with_mask(_metrics.on_device(fn), mask, name)(y, y_pred)) for name, fn in metrics]
    return [(name, float(_losses.with_mask(fn, mask, name)(y, y_pred))) for name, fn in metrics]


def read_numbers(model, value, metrics, checks, params, with_finite):
    """``(loss, penalty, finite, logs)``: the step's numbers, read before any update.

    On the CPU backends: ``float(value)``, the metrics as they are, and
    ``penalty`` and ``finite`` None (the optimizer sums the penalty as it
    updates, :func:`~scratchnet.finite.check_step` tests the gradients).
    On a GPU, each would be a wait for the device: the loss, the deferred
    id checks, the finite test of the gradients (``with_finite``; not under
    data parallelism, whose gradients change after this), the penalty's sums
    and the metrics come over in one transfer (:func:`~scratchnet.finite.read_back`);
    a failed check raises here.
    """
    if not _on_device():
        return float(value), None, None, dict(metrics)
    with recording.region("regularizer"):
        parts = penalty_parts(model)
    finite = None
    if with_finite and model.check_finite:
        with recording.region("check_finite"):
            finite = all_finite_on_device(value, [p.grad for p in params if p.grad is not None])
    sums = [v for _, l1, l2 in parts for v in (l1, l2)]
    flags = checks.flags
    numbers = read_back([value, True if finite is None else finite, *flags, *sums, *(m for _, m in metrics)])
    loss = numbers[0]
    if finite is not None:
        finite = bool(numbers[1])
    k = 2 + len(flags)
    checks.raise_first(numbers[2:k])
    penalty = 0
    for (r, _, _), l1, l2 in zip(parts, numbers[k::2], numbers[k + 1::2]):
        if r is None:
            penalty += l1
            continue
        term = 0.0
        if r.l1:
            term += r.l1 * l1
        if r.l2:
            term += r.l2 * l2
        penalty += term
    k += len(sums)
    return loss, float(penalty), finite, {name: v for (name, _), v in zip(metrics, numbers[k:])}


def penalty_parts(model):
    """What :meth:`~scratchnet.Layer.regularization_loss` sums, not read yet: ``(regularizer, l1 sum, l2 sum)`` per penalty.

    An ``L1L2`` penalty's sums stay on the device; any other regularizer
    gives its own float (``(None, float, 0.0)``), read where it is computed.
    """
    be = get_backend()
    parts = []
    for p in model.parameters():
        r = p.regularizer
        if r is None:
            continue
        if type(r) is L1L2:
            parts.append((r, abs(p.value).sum() if r.l1 else 0.0, be.sum_of_squares_on_device(p.value) if r.l2 else 0.0))
        else:
            parts.append((None, r(p.value), 0.0))
    return parts
