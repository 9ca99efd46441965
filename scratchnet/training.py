"""The training loop: one step-based loop behind ``fit``, ``scratchnet train``, the demo and ``bench/train.py``.

:func:`train` runs ``steps`` optimizer steps of ``model.train_on_batch`` over
an iterator of ``(epoch, x, y)`` batches, and drives Keras's callback
protocol around them::

    set_params(params); set_model(model)
    on_train_begin(logs)
      on_epoch_begin(epoch, logs)          # when the batches' epoch changes
        on_train_batch_begin(batch, logs); on_train_batch_end(batch, logs)
        on_test_begin(logs); on_test_end(logs)            # every validate_every steps
      on_epoch_end(epoch, logs)            # the epoch's means, plus val_<name>
    on_train_end(logs)

Where the batches come from is the caller's: :func:`array_batches` shuffles
arrays epoch by epoch for ``fit``; a zoo recipe draws its own
(:meth:`scratchnet.zoo.Recipe.batches`). :func:`evaluate` is the one weighted
mean of ``test_on_batch`` over batches.

A step whose loss or gradients hold a NaN or an infinity is refused before
the optimizer sees it (:func:`scratchnet.finite.check_step`): training stops with a
:class:`NonFiniteError` naming the step and the first tensor that is not
finite, the weights stay those of the last finite step, and the callbacks
see ``on_train_end``, as after Keras's ``TerminateOnNaN``. ``check_finite=False``
trains on regardless.
"""
from __future__ import annotations


import numpy

from . import random as _random
from ._checks import check_bool, check_count
from .backend import get_backend
# The step's finite check and its error, re-exported: they are the training loop's to raise and catch.
from .finite import (NonFiniteError, all_finite_on_device, check_step, first_nonfinite, read_back,  # noqa: F401
                     share_nonfinite_loss)


class History:
    """What :func:`train` returns: ``history[key]`` is a list with one entry per epoch."""

    def __init__(self, params=None):
        self.history = {}
        self.epoch = []
        self.params = dict(params or {})

    def append(self, epoch, logs):
        self.epoch.append(epoch)
        for k, v in logs.items():
            self.history.setdefault(k, []).append(v)

    def last(self):
        """The last entry of every key."""
        return {k: v[-1] for k, v in self.history.items()}

    def __repr__(self):
        return f"<History {sorted(self.history)} over {len(self.epoch)} epochs>"


class CallbackList:
    """Callbacks called as one: ``callbacks.on_epoch_end(epoch, logs)`` calls each that has the hook."""

    def __init__(self, callbacks, model, params):
        self.callbacks = list(callbacks)
        for c in self.callbacks:
            if hasattr(c, "set_params"):
                c.set_params(dict(params))
            if hasattr(c, "set_model"):
                c.set_model(model)

    def call(self, hook, *args):
        for c in self.callbacks:
            method = getattr(c, hook, None)
            if method is not None:
                method(*args)

    def begin_training(self, logs):
        """``on_train_begin`` on each callback; if one refuses (raises), those already begun are ended first.

        A callback that refuses to start (a :class:`ModelCheckpoint` on another
        run's folder) must not leave the ones before it half-begun: a
        :class:`StopOnSignal` would keep its signal handlers, a lock would stay held.
        """
        begun = []
        try:
            for c in self.callbacks:
                method = getattr(c, "on_train_begin", None)
                if method is not None:
                    method(logs)
                begun.append(c)
        except BaseException:
            for c in reversed(begun):
                method = getattr(c, "on_train_end", None)
                if method is not None:
                    method({})
            raise

    def __getattr__(self, hook):
        if not hook.startswith("on_"):
            raise AttributeError(hook)
        return lambda *args: self.call(hook, *args)


