"""``use``: a graded exercise's backward (and forward) put into the engine, so that models train on it.

The layers call their op through the ``scratchnet.ops`` module
(``ops.max_pool2d(x, ...)`` in ``MaxPool2D.call``), so replacing that one
attribute sends every layer of that kind through your code, and putting the
original back undoes it. The replacement is an op like the built-in one:
same arguments, ``(y, backprop)``, recorded for the profiler, on host NumPy
arrays (your code runs on NumPy whatever the backend; the results go back to
the backend's arrays, in the layer's dtype).

===============  ================================  =============================================
exercise         replaces                          used by
===============  ================================  =============================================
``dense``        ``sn.ops.dense``                  ``Dense`` (the MLP, every model's classifier)
``conv2d``       ``sn.ops.conv2d``                 ``Conv2D`` (LeNet)
``max_pool``     ``sn.ops.max_pool2d``             ``MaxPool2D`` (LeNet)
``avg_pool``     ``sn.ops.avg_pool2d``             ``AveragePooling2D``
``batch_norm``   ``sn.ops.batch_norm``             ``BatchNormalization`` in training; at inference
                                                   the layer uses its moving averages, not the op
``lstm_step``    ``sn.ops.lstm``                   ``LSTM`` (the row-by-row classifier); your step
                                                   runs once per time step, forward and backward
``gru_step``     ``sn.ops.gru``                    ``GRU`` (and ``Bidirectional(GRU(...))``); your
                                                   step runs once per time step, as the LSTM's
``attention``    ``sn.ops.attention``              ``MultiHeadAttention`` (``TransformerBlock``,
                                                   the ``transformer_lm`` model)
===============  ================================  =============================================

Your attention
runs on ``(N, Tq, d)`` arrays: leading dimensions (the heads) are folded into
``N``, and ``causal=True`` becomes a mask; it has no dropout (a layer training
with ``dropout > 0`` is refused) and its scale is ``1/sqrt(d)`` (another scale
is refused).

The ``residual`` exercise has no op to replace: ``sn.ops`` has no residual block (``ResidualBlock``
is a layer made of layers), so ``use("residual", ...)`` is refused with a ValueError that says so.

An activation that the built-in op fuses into its kernel (``activation="relu"``)
runs after yours, through ``sn.ops.relu``. ``need_dx=False`` is ignored: your
backward always computes ``dx``, which is never wrong.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from .. import ops
from ..backend import get_backend, to_numpy
from ..recording import op as recorded_op
from .grader import ExerciseError, get_exercise, grade

#: The attribute of ``scratchnet.ops`` each exercise replaces.
OPS = {"dense": "dense", "conv2d": "conv2d", "max_pool": "max_pool2d", "avg_pool": "avg_pool2d",
       "batch_norm": "batch_norm", "lstm_step": "lstm", "gru_step": "gru", "attention": "attention"}


class Swap:
    """Your op in the engine until :meth:`restore` (or the end of the ``with`` block).

    Attributes
    ----------
    exercise : str
    op : str
        The attribute of ``scratchnet.ops`` replaced (``"max_pool2d"``).
    report : GradeReport
        What the grader said about your code when it went in.
    """

    def __init__(self, exercise, op, replacement, report):
        self.exercise, self.op, self.report = exercise, op, report
        self.original = getattr(ops, op)
        setattr(ops, op, replacement)  # every layer looks its op up in scratchnet.ops at each call
        self.active = True

    def restore(self):
        """Put the built-in op back (once; later calls do nothing)."""
        if self.active:
            setattr(ops, self.op, self.original)
            self.active = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.restore()
        return False

    def __repr__(self):
        state = "in use" if self.active else "restored"
        return f"<Swap: your {self.exercise} as sn.ops.{self.op}, {state}>"


def use(name, backward, forward=None, *, check=True):
    """Train with your code: put your backward (and forward) for exercise ``name`` into the engine.

    A plain call swaps it in until ``.restore()``; as a context manager, until
    the block ends::

        with sn.exercises.use("max_pool", backward=max_pool_backward):
            sn.training.train(recipe.model, recipe.batches(), 200)

    Parameters
    ----------
    name : {"dense", "conv2d", "max_pool", "avg_pool", "batch_norm", "lstm_step", "gru_step", "attention"}
    backward : callable
        Your ``<name>_backward``, the stub's signature.
    forward : callable, optional
        Your ``<name>_forward``, the given forward's signature; default the given one.
    check : bool
        Grade the code first and refuse it (:class:`ExerciseError`, with the
        report) unless it passes. ``check=False`` swaps it in anyway, with a
        warning: to watch what a wrong gradient does to training.

    Returns
    -------
    Swap
    """
    ex = get_exercise(name)
    if ex.name not in OPS:
        raise ValueError(f"use: exercise {name!r} has no op to replace (sn.ops has no {ex.name} op: the layers that "
                         f"hold one, such as ResidualBlock, are made of other layers); choose one of {', '.join(OPS)}")
    report = grade(ex.name, backward, forward)
    if not report.passed:
        if check:
            raise ExerciseError(report)
        warnings.warn(f"use: your {ex.name} does not pass the grader; training with it anyway (check=False)",
                      stacklevel=2)
    forward = ex.forward if forward is None else forward
    replacement = _REPLACEMENTS[ex.name](forward, backward, getattr(ops, OPS[ex.name]))
    return Swap(ex.name, OPS[ex.name], replacement, report)


# -- the replacements: each has the built-in op's signature ------------------------------------------
def _host(a):
    return None if a is None else np.asarray(to_numpy(a))


def _device(a, dtype):
    return None if a is None else get_backend().xp.asarray(np.asarray(a, dtype=dtype))


def _activated(activation, y, backprop):
    """``y`` through the activation the built-in op would have fused (``"relu"``), and the composed backprop."""
    if activation is None:
        return y, backprop
    y, activation_backprop = getattr(ops, activation)(y)
    return y, lambda dy: backprop(activation_backprop(dy))


def _dense(forward, backward, builtin):
    @recorded_op("dense", cost=builtin.cost)
    def dense(x, w, b=None, activation=None, need_dx=True):
        dtype = x.dtype
        y, cache = forward(_host(x), _host(w), np.zeros(w.shape[1], dtype) if b is None else _host(b))

        def backprop(dy):
            dx, dw, db = backward(_host(dy), cache)
            return _device(dx, dtype), _device(dw, dtype), None if b is None else _device(db, dtype)

        return _activated(activation, _device(y, dtype), backprop)

    return dense


def _conv2d(forward, backward, builtin):
    @recorded_op("conv2d", cost=builtin.cost)
    def conv2d(x, w, b=None, strides=1, padding="VALID", activation=None, need_dx=True):
        dtype = x.dtype
        bias = np.zeros(w.shape[-1], dtype) if b is None else _host(b)
        y, cache = forward(_host(x), _host(w), bias, strides, padding)

        def backprop(dy):
            dx, dw, db = backward(_host(dy), cache)
            return _device(dx, dtype), _device(dw, dtype), None if b is None else _device(db, dtype)

        return _activated(activation, _device(y, dtype), backprop)

    return conv2d


def _max_pool(forward, backward, builtin):
    @recorded_op("max_pool2d", cost=builtin.cost)
    def max_pool2d(x, ksize, strides, padding="VALID"):
        dtype = x.dtype
        y, cache = forward(_host(x), ksize, strides, padding)
        return _device(y, dtype), lambda dy: _device(backward(_host(dy), cache), dtype)

    return max_pool2d


def _avg_pool(forward, backward, builtin):
    @recorded_op("avg_pool2d", cost=builtin.cost)
    def avg_pool2d(x, ksize, strides, padding="VALID"):
        dtype = x.dtype
        y, cache = forward(_host(x), ksize, strides, padding)
        return _device(y, dtype), lambda dy: _device(backward(_host(dy), cache), dtype)

    return avg_pool2d


def _batch_norm(forward, backward, builtin):
    """Your batch norm; the batch's mean and variance (for the moving averages) computed here, not differentiated."""

    @recorded_op("batch_norm", cost=builtin.cost)
    def batch_norm(x, gamma=None, beta=None, epsilon=1e-3):
        dtype = x.dtype
        xs = _host(x)
        C = xs.shape[-1]
        ones = np.ones(C, xs.dtype)
        y, cache = forward(xs, ones if gamma is None else _host(gamma), 0 * ones if beta is None else _host(beta),
                           epsilon)
        axes = tuple(range(xs.ndim - 1))
        mean, variance = xs.mean(axis=axes), xs.var(axis=axes)

        def backprop(dy, dmean=None, dvariance=None):
            if dmean is not None or dvariance is not None:
                raise ValueError("batch_norm: the batch mean and variance are not differentiated; pass None")
            dx, dgamma, dbeta = backward(_host(dy), cache)
            return (_device(dx, dtype), None if gamma is None else _device(dgamma, dtype),
                    None if beta is None else _device(dbeta, dtype))

        return (_device(y, dtype), _device(mean, dtype), _device(variance, dtype)), backprop

    return batch_norm


