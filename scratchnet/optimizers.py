"""Optimizers: turn each parameter's gradient into an in-place update of its value.

The optimizer owns the whole update of a training step. One call of
:meth:`Optimizer.step` does, in order:

1. with ``regularize=True``, sum the parameters' penalties (the number the
   step reports with its loss) and add each penalty's gradient to its
   parameter's ``.grad`` (as PyTorch's optimizers own ``weight_decay``);
2. collect ``(p.grad, p)`` for the trainable parameters that have a gradient;
3. if ``global_clipnorm`` is set, scale all gradients together so that their
   global norm ``sqrt(sum_p sum(g_p ** 2))`` is at most ``global_clipnorm``
   (``tf.clip_by_global_norm``);
4. update each ``p.value`` in place with the rule of the optimizer, using the
   learning rate of the current iteration, then count the iteration;
5. given ``average`` (an :class:`~scratchnet.ExponentialMovingAverage`),
   move it towards the new weights.

How is the optimizer's own choice: plain :class:`SGD` with L2 penalties and
a moving average runs the five as one pass per parameter, where the backend
has that kernel (:mod:`scratchnet.fused_update`), bit for bit the same.

The update rules are those of Keras 3 (``keras/src/optimizers/*.py``), so a
scratchnet optimizer and a Keras one fed the same gradients produce the same
weights to float32 rounding. :class:`Momentum` is the exception on purpose:
it is TensorFlow 1's ``tf.train.MomentumOptimizer``, which the tutorials use.

Per-parameter state ("slots": Adam's ``m`` and ``v``, a momentum buffer) is
created on first use and kept by parameter name, so that it can be saved in a
checkpoint (:meth:`Optimizer.state_dict`) and restored into a fresh optimizer
before it has taken a step.
"""
from __future__ import annotations

import math

import numpy

from . import fused_update, recording
from ._checks import check_fraction, check_positive
from ._config import Configurable
from .backend import get_backend, to_numpy


