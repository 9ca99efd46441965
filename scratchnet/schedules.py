"""Learning-rate schedules: callables ``step -> learning rate`` for the optimizers."""
from __future__ import annotations

import math

from ._checks import check_positive


class ExponentialDecay:
    """``initial_learning_rate * decay_rate ** (step / decay_steps)``.

    TensorFlow's ``tf.train.exponential_decay`` (and Keras's
    ``ExponentialDecay``). With ``staircase=True`` the exponent is floored,
    so the rate drops in steps every ``decay_steps`` updates, as in the MNIST
    tutorial where ``decay_steps`` is one epoch of batches.

    Parameters
    ----------
    initial_learning_rate : float
    decay_steps : float
        Steps over which the rate is multiplied by ``decay_rate`` once.
    decay_rate : float
    staircase : bool
    """

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False):
        for name, value in (("initial_learning_rate", initial_learning_rate), ("decay_steps", decay_steps),
                            ("decay_rate", decay_rate)):
            check_positive("ExponentialDecay", name, value)
        self.initial_learning_rate = float(initial_learning_rate)
        self.decay_steps = float(decay_steps)
        self.decay_rate = float(decay_rate)
        self.staircase = bool(staircase)

    def __call__(self, step):
        """The learning rate after ``step`` updates (a Python float)."""
        p = step / self.decay_steps
        if self.staircase:
            p = math.floor(p)
        return self.initial_learning_rate * self.decay_rate**p

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "decay_rate": self.decay_rate,
            "staircase": self.staircase,
        }

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"ExponentialDecay({args})"