def _lstm(forward, backward, builtin):
    """A sequence of your steps: the forward runs step 0, 1, ..., T-1; the backward T-1, ..., 0."""

    @recorded_op("lstm", cost=builtin.cost)
    def lstm(x, kernel, recurrent_kernel, bias, h0=None, c0=None, need_dx=True):
        dtype = x.dtype
        x, kernel, recurrent_kernel, bias = _host(x), _host(kernel), _host(recurrent_kernel), _host(bias)
        N, T, _ = x.shape
        H = recurrent_kernel.shape[0]
        h = np.zeros((N, H), dtype) if h0 is None else _host(h0)
        c = np.zeros((N, H), dtype) if c0 is None else _host(c0)
        caches, ys = [], []
        for t in range(T):
            (h, c), cache = forward(x[:, t], h, c, kernel, recurrent_kernel, bias)
            caches.append(cache)
            ys.append(h)

        def backprop(dys, dh=None, dc=None):
            dh = np.zeros((N, H), dtype) if dh is None else _host(dh)
            dc = np.zeros((N, H), dtype) if dc is None else _host(dc)
            dys = None if dys is None else _host(dys)
            dx = np.zeros(x.shape, dtype)
            dkernel, drecurrent_kernel, dbias = np.zeros_like(kernel), np.zeros_like(recurrent_kernel), np.zeros_like(bias)
            for t in reversed(range(T)):
                # h_t feeds the output ys[:, t] and the next step: its gradient is the sum of both.
                dh_t = dh if dys is None else dh + dys[:, t]
                dx[:, t], dh, dc, dk, drk, db = backward(dh_t, dc, caches[t])
                dkernel += dk  # the weights are shared by every step: their gradients add up
                drecurrent_kernel += drk
                dbias += db
            return tuple(_device(g, dtype) for g in (dx, dkernel, drecurrent_kernel, dbias, dh, dc))

        ys = np.stack(ys, axis=1)
        return (_device(ys, dtype), _device(h, dtype), _device(c, dtype)), backprop

    return lstm


