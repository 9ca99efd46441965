"""The finite check of a training step: a step holding a NaN or an infinity is refused before any update.

:func:`check_step` runs after the backward pass (and, under data
parallelism, after the gradients are averaged over the ranks), before the
optimizer: a cheap test of the loss and the gradients, and only when it
trips, a scan (:func:`first_nonfinite`) that names the first culprit in a
:class:`NonFiniteError`. :func:`read_back` is how a GPU step reads its
numbers (the loss, the checks, the penalty, the metrics) in one transfer.
"""
from __future__ import annotations

import math
import numbers

import numpy

from ._checks import first_marked, format_index
from .backend import get_backend, to_numpy


class NonFiniteError(FloatingPointError):
    """A training step produced a NaN or an infinity, so it was not applied.

    Attributes
    ----------
    step : int
        The global step that was refused (``model.step + 1``); the weights are
        those after ``step - 1``.
    tensor : str
        The first tensor found not finite: ``"input batch x"``, ``"labels y"``,
        ``"weight <name>"``, ``"loss"`` or ``"gradient of <parameter name>"``.
    message : str
    """

    def __init__(self, step, tensor, message):
        # All three in args, so that the error pickles (it may cross from an MPI rank or a worker).
        super().__init__(step, tensor, message)
        self.step, self.tensor, self.message = step, tensor, message

    def __str__(self):
        return self.message


def check_step(model, loss, params, x=None, y=None, finite=None, rows=None):
    """Raise :class:`NonFiniteError` when this step's loss or a gradient of ``params`` is not finite.

    The training step (:func:`scratchnet.model.step.train_step`) calls it
    after the backward pass, before the optimizer (and the moving average) touch anything, so a refused step
    leaves no trace. What it costs when all is well: ``math.isfinite`` of the
    loss, and one pass over the gradients (:func:`_all_finite`). Only when
    that cheap test trips does :func:`first_nonfinite` look at the step's
    tensors one by one, to name the culprit.

    ``x`` and ``y`` are the step's input and labels (named when they are the
    cause); ``rows``, a :class:`scratchnet.distributed.Shard`, says which
    rows of the global batch they are. ``finite``, when given, is the gradients' test already answered
    (:func:`all_finite_on_device`, read back with the step's other numbers by
    :func:`read_back`): a GPU step then does not wait for the device here.
    """
    if finite is None:
        finite = _all_finite([p.grad for p in params if p.grad is not None])
    if math.isfinite(loss) and finite:
        return
    found = first_nonfinite(model, loss, params, x, y, 0 if rows is None else rows.start)
    if found is None:  # not while the test above is exact; a cheaper, inexact one (a sum) could give false alarms
        return
    tensor, what = found
    step = model.step + 1
    raise NonFiniteError(step, tensor, (
        f"step {step}: {what}; the step was not applied, so the weights are those after step {step - 1}. "
        f"Look for the source (a NaN or an infinity in the data, a learning rate too high), "
        f"or pass check_finite=False to train on regardless"
    ))


def _all_finite(arrays):
    """Whether every entry of every array is finite: ``isfinite(a).all()`` per array, stacked into one answer.

    On a GPU the per-array answers stay in the arrays' module, so it syncs
    once; on the CPU each is a NumPy bool already, and stacking them would
    cost more than the answers (a step's fixed cost). Why not the sum of each gradient (a NaN or an infinity makes it
    non-finite)? On LeNet's 1.66 million float32 gradient entries NumPy's
    pairwise sum takes about 0.6 ms where this takes 0.25 ms (best of many
    runs, on one core), and a float32 sum can overflow while every entry is
    finite: a false alarm.
    """
    if not arrays:
        return True
    xp = get_backend().xp
    if xp is numpy:
        return all(xp.isfinite(a).all() for a in arrays)
    return bool(xp.stack([xp.isfinite(a).all() for a in arrays]).all())