class _Means:
    """Means of logs over batches: the loss weighted by each batch's number of examples, the metrics by the
    positions they counted (Keras's running total and count): the examples, or the unmasked positions of a
    model whose output has a mask (``model.output_mask``), so that an epoch's accuracy is the accuracy over
    every counted position, however the padding fell into batches."""

    def __init__(self):
        self.totals, self.weights, self.count = {}, {}, 0

    def add(self, logs, n, model=None):
        self.count += n
        mask = getattr(model, "output_mask", None) if model is not None else None
        counted = n if mask is None or isinstance(mask, (list, tuple)) else float(mask.sum())
        for k, v in logs.items():
            w = n if k == "loss" else counted
            self.totals[k] = self.totals.get(k, 0.0) + v * w
            self.weights[k] = self.weights.get(k, 0) + w

    def result(self):
        if not self.count:
            return {}
        return {k: (v / self.weights[k] if self.weights[k] else 0.0) for k, v in self.totals.items()}


def train(model, batches, steps, callbacks=(), params=None, validate=None, validate_every=None, batch_logs="mean",
          check_finite=True):
    """Run ``steps`` training steps of ``model`` over ``batches``: the one training loop.

    Parameters
    ----------
    model : scratchnet.Model
        Compiled; ``model.step`` (the global step) counts every step taken.
    batches : iterator of (epoch, x, y)
        At least ``steps`` batches. A change of ``epoch`` ends one epoch and
        begins the next.
    steps : int
        Steps to run in this call (a callback may stop earlier by setting
        ``model.stop_training``).
    callbacks : list of Callback
    params : dict, optional
        Given to each callback's ``set_params``; ``initial_step`` and
        ``total_steps`` are added.
    validate : callable, optional
        ``validate() -> logs``: an evaluation. Without ``validate_every`` it
        runs at the end of each epoch and its logs join the epoch's as
        ``val_<name>`` (Keras's ``validation_data``); with it, every
        ``validate_every`` global steps, except after the last step.
    validate_every : int, optional
    batch_logs : {"mean", "last"}
        What ``on_train_batch_end`` receives: the running means of the epoch
        so far (Keras 3's ``fit``), or this batch's own logs.
    check_finite : bool
        Refuse a step whose loss or gradients are not finite: it is not
        applied, the callbacks see ``on_train_end``, and a
        :class:`NonFiniteError` names the step and the tensor. ``False``
        trains on regardless (the model's own ``check_finite`` is restored
        afterwards).

    Returns
    -------
    History
        One entry per epoch (its means, plus the validation's ``val_`` logs).
    """
    if batch_logs not in ("mean", "last"):
        raise ValueError(f"train: batch_logs must be 'mean' or 'last', got {batch_logs!r}")
    steps = check_count("train", "steps", steps, minimum=0)
    validate_every = check_count("train", "validate_every", validate_every, none=True)
    check_finite = check_bool("train", "check_finite", check_finite)
    previous = getattr(model, "check_finite", True)
    model.check_finite = check_finite
    try:
        return _train(model, batches, steps, callbacks, params, validate, validate_every, batch_logs)
    finally:
        model.check_finite = previous


def _train(model, batches, steps, callbacks, params, validate, validate_every, batch_logs):
    """:func:`train`, its arguments checked."""
    params = {**(params or {}), "initial_step": model.step, "total_steps": model.step + steps}
    history = History(params)
    cbs = CallbackList(callbacks, model, params)
    model.history = history
    model.stop_training = False
    last_step = model.step + steps
    epoch = means = None
    batch = 0

    def end_epoch():
        logs = means.result()
        if validate is not None and validate_every is None:
            logs.update({f"val_{k}": v for k, v in validate().items()})
        cbs.on_epoch_end(epoch, logs)
        history.append(epoch, logs)

    cbs.begin_training({})
    batches = iter(batches)
    for _ in range(steps):
        next_epoch, x, y = next(batches)
        if next_epoch != epoch:
            if epoch is not None:
                end_epoch()
                if _should_stop(model):
                    epoch = None
                    break
            epoch, means, batch = next_epoch, _Means(), 0
            cbs.on_epoch_begin(epoch, {})
        cbs.on_train_batch_begin(batch, {})
        try:
            logs = model.train_on_batch(x, y)
        except NonFiniteError:
            # The step was not applied: the model is the last finite one. The callbacks end as after a stop
            # (a checkpoint saves that state, the loggers flush), then the error goes to the caller.
            model.stop_training = True
            cbs.on_train_end(history.last())
            raise
        means.add(logs, num_examples(x), model)
        cbs.on_train_batch_end(batch, means.result() if batch_logs == "mean" else logs)
        batch += 1
        if validate is not None and validate_every and model.step % validate_every == 0 and model.step != last_step:
            validate()
        if _should_stop(model):
            break
    if epoch is not None:
        end_epoch()
    cbs.on_train_end(history.last())
    return history


