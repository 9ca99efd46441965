"""What an exercise is made of: an :class:`Exercise`, the cases it is graded on, the mistakes it recognizes.

The exercises themselves are one module each beside this one (``dense.py``,
``gru_step.py``, ...); :mod:`scratchnet.exercises.problems` collects them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Case:
    """One set of inputs an exercise is graded on."""

    name: str
    make: object  # rng -> tuple of float64 arrays, in the order of Exercise.inputs
    settings: dict = field(default_factory=dict)  # strides, padding, ksize: fixed, not differentiated
    ties: bool = False  # windows with equal maxima (max-pool): the first-maximum rule is graded
    hint: tuple = ()  # (nudge, closer, formula): shown when this case fails against the reference
    # False where finite differences cannot judge: a maximum tied in two overlapping windows may be the
    # first of one and not of the other, and then no one-sided derivative equals the (right) gradient.
    finite_differences: bool = True


@dataclass(frozen=True)
class Mistake:
    """A mistake students make, recognized from the gradients it produces.

    ``fits(evidence)`` looks at an :class:`Evidence` (the inputs, the given
    forward's cache, the incoming gradients, yours and the reference op's) and
    says whether yours are what this mistake gives; ``hints`` are its three
    levels (nudge, closer, formula), the nudge naming the mistake.
    """

    name: str
    fits: object  # Evidence -> bool
    hints: tuple


@dataclass
class Evidence:
    """What a :class:`Mistake` is recognized from, on one case and one set of incoming gradients."""

    inputs: dict  # input name -> array
    settings: dict
    cache: tuple  # the given forward's cache on these inputs
    dout: dict  # output name -> its incoming gradient
    yours: dict  # gradient name ("dx") -> yours
    right: dict  # gradient name -> the reference op's

    @staticmethod
    def close(a, b):
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        return a.shape == b.shape and bool(np.allclose(a, b, rtol=1e-7, atol=1e-10 * max(1.0, float(np.abs(b).max(initial=0)))))

    def right_one(self, name):
        """Whether your ``name`` (``"dx"``) equals the reference op's."""
        return self.close(self.yours[name], self.right[name])


@dataclass(frozen=True)
class Exercise:
    """A backward pass to write."""

    name: str
    title: str
    inputs: tuple  # the forward's array inputs, in order; the backward returns their gradients in this order
    outputs: tuple  # the forward's outputs; the backward receives their gradients
    make_op: object  # (backward, forward, **settings) -> fn(*inputs) -> (y, backprop)
    make_reference: object  # (**settings) -> the same through sn.ops
    cases: tuple
    hints: dict = field(default_factory=dict)  # gradient name -> (nudge, closer, formula) when it is wrong
    forward: object = None  # the given forward pass, in scratchnet.exercises.forward
    mistakes: tuple = ()  # Mistakes the report names when their gradients are yours

    @property
    def gradients(self):
        return tuple(f"d{name}" for name in self.inputs)

    @property
    def signature(self):
        upstream = ", ".join(f"d{o}" for o in self.outputs)
        grads = self.gradients[0] if len(self.gradients) == 1 else f"({', '.join(self.gradients)})"
        return f"{self.name}_backward({upstream}, cache) -> {grads}"


def _normal(rng, *shape, scale=1.0):
    return rng.normal(scale=scale, size=shape)

