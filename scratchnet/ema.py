"""Exponential moving averages of parameters ("shadow variables"), as ``tf.train.ExponentialMovingAverage``.

Averaging the weights over the last few hundred steps smooths out the noise
of the final updates; evaluating with the averages often scores a little
better than the raw weights (the MNIST tutorial's "average model"). The
averages never feed back into training: they are read at evaluation time,
either swapped in for a ``with`` block (:meth:`ExponentialMovingAverage.averaged`)
or restored from a checkpoint straight into the weights
(:meth:`ExponentialMovingAverage.variables_to_restore`).
"""
from __future__ import annotations

import contextlib
import numbers

from .backend import get_backend, to_numpy


class ExponentialMovingAverage:
    """Keep a shadow copy of each parameter that moves towards it at every :meth:`apply`.

    ``shadow -= (1 - decay) * (shadow - value)``, where ``decay`` is the
    constructor's, or ``min(decay, (1 + n) / (10 + n))`` when a number of
    updates ``n`` is known: early in training the shadows then follow the
    weights quickly instead of remembering the random initialisation.

    Parameters
    ----------
    decay : float in [0, 1]
        Typically 0.99 to 0.9999.
    num_updates : int or callable, optional
        ``n`` above, as TensorFlow's ``num_updates`` (usually the global
        step). A callable is called at every :meth:`apply`, so
        ``num_updates=lambda: model.step`` follows training. ``None`` (the
        default) uses ``decay`` as it is, unless :meth:`apply` is given ``n``.
    name : str
        Suffix of the shadows' checkpoint names: ``"dense/kernel/ExponentialMovingAverage"``.
    """

    def __init__(self, decay, num_updates=None, name="ExponentialMovingAverage"):
        if isinstance(decay, bool) or not isinstance(decay, numbers.Real) or not 0 <= decay <= 1:
            raise ValueError(f"ExponentialMovingAverage: decay must be a number in [0, 1], got {decay!r}")
        if num_updates is not None and not callable(num_updates):
            _check_count("ExponentialMovingAverage", num_updates)
        self.decay = float(decay)
        self.num_updates = num_updates
        self.name = name
        # parameter name -> shadow (a backend array)
        self._shadows = {}

    def decay_at(self, num_updates=None):
        """The decay one :meth:`apply` uses, given its ``num_updates`` argument."""
        n = num_updates
        if n is None:
            n = self.num_updates() if callable(self.num_updates) else self.num_updates
        if n is None:
            return self.decay
        _check_count("ExponentialMovingAverage.apply", n)
        return min(self.decay, (1 + n) / (10 + n))

    def apply(self, params, num_updates=None):
        """Move the shadow of every parameter in ``params`` towards its current value.

        A parameter seen for the first time gets a shadow equal to its value,
        so its first update changes nothing (TensorFlow 2's eager behaviour).
        ``num_updates`` overrides the constructor's for this call.
        """
        decay = self.decay_at(num_updates)
        be = get_backend()
        xp = be.xp
        for p in params:
            shadow = self._shadows.get(p.name)
            if shadow is None:
                self._shadows[p.name] = xp.array(p.value, copy=True)
                continue
            if shadow.shape != p.value.shape:
                raise ValueError(
                    f"ExponentialMovingAverage.apply: {p.name!r} has shape {tuple(p.value.shape)} "
                    f"but its shadow has {tuple(shadow.shape)}"
                )
            be.moving_average_update(shadow, p.value, decay)  # shadow -= (1 - decay) * (shadow - value)

    def tracks(self, params):
        """Whether every parameter of ``params`` has a shadow yet (each gets one at its first :meth:`apply`)."""
        return all(p.name in self._shadows for p in params)

    def average(self, param):
        """The shadow of ``param`` (a backend array; not a copy)."""
        shadow = self._shadows.get(param.name)
        if shadow is None:
            known = ", ".join(sorted(self._shadows)) or "none yet"
            raise ValueError(f"ExponentialMovingAverage.average: no average for {param.name!r} (averaged: {known})")
        return shadow

    def average_name(self, param):
        """The name a checkpoint stores ``param``'s shadow under: ``"<name>/ExponentialMovingAverage"``."""
        name = param if isinstance(param, str) else param.name
        return f"{name}/{self.name}"

    @contextlib.contextmanager
    def averaged(self, model):
        """Evaluate with the averages: swap them into ``model``'s parameters for the block.

        ``model`` is a model or an iterable of parameters; those without a
        shadow keep their value. The trained values come back on exit, even
        if the block raises.
        """
        params = list(_parameters(model))
        saved = []
        try:
            for p in params:
                shadow = self._shadows.get(p.name)
                if shadow is not None:
                    saved.append((p, p.value))
                    # A copy, so that an update inside the block cannot reach the shadow.
                    p.value = shadow.copy()
            yield model
        finally:
            for p, value in saved:
                p.value = value

    def variables_to_restore(self, model):
        """``{checkpoint name: parameter}`` that loads the averages into the weights.

        As TensorFlow's: each trainable parameter is restored from its
        shadow's name, any other (non-trainable) from its own name. Pass the
        result as ``mapping`` to :meth:`scratchnet.Checkpoint.restore`.
        """
        return {self.average_name(p) if p.trainable else p.name: p for p in _parameters(model)}

    def state_dict(self):
        """``{parameter name: shadow as numpy.ndarray}``."""
        return {name: to_numpy(s) for name, s in self._shadows.items()}

    def load_state_dict(self, state):
        """Replace all shadows with those of a :meth:`state_dict`."""
        xp = get_backend().xp
        self._shadows = {name: xp.array(a) for name, a in state.items()}

    def astype(self, dtype):
        """Convert every shadow to ``dtype`` in place (``Model.astype`` calls it); returns the average."""
        self._shadows = {name: s.astype(dtype) for name, s in self._shadows.items()}
        return self

    def __repr__(self):
        return f"ExponentialMovingAverage(decay={self.decay!r}, num_updates={self.num_updates!r})"


def _parameters(model):
    return model.parameters() if hasattr(model, "parameters") else model


def _check_count(op, n):
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ValueError(f"{op}: num_updates must be a non-negative int, got {n!r}")