class Optimizer(Configurable):
    """Base class: learning rate, clipping, iteration count and slots.

    Subclasses name their slots in ``slot_names`` and implement
    :meth:`update` for one parameter.

    Parameters
    ----------
    learning_rate : float or callable
        A constant, or a schedule ``step -> float`` (for example
        :class:`scratchnet.schedules.ExponentialDecay`) called with the number
        of iterations done so far, as Keras does.
    global_clipnorm : float, optional
        Clip all gradients together to this global norm before the update.
    """

    slot_names: tuple = ()

    def __init__(self, learning_rate, global_clipnorm=None):
        name = type(self).__name__
        if not callable(learning_rate):
            check_positive(name, "learning_rate", learning_rate)
        if global_clipnorm is not None:
            check_positive(name, "global_clipnorm", global_clipnorm)
        self.learning_rate = learning_rate
        self.global_clipnorm = global_clipnorm
        self.iterations = 0
        # parameter name -> {slot name: backend array}
        self._slots = {}

    @property
    def learning_rate_now(self):
        """The learning rate the next update will use, as a Python float."""
        if callable(self.learning_rate):
            return float(self.learning_rate(self.iterations))
        return float(self.learning_rate)

    def step(self, params, regularize=False, average=None, penalty=None):
        """Apply each trainable parameter's ``.grad`` to its ``.value``: the whole update of a training step.

        Parameters without a gradient (``grad is None``) or not trainable
        are left alone. Without ``regularize`` the gradients themselves are
        never modified.

        Parameters
        ----------
        params : list of Parameter
            A model's parameters (all of them: the frozen ones' penalties count).
        regularize : bool
            First add each parameter's penalty gradient to its ``.grad``
            (a trainable parameter without a gradient gets the penalty's alone).
        average : ExponentialMovingAverage, optional
            Moved towards the trainable parameters' new values after the update.
        penalty : float, optional
            The penalty, already summed by the caller (a device step reads it
            with its loss); it is not summed again.

        Returns
        -------
        float or None
            With ``regularize``: the sum of the penalties of ``params`` on the
            weights before the update (``penalty`` when given).
        """
        if regularize:
            with recording.region("regularizer"):
                if penalty is None:
                    penalty = float(sum(p.regularizer(p.value) for p in params if p.regularizer is not None))
                add_penalty_gradients(params)
        trainable = [p for p in params if p.trainable]
        with recording.region("optimizer"):
            self.apply_gradients([(p.grad, p) for p in trainable if p.grad is not None])
        if average is not None:
            with recording.region("moving_average"):
                average.apply(trainable)
        return penalty

    def apply_gradients(self, grads_and_params):
        """Apply explicit gradients: ``[(grad, param), ...]``; counts one iteration."""
        pairs = [(g, p) for g, p in grads_and_params if g is not None]
        op = f"{type(self).__name__}.apply_gradients"
        seen = set()
        for g, p in pairs:
            if p.name in seen:
                raise ValueError(f"{op}: parameter {p.name!r} appears twice; names must be unique")
            seen.add(p.name)
            if tuple(g.shape) != tuple(p.value.shape):
                raise ValueError(
                    f"{op}: gradient for {p.name!r} has shape {tuple(g.shape)} but the parameter has {tuple(p.value.shape)}"
                )
        grads = [g for g, _ in pairs]
        if self.global_clipnorm is not None:
            grads = clip_by_global_norm(grads, self.global_clipnorm)
        lr = self.learning_rate_now
        for g, (_, p) in zip(grads, pairs):
            self.update(p, g.astype(p.value.dtype, copy=False), lr, self._slots_for(p))
        self.iterations += 1

    def update(self, p, g, lr, slots):
        """Update ``p.value`` in place from the gradient ``g``; ``slots`` are this parameter's state."""
        raise NotImplementedError

    def _slots_for(self, p):
        slots = self._slots.get(p.name)
        if slots is None:
            xp = get_backend().xp
            slots = {s: xp.zeros_like(p.value) for s in self.slot_names}
            self._slots[p.name] = slots
        return slots

    def state_dict(self):
        """The optimizer's state as a flat ``{str: numpy.ndarray}``.

        ``"iterations"`` holds the step count; each slot is stored under
        ``"<parameter name>:<slot name>"`` (``"dense/kernel:m"``).
        """
        state = {"iterations": numpy.array(self.iterations, dtype=numpy.int64)}
        for pname, slots in self._slots.items():
            for s, a in slots.items():
                state[f"{pname}:{s}"] = to_numpy(a)
        return state

    def check_state_dict(self, state):
        """Validate a :meth:`state_dict` without changing anything: ``(iterations, {parameter: {slot: array}})``.

        Raises ValueError naming the first malformed entry.
        """
        op = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state, dict) or "iterations" not in state:
            keys = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"{op}: the state has no 'iterations' entry (keys: {keys})")
        iterations = numpy.asarray(state["iterations"])
        if iterations.shape != () or iterations.dtype.kind not in "iu" or int(iterations) < 0:
            raise ValueError(f"{op}: 'iterations' must be a non-negative integer scalar, "
                             f"got {iterations.dtype} of shape {iterations.shape}")
        slots = {}
        for key, a in state.items():
            if key == "iterations":
                continue
            pname, sep, s = key.rpartition(":")
            if not sep or s not in self.slot_names:
                raise ValueError(
                    f"{op}: unexpected entry {key!r}; {type(self).__name__} has slots {list(self.slot_names)}"
                )
            if getattr(a, "dtype", None) is None or a.dtype.kind != "f":
                raise ValueError(f"{op}: slot {key!r} must be a float array, got {getattr(a, 'dtype', type(a).__name__)}")
            slots.setdefault(pname, {})[s] = a
        for pname, d in slots.items():
            if set(d) != set(self.slot_names):
                raise ValueError(
                    f"{op}: parameter {pname!r} has slots {sorted(d)} but {type(self).__name__} needs {list(self.slot_names)}"
                )
        return int(iterations), slots

    def load_state_dict(self, state):
        """Restore a :meth:`state_dict`; all keys are checked before anything changes."""
        iterations, slots = self.check_state_dict(state)
        xp = get_backend().xp
        self._slots = {pname: {s: xp.array(a) for s, a in d.items()} for pname, d in slots.items()}
        self.iterations = iterations

    def astype(self, dtype):
        """Convert every slot to ``dtype`` in place (``Model.astype`` calls it); returns the optimizer."""
        self._slots = {pname: {s: a.astype(dtype) for s, a in slots.items()} for pname, slots in self._slots.items()}
        return self

    def get_config(self):
        """The constructor arguments (a schedule appears as its repr)."""
        lr = self.learning_rate
        return {"learning_rate": lr if not callable(lr) else repr(lr), "global_clipnorm": self.global_clipnorm}