def _should_stop(model):
    """``model.stop_training``; under data parallelism every rank stops when any rank asks (a signal reaches one)."""
    data_parallel = getattr(model, "data_parallel", None)
    if data_parallel is None:
        return model.stop_training
    # The agreed answer, not model.stop_training read again: a signal may set that in between.
    stop = data_parallel.agree_to_stop(model.stop_training)
    if stop:
        model.stop_training = True
    return stop




def evaluate(model, batches, callbacks=()):
    """Mean of ``model.test_on_batch`` over ``(x, y)`` batches, weighted by each batch's size.

    Calls ``on_test_begin``, ``on_test_batch_begin``/``on_test_batch_end`` and
    ``on_test_end`` on the callbacks (each already attached to a model).
    """
    cbs = list(callbacks or [])
    _call(cbs, "on_test_begin", {})
    means = _Means()
    for i, (x, y) in enumerate(batches):
        _call(cbs, "on_test_batch_begin", i, {})
        logs = model.test_on_batch(x, y)
        means.add(logs, num_examples(x), model)
        _call(cbs, "on_test_batch_end", i, logs)
    if means.count == 0:
        raise ValueError(f"{model.name}: evaluate needs at least one example")
    result = means.result()
    _call(cbs, "on_test_end", dict(result))
    return result


def _call(callbacks, hook, *args):
    for c in callbacks:
        method = getattr(c, hook, None)
        if method is not None:
            method(*args)


def array_batches(x, y, batch_size, shuffle=True, epochs=None):
    """``(epoch, x_batch, y_batch)`` over arrays, epoch after epoch (forever when ``epochs`` is None).

    Each epoch's order is drawn from :func:`scratchnet.random.generator` when
    ``shuffle``; the last batch of an epoch may be short. The arguments are
    checked here, at the call, not at the first batch (a generator's body
    runs only when it is first asked for a batch).
    """
    n = num_examples(x, y, "array_batches")
    batch_size = check_count("array_batches", "batch_size", batch_size)
    epochs = check_count("array_batches", "epochs", epochs, minimum=0, none=True)
    return _array_batches(x, y, n, batch_size, shuffle, epochs)


def _array_batches(x, y, n, batch_size, shuffle, epochs):
    epoch = 0
    while epochs is None or epoch < epochs:
        order = _random.generator().permutation(n) if shuffle else numpy.arange(n)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            yield epoch, take(x, idx), take(y, idx)
        epoch += 1


def input_list(x):
    """Whether ``x`` is the list of arrays of a model of several inputs (``fit([a, b], y)``, Keras's)."""
    return isinstance(x, (list, tuple)) and len(x) > 0 and all(hasattr(a, "shape") for a in x)


def num_examples(x, y=None, op=None):
    """``len(x)`` (of each array, for a list of inputs), checked against ``len(y)``; ``op`` (``"fit"``) starts the
    error."""
    where = f"{op}: " if op else ""
    if input_list(x):
        counts = [len(a) for a in x]
        if len(set(counts)) > 1:
            raise ValueError(f"{where}the inputs must have the same number of examples, got {counts}")
        n = counts[0]
    else:
        n = len(x)
    if y is not None and len(y) != n:
        raise ValueError(f"{where}x and y must have the same number of examples, got {n} and {len(y)}")
    return n


def take(a, idx):
    """``a[idx]``: host data indexed on the host, a device array with a device index or a slice (each array
    of a list)."""
    if input_list(a):
        return [take(t, idx) for t in a]
    if isinstance(a, numpy.ndarray) or isinstance(idx, slice):
        return a[idx]
    return a[get_backend().xp.asarray(idx)]
