"""In-place parameter updates: the arithmetic of the optimizers, the L2 penalty and the moving averages.

These are not ops (nothing is differentiated through them); they are the
kernels that :mod:`scratchnet.optimizers`, :mod:`scratchnet.regularizers`
and :mod:`scratchnet.ema` run once per parameter per step, and the one
reduction an L2 penalty needs (``sum_of_squares``). Each updates its
first argument in place. Written as NumPy expressions, every term of an update
is a temporary array the size of the parameter, and each temporary is one
more pass over memory; the Numba backend (``kernels/numba/updates.py``) runs
each update as a single pass instead. The rules themselves are derived where
they are used (``scratchnet/optimizers.py``, ``scratchnet/ema.py``).

Notation: ``w`` a parameter's value, ``g`` its gradient, ``m``, ``v`` Adam's
slots, ``shadow`` its moving average; all of one shape and dtype.
"""
from __future__ import annotations


class UpdateReference:
    """Reference kernels for the in-place updates, one NumPy expression each."""

    def scaled_add(self, y, x, alpha):
        """``y += alpha * x``: plain SGD's step (``alpha = -lr``), an L2 penalty's gradient (``alpha = 2 l2``)."""
        y += alpha * x

    def moving_average_update(self, shadow, value, decay):
        """``shadow -= (1 - decay) * (shadow - value)``."""
        shadow -= (1 - decay) * (shadow - value)

    def sum_of_squares(self, x):
        """``sum(x**2)`` (an L2 penalty's sum, a global norm's square), as a Python float, accumulated in float64:
        float32 sums of many squares lose digits."""
        return float(self.sum_of_squares_on_device(x))

    def sum_of_squares_on_device(self, x):
        """:meth:`sum_of_squares` as a 0-d float64 array of ``xp`` (a NumPy scalar here): on a GPU, no wait."""
        x = x.astype(self.xp.float64)
        return (x * x).sum()

    # Not in the contract (scratchnet/ops/contract.py): plain SGD's fused update is the SGD optimizer's choice
    # (scratchnet/fused_update.py). These are its reference, which the fast backends fall back on.

    def sgd_l2_ema_update(self, w, g, lr, l2, shadow, decay):
        """The three updates of plain SGD with L2 and a moving average, one after the other (the Numba and CuPy
        backends fuse them into one pass):
        the L2 penalty's gradient ``g += 2 l2 w``, plain SGD ``w -= lr g``, the moving average of ``w``.
        Returns ``sum(w**2)`` of ``w`` before the step, the penalty's sum, when ``l2`` is set, and 0.0 without
        one: the sum is a reduction to a Python float, which on a GPU is a wait for the device, and the caller
        multiplies it by ``l2`` anyway."""
        total = self.sum_of_squares(w) if l2 else 0.0
        self.sgd_l2_ema_apply(w, g, lr, l2, shadow, decay)
        return total

    def sgd_l2_ema_apply(self, w, g, lr, l2, shadow, decay):
        """:meth:`sgd_l2_ema_update` without the sum (a device step has summed the weights before its transfer)."""
        if l2:
            self.scaled_add(g, w, 2 * l2)
        self.scaled_add(w, g, -lr)
        if shadow is not None:
            self.moving_average_update(shadow, w, decay)

    def sgd_momentum_update(self, w, g, m, lr, momentum, nesterov):
        """Keras's SGD with momentum (``scratchnet/optimizers.py`` derives it): ``m = momentum m - lr g``;
        ``w += m``, or ``w += momentum m - lr g`` with Nesterov."""
        m *= momentum
        m -= lr * g
        if nesterov:
            w += momentum * m - lr * g
        else:
            w += m

    def momentum_update(self, w, g, a, lr, momentum, nesterov):
        """TensorFlow 1's momentum: ``a = momentum a + g``; ``w -= lr a``, or ``w -= lr (g + momentum a)`` with Nesterov."""
        a *= momentum
        a += g
        if nesterov:
            w -= lr * (g + momentum * a)
        else:
            w -= lr * a

    def adam_update(self, w, g, m, v, alpha, beta_1, beta_2, epsilon):
        """``m += (1 - beta_1) (g - m)``; ``v += (1 - beta_2) (g^2 - v)``; ``w -= alpha m / (sqrt(v) + epsilon)``."""
        xp = self.xp
        m += (1 - beta_1) * (g - m)
        v += (1 - beta_2) * (g * g - v)
        w -= alpha * m / (xp.sqrt(v) + epsilon)
