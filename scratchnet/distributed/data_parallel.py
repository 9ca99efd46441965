"""Data parallelism: every rank holds the whole model and steps on its rows of each global batch.

:class:`DataParallel` wraps the one training step
(:func:`scratchnet.model.step.train_step`), as PyTorch's
``DistributedDataParallel`` wraps a module: the step is the same, the
wrapper shards the batch before it and averages the gradients inside it.
One step of ``model.train_on_batch(x, y)`` on rank ``r`` of ``R``, with ``x``
the global batch of ``N`` rows (the same on every rank)::

    shard = Shard.of(N, r, R)                     # rows r*N//R .. (r+1)*N//R
    train_step(model, shard.take(x), shard.take(y), rows=shard, gradients_ready=...)
        forward(training=shard), loss, backprop   # Dropout draws the global mask and keeps these rows
        gradients_ready: allreduce                # p.grad = sum_r (n_r / N) p.grad_r: the global mean
        optimizer.step                            # L2, clipping, the rule, the moving average: identical
                                                  # on every rank, so the weights stay equal
    logs = sum_r (n_r / N) logs_r                 # the global batch's loss and accuracy

The weights ``n_r / N`` sum to 1, and the optimizer (which adds the L2
gradient and clips) sees the averaged gradient, as in one process; a short
final batch is weighted by its true size.

Batch normalization: each rank normalizes its rows with its shard's own
mean and variance in the forward (Keras's and PyTorch's default; a
synchronized batch norm would also need the backward's channel sums
allreduced), but the moving averages follow the global batch. During the
step every ``BatchNormalization`` (in a layer made of layers too) gets a
:attr:`~scratchnet.layers.BatchNormalization.statistics_reducer`, which
turns the shard's ``(mean_r, var_r)`` into the global batch's, in two
allreduces of C float64 numbers (:meth:`DataParallel.reduce_batch_statistics`)::

    mean = sum_r (n_r / N) mean_r
    var  = sum_r (n_r / N) (var_r + (mean_r - mean)**2)      the spread of the shards' means included

and every rank applies the same moving-average update with them. So the
moving averages are identical on every rank after each step (rank 0's
checkpoints carry what every rank holds), and equal (to round-off) to those
of one process on the whole batch. The gradients travel as one flat
buffer per dtype, in one ``Allreduce``, not one call per parameter.

:func:`broadcast_state` makes every rank start from rank 0's state: the
weights, the optimizer's slots and iteration count, the moving averages, the
global step and the global random generator (so shuffling and dropout draw
the same numbers on every rank).
"""
from __future__ import annotations

import functools

import numpy

from .. import random as _random
from .. import recording
from ..backend import get_backend, to_numpy
from .shard import Shard
from .world import world as _world


class GradientBuffer:
    """One flat buffer per dtype for the gradients of a list of parameters, kept from step to step."""

    def __init__(self):
        self._buffers = {}

    def allreduce(self, params, weight, world):
        """``p.grad = sum over ranks of weight_r * p.grad`` for every parameter with a gradient, in place."""
        groups = {}
        for p in params:
            if p.grad is not None:
                groups.setdefault(numpy.dtype(p.grad.dtype), []).append(p)
        for dtype, group in groups.items():
            n = sum(p.grad.size for p in group)
            xp = get_backend().xp
            buf = self._buffers.get(dtype)
            if buf is None or buf.size != n or not isinstance(buf, xp.ndarray):
                buf = self._buffers[dtype] = xp.empty(n, dtype=dtype)
            offset = 0
            for p in group:
                xp.multiply(p.grad.reshape(-1), weight, out=buf[offset:offset + p.grad.size])
                offset += p.grad.size
            world.allreduce(buf, what="allreduce of gradients")
            offset = 0
            for p in group:
                p.grad[...] = buf[offset:offset + p.grad.size].reshape(p.grad.shape)
                offset += p.grad.size


def allreduce_gradients(model, weight=None, world=None, buffer=None):
    """Average the gradients over the ranks: ``p.grad = sum_r weight_r * p.grad_r``, one Allreduce per dtype.

    Call it after the backward pass, before ``optimizer.step``.

    Parameters
    ----------
    model : scratchnet.Model or iterable of Parameter
        Its trainable parameters with a gradient take part (the same on every rank).
    weight : float, optional
        This rank's share of the global batch, ``n_r / N`` (its
        :class:`Shard`'s ``weight``). Default: ``1 / world_size`` (equal shards).
    world : World, optional
        Default :func:`scratchnet.distributed.world`.
    buffer : GradientBuffer, optional
        Reuse its flat buffers from step to step (a new one otherwise).
    """
    world = _world() if world is None else world
    if world.size == 1:
        return
    if weight is None:
        weight = 1.0 / world.size
    params = model.trainable_parameters if hasattr(model, "trainable_parameters") else [p for p in model if p.trainable]
    (buffer or GradientBuffer()).allreduce(params, weight, world)


def broadcast_state(model, world=None):
    """Give every rank rank 0's weights, optimizer state, moving averages, global step and random generator."""
    world = _world() if world is None else world
    if world.size == 1:
        return
    state = world.bcast(_state_of(model) if world.is_root else None, what="bcast of rank 0's weights and state")
    if world.is_root:
        return
    xp = get_backend().xp
    by_name = {p.name: p for p in model.parameters()}
    for name, value in state["weights"].items():
        by_name[name].value[...] = xp.asarray(value)
    if getattr(model, "optimizer", None) is not None and state["optimizer"] is not None:
        model.optimizer.load_state_dict(state["optimizer"])
    if getattr(model, "ema", None) is not None and state["ema"] is not None:
        model.ema.load_state_dict(state["ema"])
    model.step = state["step"]
    _random.set_state(state["rng"])