def _gru(forward, backward, builtin):
    """A sequence of your GRU steps, as :func:`_lstm` is of LSTM steps."""

    @recorded_op("gru", cost=builtin.cost)
    def gru(x, kernel, recurrent_kernel, bias, h0=None):
        dtype = x.dtype
        x, kernel, recurrent_kernel, bias = _host(x), _host(kernel), _host(recurrent_kernel), _host(bias)
        N, T, _ = x.shape
        H = recurrent_kernel.shape[0]
        h = np.zeros((N, H), dtype) if h0 is None else _host(h0)
        caches, ys = [], []
        for t in range(T):
            h, cache = forward(x[:, t], h, kernel, recurrent_kernel, bias)
            caches.append(cache)
            ys.append(h)

        def backprop(dys, dh=None):
            dh = np.zeros((N, H), dtype) if dh is None else _host(dh)
            dys = None if dys is None else _host(dys)
            dx = np.zeros(x.shape, dtype)
            dkernel, drecurrent_kernel, dbias = np.zeros_like(kernel), np.zeros_like(recurrent_kernel), np.zeros_like(bias)
            for t in reversed(range(T)):
                dh_t = dh if dys is None else dh + dys[:, t]  # h_t feeds the output and the next step
                dx[:, t], dh, dk, drk, db = backward(dh_t, caches[t])
                dkernel += dk  # shared by every step: the gradients add up
                drecurrent_kernel += drk
                dbias += db
            return tuple(_device(g, dtype) for g in (dx, dkernel, drecurrent_kernel, dbias, dh))

        return (_device(np.stack(ys, axis=1), dtype), _device(h, dtype)), backprop

    return gru


def _attention(forward, backward, builtin):
    """Your attention on ``(N, Tq, d)``: the leading dimensions (batch, heads) folded into N, causal as a mask."""

    @recorded_op("attention", cost=builtin.cost)
    def attention(q, k, v, mask=None, causal=False, scale=None, dropout_rate=0.0, seed=None):
        if dropout_rate:
            raise ValueError(f"use: your attention has no dropout, and this call asks for dropout_rate={dropout_rate}: "
                             "train with dropout=0 (or without your attention)")
        d = q.shape[-1]
        if scale is not None and not math.isclose(scale, 1 / math.sqrt(d), rel_tol=1e-6):
            raise ValueError(f"use: your attention scales the scores by 1/sqrt(d) = {1 / math.sqrt(d):.6g}; this call "
                             f"asks for scale={scale}")
        dtype = q.dtype
        lead = tuple(q.shape[:-2])
        tq, tk = q.shape[-2], k.shape[-2]
        q3, k3, v3 = (_host(a).reshape(-1, *a.shape[-2:]) for a in (q, k, v))
        allowed = None
        if mask is not None:
            allowed = np.broadcast_to(_host(mask), lead + (tq, tk))
        if causal:
            tri = np.tril(np.ones((tq, tk), dtype=bool))
            allowed = tri if allowed is None else allowed & tri
        if allowed is not None:
            allowed = np.broadcast_to(allowed, lead + (tq, tk)).reshape(-1, tq, tk)
        y, cache = forward(q3, k3, v3, allowed)

        def backprop(dy):
            dq, dk, dv = backward(_host(dy).reshape(y.shape), cache)
            return tuple(_device(g.reshape(a.shape), dtype) for g, a in zip((dq, dk, dv), (q, k, v)))

        return _device(y.reshape(lead + y.shape[-2:]), dtype), backprop

    return attention


_REPLACEMENTS = {"dense": _dense, "conv2d": _conv2d, "max_pool": _max_pool, "avg_pool": _avg_pool,
                 "batch_norm": _batch_norm, "lstm_step": _lstm, "gru_step": _gru, "attention": _attention}