def all_finite_on_device(loss, arrays):
    """:func:`check_step`'s cheap test, left on the device: a 0-d boolean array, true when the loss
    (when it is an array; a number is tested by :func:`check_step`) and every entry of ``arrays`` are finite."""
    xp = get_backend().xp
    parts = [xp.isfinite(a).all() for a in arrays]
    if not isinstance(loss, (numbers.Number, numpy.generic)):
        parts.append(xp.isfinite(loss).all())
    return xp.stack(parts).all() if parts else True


def read_back(values):
    """``values`` (0-d arrays of the backend, NumPy scalars, numbers) as Python floats, in one transfer.

    On a GPU each ``float()`` of a device array is a wait for the device; a
    training step gathers its numbers (loss, checks, penalties, metrics) and
    reads them here at once: one small vector, one ``.get()``. A bool reads
    as 1.0 or 0.0. On the CPU backends it is ``float()`` of each.
    """
    xp = get_backend().xp
    if xp is numpy:
        return [float(v) for v in values]
    out = [float(v) if isinstance(v, (numbers.Number, numpy.generic)) else None for v in values]
    waiting = [i for i, v in enumerate(out) if v is None]
    if waiting:
        host = to_numpy(xp.stack([values[i].reshape(()).astype(xp.float64) for i in waiting]))
        for i, v in zip(waiting, host.tolist()):
            out[i] = v
    return out


def first_nonfinite(model, loss, params, x=None, y=None, offset=0):
    """``(tensor, what)``: the first of the step's tensors holding a NaN or an infinity, or None when all are finite.

    The order is the order of causes: the input batch, the labels, the
    weights (an earlier update overflowed, or a restored checkpoint held a
    NaN), the loss, then the gradients from the last layer back (the order
    in which the backward pass computed them, so the first is where a NaN began).
    ``offset``: the first row of ``x`` in the global batch (under data parallelism).
    """
    for tensor, a in (("input batch x", x), ("labels y", y)):
        entry = _nonfinite_entry(a)
        if entry is not None:
            (index, value), verb = entry, "holds" if tensor.startswith("input") else "hold"
            row = offset + index[0] if index else 0
            return tensor, f"the {tensor} {verb} {value!s} at row {row} of the batch ([{format_index(index)}])"
    for p in model.parameters():
        entry = _nonfinite_entry(p.value)
        if entry is not None:
            return f"weight {p.name}", f"the weight {p.name} is not finite ({_at(entry)})"
    if not math.isfinite(loss):
        return "loss", f"the loss is {loss}"
    for p in reversed(params):
        entry = _nonfinite_entry(p.grad)
        if entry is not None:
            return f"gradient of {p.name}", f"the gradient of {p.name} is not finite ({_at(entry)}){_shared_note(model)}"
    return None


def _nonfinite_entry(a):
    """``(index, value)`` of ``a``'s first NaN or infinity; None when ``a`` is finite or is not a float array."""
    if a is None or getattr(a, "dtype", None) is None or a.dtype.kind not in "fc":
        return None
    bad = ~get_backend().xp.isfinite(a)
    if not bad.any():
        return None
    return first_marked(a, bad)


def _at(entry):
    index, value = entry
    return f"{value!s} at [{format_index(index)}]"


def _shared_note(model):
    """What to say of a gradient that is averaged over the ranks: the NaN may come from another rank's batch."""
    data_parallel = getattr(model, "data_parallel", None)
    if data_parallel is None or data_parallel.world.size == 1:
        return ""
    return " after the allreduce (the cause may be another rank's batch: that rank's message names it)"


def share_nonfinite_loss(loss, params):
    """Under data parallelism, let a rank's non-finite loss reach every rank before the allreduce
    (:meth:`scratchnet.distributed.DataParallel.allreduce_gradients`).

    Each rank checks the averaged gradients, which are the same everywhere, so
    every rank refuses the same step and none is left waiting in a collective.
    A rank whose own loss is not finite (while its gradients may be) fills
    one gradient with NaN: the sum carries it to all, at no extra message.
    """
    if math.isfinite(loss):
        return
    for p in params:
        if p.grad is not None:
            p.grad[...] = float("nan")
            return