class SGD(Optimizer):
    """Gradient descent, optionally with (Nesterov) momentum, as Keras's ``SGD``.

    Without momentum: ``w -= lr * g``. With momentum ``mu``, the velocity
    ``m`` holds the learning rate already::

        m = mu * m - lr * g
        w += m                    (plain)
        w += mu * m - lr * g      (nesterov)
    """

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, global_clipnorm=None):
        super().__init__(learning_rate, global_clipnorm)
        check_fraction("SGD", "momentum", momentum)
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.slot_names = ("momentum",) if self.momentum else ()

    def step(self, params, regularize=False, average=None, penalty=None):
        """:meth:`Optimizer.step`; plain SGD with L2 penalties (and a moving average) as one pass per parameter
        where it can (:func:`scratchnet.fused_update.fusable`): the same arithmetic, the same result."""
        if regularize and fused_update.fusable(self, params, average):
            return fused_update.sgd_l2_ema_step(self, params, average, penalty)
        return super().step(params, regularize, average, penalty)

    def update(self, p, g, lr, slots):
        if not self.momentum:
            get_backend().scaled_add(p.value, g, -lr)  # w -= lr * g, in one pass
            return
        # The lines of the class docstring, in one pass over w, g and m on the Numba and CuPy backends.
        get_backend().sgd_momentum_update(p.value, g, slots["momentum"], lr, self.momentum, self.nesterov)

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


class Momentum(Optimizer):
    """TensorFlow 1's ``tf.train.MomentumOptimizer``: the accumulator holds raw gradients.

    ::

        a = mu * a + g
        w -= lr * a                   (plain)
        w -= lr * (g + mu * a)        (nesterov)

    With a constant learning rate this is :class:`SGD` with momentum
    (``m = -lr * a``). They differ once the learning rate changes: here a new
    rate rescales the whole accumulated velocity at once, in SGD it only
    applies to new gradients.
    """

    slot_names = ("momentum",)

    def __init__(self, learning_rate, momentum=0.9, nesterov=False, global_clipnorm=None):
        super().__init__(learning_rate, global_clipnorm)
        check_fraction("Momentum", "momentum", momentum)
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)

    def update(self, p, g, lr, slots):
        # The lines of the class docstring, in one pass over w, g and a on the CuPy backend.
        get_backend().momentum_update(p.value, g, slots["momentum"], lr, self.momentum, self.nesterov)

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    """Adam, as Keras 3 (and TF 1's ``AdamOptimizer``) computes it.

    At iteration ``t`` (1 for the first update)::

        m = m + (1 - beta_1) * (g - m)
        v = v + (1 - beta_2) * (g**2 - v)
        alpha = lr * sqrt(1 - beta_2**t) / (1 - beta_1**t)
        w -= alpha * m / (sqrt(v) + epsilon)

    The bias correction is folded into the step size, so ``epsilon`` is added
    to ``sqrt(v)`` rather than to ``sqrt(v_hat)``: the "epsilon hat" of the
    Adam paper's section 2. TF 1 defaults to ``epsilon=1e-8``, Keras to 1e-7.
    """

    slot_names = ("m", "v")

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, global_clipnorm=None):
        super().__init__(learning_rate, global_clipnorm)
        check_fraction("Adam", "beta_1", beta_1)
        check_fraction("Adam", "beta_2", beta_2)
        check_positive("Adam", "epsilon", epsilon)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)

    def update(self, p, g, lr, slots):
        t = self.iterations + 1
        alpha = lr * math.sqrt(1 - self.beta_2**t) / (1 - self.beta_1**t)
        # The three lines of the class docstring, in one pass over w, g, m and v.
        get_backend().adam_update(p.value, g, slots["m"], slots["v"], alpha, self.beta_1, self.beta_2, self.epsilon)

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}


