"""``Shard``: which rows of the global batch this rank computes on.

Data parallelism splits one global batch of ``N`` rows over ``R`` ranks: rank
``r`` takes rows ``r*N//R`` to ``(r+1)*N//R``. Anything random that a layer
draws per example must not depend on ``R``, so it is drawn for the *global*
batch, exactly as one process would draw it, and each rank keeps its own
rows. The shard travels as the forward pass's ``training`` argument (it is
true, as ``training=True`` is), which every layer passes on to the layers
inside it; nothing is global::

    shard = Shard.of(N, rank, R)
    logits, backprop = model.forward(shard.take(x), training=shard)

    # inside Dropout.call:
    if isinstance(training, Shard):          # the global mask, these rows of it
        y, backprop = ops.dropout(x, rate, global_shape=training.global_shape(x), offset=training.start)

A rank whose share of a short final batch is empty (``N < R``) computes on
row 0 with ``weight`` 0: it takes part in every collective of the step, and
its gradient counts for nothing.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Shard:
    """Rows ``start:stop`` of a global batch of ``size`` rows; ``weight`` is this rank's share of it.

    ``weight`` is ``(stop - start) / size``, or 0 for a borrowed row (see the
    module's docstring); the ranks' weights sum to 1. Pass it to a forward
    pass as ``training=shard`` (see the module's docstring).
    """

    size: int
    start: int
    stop: int
    weight: float

    @classmethod
    def of(cls, size, rank, world_size):
        """Rank ``rank``'s rows of a global batch of ``size`` rows split over ``world_size`` ranks."""
        if size < 1:
            raise ValueError(f"Shard.of: a global batch needs at least one row, got {size}")
        start, stop = rank * size // world_size, (rank + 1) * size // world_size
        if stop == start:
            return cls(size, 0, 1, 0.0)
        return cls(size, start, stop, (stop - start) / size)

    @property
    def rows(self):
        """How many rows this rank computes on."""
        return self.stop - self.start

    def take(self, a):
        """This rank's rows of ``a``, an array of the global batch (first axis), or of each array of a list
        (a model's several inputs)."""
        if isinstance(a, (list, tuple)) and a and all(hasattr(t, "shape") for t in a):
            return [t[self.start:self.stop] for t in a]
        return a[self.start:self.stop]

    def global_shape(self, x):
        """The shape of the global batch of which ``x`` holds this rank's rows."""
        if x.shape[0] != self.rows:
            raise ValueError(f"Shard: expected this rank's {self.rows} rows ({self.start}:{self.stop} of {self.size}), "
                             f"got an array of shape {tuple(x.shape)}")
        return (self.size,) + tuple(x.shape[1:])
