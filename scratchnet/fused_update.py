"""Plain SGD's fast update: the L2 penalty, the SGD step and the moving average in one pass per parameter.

:meth:`scratchnet.optimizers.Optimizer.step` runs the end of a training step
in three phases, each a pass over every parameter: the penalties add their
gradients (``g += 2 l2 w``), the rule steps (``w -= lr g``), and the moving
average follows the new weights (``shadow -= (1 - decay) (shadow - w)``).
Each pass reads and writes whole parameters, and for the MLP and LeNet seeds,
which use all three, that memory traffic is a sixth of the step.

When the combination is exactly that one (plain SGD without momentum or
clipping; L2 penalties only; a moving average whose shadows exist), and the
backend has the kernel, :meth:`scratchnet.optimizers.SGD.step` chooses to run
the three phases as one kernel call per parameter, the backend's
``sgd_l2_ema_update`` (the Numba backend runs it as one pass). It is the
optimizer's choice, not a part of the backend contract nor of the training
step: the kernel does the same arithmetic in the same order, so the weights,
gradients and shadows come out bit for bit as the three phases leave them;
only the penalty's float64 sum is added up in another order. Anything else
(momentum, Adam, an L1 term, the first step, before the shadows exist) takes
the three phases.

When the caller has summed the penalty already (a GPU step sums the weights
before its one transfer, with the loss and the checks), the kernel is
``sgd_l2_ema_apply``, which does not sum again.

Either way the gradients are checked for NaN and infinities before any weight
is updated (``Model.check_finite``, :func:`scratchnet.training.check_step`): the
kernel updates in place, so a refused step must never reach it.
"""
from __future__ import annotations

from . import recording
from .backend import get_backend
from .regularizers import L1L2

#: The profiler's row for the fused pass (``regularizer``, ``optimizer`` and ``moving_average`` otherwise).
REGION = "optimizer + l2 + moving_average"


def _l2_scale(p):
    """The L2 scale of ``p``'s penalty (0 without one), or None when the penalty is something else."""
    r = p.regularizer
    if r is None:
        return 0.0
    if type(r) is L1L2 and not r.l1:
        return r.l2
    return None


def fusable(optimizer, params, average=None):
    """Whether :func:`sgd_l2_ema_step` can stand in for ``optimizer.step(params, regularize=True, average=average)``."""
    from .optimizers import SGD

    if type(optimizer) is not SGD or optimizer.momentum or optimizer.global_clipnorm is not None:
        return False
    if not hasattr(get_backend(), "sgd_l2_ema_update"):  # a backend without the fused kernel: the three phases
        return False
    trainable = []
    for p in params:
        if p.regularizer is not None and _l2_scale(p) is None:
            return False
        if p.trainable:
            if p.grad is None and p.regularizer is not None:  # the three phases step it on its penalty alone
                return False
            if p.grad is not None and p.grad.dtype != p.value.dtype:
                return False
            trainable.append(p)
    return average is None or average.tracks(trainable)


def sgd_l2_ema_step(optimizer, params, average=None, penalty=None):
    """The penalty's gradient, the SGD step and the moving average of ``params``, one call per parameter.

    Returns the regularization penalty of ``params`` before the step (what
    the three phases would have summed). Call only when :func:`fusable`
    says so. With ``penalty`` the caller has the penalty already (a device
    step sums the weights before its one transfer, which comes before any
    update): nothing is summed, the kernel is ``sgd_l2_ema_apply``, and
    ``penalty`` is returned.
    """
    be = get_backend()
    lr = optimizer.learning_rate_now
    decay = average.decay_at() if average is not None else 0.0
    summed = penalty is not None
    total = 0.0
    with recording.region(REGION):
        for p in params:
            l2 = _l2_scale(p)
            if not p.trainable:  # not stepped, but its penalty counts
                if l2 and not summed:
                    total += p.regularizer(p.value)
                continue
            shadow = average.average(p) if average is not None else None
            if p.grad is None:  # not stepped (and without a penalty), but its average moves
                if shadow is not None:
                    be.moving_average_update(shadow, p.value, decay)
                continue
            if summed:
                be.sgd_l2_ema_apply(p.value, p.grad, lr, l2, shadow, decay)
            else:
                total += l2 * be.sgd_l2_ema_update(p.value, p.grad, lr, l2, shadow, decay)
    optimizer.iterations += 1
    return penalty if summed else total