class RMSProp(Optimizer):
    """RMSProp, as Keras 3 computes it (epsilon inside the square root).

    ::

        v = rho * v + (1 - rho) * g**2
        step = lr * g / sqrt(v + epsilon)
        w -= step                         (momentum 0)
        b = momentum * b + step; w -= b   (momentum > 0)
    """

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, global_clipnorm=None):
        super().__init__(learning_rate, global_clipnorm)
        check_fraction("RMSProp", "rho", rho)
        check_fraction("RMSProp", "momentum", momentum)
        check_positive("RMSProp", "epsilon", epsilon)
        self.rho, self.momentum, self.epsilon = float(rho), float(momentum), float(epsilon)
        self.slot_names = ("velocity", "momentum") if self.momentum else ("velocity",)

    def update(self, p, g, lr, slots):
        xp = get_backend().xp
        v = slots["velocity"]
        v *= self.rho
        v += (1 - self.rho) * (g * g)
        increment = lr * g / xp.sqrt(v + self.epsilon)
        if self.momentum:
            b = slots["momentum"]
            b *= self.momentum
            b += increment
            increment = b
        p.value -= increment

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "momentum": self.momentum, "epsilon": self.epsilon}


def add_penalty_gradients(params):
    """Add each penalty's gradient to its trainable parameter's ``.grad`` (in place, without a temporary)."""
    for p in params:
        if p.regularizer is None or not p.trainable:
            continue
        add_gradient = getattr(p.regularizer, "add_gradient", None)
        if p.grad is not None and add_gradient is not None:
            add_gradient(p.value, p.grad)  # Regularizer.add_gradient
        else:
            p.accumulate(p.regularizer.gradient(p.value))


def global_norm(grads):
    """``sqrt(sum_i sum(g_i ** 2))`` over a list of arrays, as a Python float (accumulated in float64)."""
    be = get_backend()
    return math.sqrt(sum(be.sum_of_squares(g) for g in grads))


def clip_by_global_norm(grads, clip_norm):
    """Scale ``grads`` by ``clip_norm / max(global_norm, clip_norm)`` (new arrays).

    As ``tf.clip_by_global_norm``: gradients whose global norm is within the
    limit come back unchanged (as copies); a non-finite norm makes every
    gradient NaN, so that a diverged step is visible rather than hidden.
    """
    be = get_backend()
    if be.xp is not numpy and grads:
        # On a GPU the norm stays on the device (no wait per gradient): the same float64 arithmetic.
        xp = be.xp
        norm = xp.sqrt(sum(be.sum_of_squares_on_device(g) for g in grads))
        scale = xp.where(xp.isfinite(norm), clip_norm / xp.maximum(norm, clip_norm), xp.nan)
        return [g * scale.astype(g.dtype) for g in grads]
    norm = global_norm(grads)
    if not math.isfinite(norm):
        scale = math.nan
    else:
        scale = clip_norm / max(norm, clip_norm)
    return [g * scale for g in grads]
