"""Numba kernel for the embedding gradient: a scatter-add loop.

``numpy.add.at`` is correct but slow (it is unbuffered and generic); this loop
does the same sum, one output row per id, at memory speed.
"""
from __future__ import annotations

import numpy
from numba import njit


@njit(cache=True)
def _scatter_add_rows(ids, dY, dtable):
    # Serial on purpose: two positions with the same id write the same row,
    # so a parallel loop over positions would race.
    P, D = dY.shape
    for p in range(P):
        row = ids[p]
        for d in range(D):
            dtable[row, d] += dY[p, d]


class EmbeddingNumba:
    """Scatter-add embedding gradient (same signature as ``EmbeddingKernels``)."""

    def embedding_backward(self, ids, dY, vocab_size):
        D = dY.shape[-1]
        dtable = numpy.zeros((vocab_size, D), dtype=dY.dtype)
        _scatter_add_rows(
            numpy.ascontiguousarray(ids.reshape(-1)), numpy.ascontiguousarray(dY.reshape(-1, D)), dtable
        )
        return dtable