def _state_of(model):
    optimizer, ema = getattr(model, "optimizer", None), getattr(model, "ema", None)
    return {
        "weights": {p.name: to_numpy(p.value) for p in model.parameters()},
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "ema": None if ema is None else ema.state_dict(),
        "step": model.step,
        "rng": _random.get_state(),
    }


class DataParallel:
    """Make ``model.train_on_batch`` (and so ``fit`` and :func:`scratchnet.training.train`) data-parallel.

    ``DataParallel(model)`` checks that every rank built the same variables
    (:meth:`World.agree`: a :class:`DisagreementError` names those that
    differ), broadcasts rank 0's state (:func:`broadcast_state`) and attaches
    itself as ``model.data_parallel``. From then on each
    ``train_on_batch(x, y)``, given the same global batch on every rank,
    steps on this rank's rows and averages the gradients (see the module's
    docstring), and the training loop stops every rank at the same step when
    any rank asks to stop. After restoring a checkpoint on rank 0, call
    :func:`broadcast_state` (or make a new ``DataParallel``).

    In a world of one it changes nothing (and costs a slice per step).

    Parameters
    ----------
    model : scratchnet.Model
        Compiled; its ``optimizer`` and ``ema`` are broadcast with it.
    world : World, optional
        Default :func:`scratchnet.distributed.world`.
    """

    def __init__(self, model, world=None):
        self.model = model
        self.world = _world() if world is None else world
        self.buffer = GradientBuffer()
        # The same variables on every rank, or a DisagreementError naming them (before the broadcast needs them).
        self.world.agree({p.name: f"{tuple(p.shape)} {p.dtype}" for p in model.parameters()}, what="the model's variables")
        broadcast_state(model, self.world)
        model.data_parallel = self

    @property
    def is_root(self):
        return self.world.is_root

    def train_on_batch(self, x, y):
        """The step on this rank's rows of the global batch ``(x, y)``, its gradients averaged over the ranks;
        returns the global batch's logs."""
        from ..finite import share_nonfinite_loss
        from ..model.step import train_step

        from ..training import num_examples

        n = num_examples(x, y)
        self.world.step = self.model.step + 1  # named if a collective of this step times out
        shard = Shard.of(n, self.world.rank, self.world.size)

        def gradients_ready(loss, params):
            if self.model.check_finite:  # a rank's non-finite loss reaches every rank: all refuse the same step
                share_nonfinite_loss(loss, params)
            self.allreduce_gradients(params, shard.weight)

        norms = self._batch_norms() if self.world.size > 1 else []
        for layer in norms:  # the moving averages follow the global batch (the module's docstring)
            layer.statistics_reducer = functools.partial(self.reduce_batch_statistics, weight=shard.weight)
        try:
            logs = train_step(self.model, shard.take(x), shard.take(y), gradients_ready=gradients_ready, rows=shard)
        finally:
            for layer in norms:
                layer.statistics_reducer = None
        return self.average_logs(logs, shard.weight)

    def _batch_norms(self):
        """The layers with batch statistics (``statistics_reducer``), the parts of a layer made of layers included."""
        found, layers = [], list(self.model.walk())
        while layers:
            layer = layers.pop(0)
            layers += getattr(layer, "_sublayers", lambda: [])()
            if hasattr(layer, "statistics_reducer") and layer not in found:
                found.append(layer)
        return found

    def reduce_batch_statistics(self, mean, variance, weight):
        """The global batch's ``(mean, variance)`` per channel from this rank's, its shard weighted ``weight``.

        ``mean = sum_r w_r mean_r``, then ``var = sum_r w_r (var_r + (mean_r - mean)**2)``: two allreduces
        of C numbers, in float64 (no cancellation: the second sum has no subtraction of large terms).
        Returned in ``mean``'s dtype, on the backend. A rank with no rows (a short last batch) adds nothing.
        """
        m = numpy.asarray(to_numpy(mean), dtype=numpy.float64)
        v = numpy.asarray(to_numpy(variance), dtype=numpy.float64)
        if weight == 0:  # no rows: its statistics are NaN, and weigh nothing
            m, v = numpy.zeros_like(m), numpy.zeros_like(v)
        total = self.world.allreduce(weight * m, what="allreduce of the batch norm means")
        spread = self.world.allreduce(weight * (v + (m - total) ** 2), what="allreduce of the batch norm variances")
        xp = get_backend().xp
        return xp.asarray(total.astype(mean.dtype)), xp.asarray(spread.astype(mean.dtype))

    def allreduce_gradients(self, params=None, weight=None):
        """``p.grad = sum_r weight_r p.grad_r`` over the ranks, one ``Allreduce`` per dtype, in the kept buffers.

        The step calls it (its ``gradients_ready``) before the optimizer,
        with this rank's :class:`Shard` weight. ``params``: default the
        model's trainable parameters; ``weight``: default ``1 / world size``.
        """
        if self.world.size == 1:
            return
        params = self.model.trainable_parameters if params is None else params
        with recording.region("allreduce"):
            self.buffer.allreduce(params, 1.0 / self.world.size if weight is None else weight, self.world)

    def average_logs(self, logs, weight):
        """``{name: sum_r weight_r * value_r}``: the global batch's loss and metrics from each rank's."""
        if self.world.size == 1:
            return logs
        names = list(logs)  # the same names, in the same order, on every rank
        total = self.world.allreduce_sum([weight * float(logs[k]) for k in names], what="allreduce of the loss and metrics")
        return {k: float(v) for k, v in zip(names, total)}

    def agree_to_stop(self, stop):
        """True on every rank when any rank's ``stop`` is true (the training loop asks after each step)."""
        return self.world.any(stop, what="agreement on stopping")

    def detach(self):
        """Make the model train on its own again."""
        self.model.data_parallel = None
