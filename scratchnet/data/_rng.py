"""The random generator the data loaders shuffle with."""
from __future__ import annotations

import numpy

from .. import random as sn_random


def generator(seed=None):
    """``default_rng(seed)`` when a seed is given, else scratchnet's global generator.

    Drawing from ``scratchnet.random.generator()`` means ``sn.random.seed(s)``
    makes every shuffle of a run repeatable.

    Parameters
    ----------
    seed : int, optional

    Returns
    -------
    numpy.random.Generator
    """
    if seed is not None:
        return numpy.random.default_rng(seed)
    return sn_random.generator()
