"""The seeds' update in one pass per parameter: L2 penalty, plain SGD and the moving average together.

A training step ends with three phases, each a pass over every parameter
(``Model.train_on_shard``): the penalties add their gradients
(``g += 2 l2 w``), the optimizer steps (``w -= lr g``), and the moving
average follows the new weights (``shadow -= (1 - decay) (shadow - w)``).
Each pass reads and writes whole parameters, and for the MLP and LeNet seeds,
which use all three, that memory traffic is a sixth of the step.

When the combination is exactly that one (plain SGD without momentum or
clipping; L2 penalties only; a moving average whose shadows exist), the
three phases are one kernel call per parameter, ``sgd_l2_ema_update``, which
the Numba backend runs as one pass. It does the same arithmetic in the same
order, so the weights, gradients and shadows come out bit for bit as the
three phases leave them; only the penalty's float64 sum is added up in
another order. Anything else (momentum, Adam, an L1 term, data-parallel
training, the first step, before the shadows exist) takes the three phases.

On a GPU (``Model._train_on_device``) the penalty's sums are taken before the
step's one transfer, with the loss and the checks, and the kernel is
``sgd_l2_ema_apply``, which does not sum again (``sgd_l2_ema_step(..., summed=True)``).

Either way the gradients are checked for NaN and infinities before any weight
is updated (``Model.check_finite``, :func:`scratchnet.training.check_step`): the
kernel updates in place, so a refused step must never reach it.
"""
from __future__ import annotations

from . import recording
from .backend import get_backend
from .optimizers import SGD
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


def fusable(model, params):
    """Whether :func:`sgd_l2_ema_step` can stand in for the three phases of ``model``'s step."""
    opt = model.optimizer
    if type(opt) is not SGD or opt.momentum or opt.global_clipnorm is not None or model.data_parallel is not None:
        return False
    if any(p.regularizer is not None and _l2_scale(p) is None for p in model.parameters()):
        return False
    if any(p.grad is not None and p.grad.dtype != p.value.dtype for p in params):
        return False
    return model.ema is None or model.ema.tracks(params)


def sgd_l2_ema_step(model, params, summed=False):
    """The penalty's gradient, the SGD step and the moving average of ``params``, one call per parameter.

    Returns the regularization penalty of the weights before the step (what
    ``model.regularization_loss()`` would have returned). Call only when
    :func:`fusable` says so. With ``summed`` the caller has the penalty
    already (a device step sums the weights before its one transfer, which
    comes before any update): nothing is summed, the kernel is
    ``sgd_l2_ema_apply``, and the return value is None.
    """
    if summed:
        return _apply(model, params)
    be = get_backend()
    opt, ema = model.optimizer, model.ema
    lr = opt.learning_rate_now
    decay = ema.decay_at() if ema is not None else 0.0
    trainable = {id(p) for p in params}
    penalty = 0.0
    with recording.region(REGION):
        for p in params:
            shadow = ema.average(p) if ema is not None else None
            l2 = _l2_scale(p)
            if p.grad is None:  # not stepped, but its penalty counts and its average moves
                penalty += l2 * be.sum_of_squares(p.value) if l2 else 0.0
                if shadow is not None:
                    be.moving_average_update(shadow, p.value, decay)
                continue
            total = be.sgd_l2_ema_update(p.value, p.grad, lr, l2, shadow, decay)
            penalty += l2 * total
        for p in model.parameters():  # penalties of the parameters that are not trained
            if id(p) not in trainable and p.regularizer is not None:
                penalty += p.regularizer(p.value)
    opt.iterations += 1
    return penalty


def _apply(model, params):
    """:func:`sgd_l2_ema_step` without the sums: launches only, no wait for the device."""
    be = get_backend()
    opt, ema = model.optimizer, model.ema
    lr = opt.learning_rate_now
    decay = ema.decay_at() if ema is not None else 0.0
    with recording.region(REGION):
        for p in params:
            shadow = ema.average(p) if ema is not None else None
            if p.grad is None:
                if shadow is not None:
                    be.moving_average_update(shadow, p.value, decay)
                continue
            be.sgd_l2_ema_apply(p.value, p.grad, lr, _l2_scale(p), shadow, decay)
    opt.iterations += 1
