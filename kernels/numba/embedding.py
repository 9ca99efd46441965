"""Numba kernel for the embedding gradient: a scatter-add loop.

``numpy.add.at`` is correct but slow (it is unbuffered and generic); this loop
does the same sum, one output row per id, at memory speed.
"""
from __future__ import annotations

import numpy
from numba import njit


@njit(cache=True)
def _scatter_add_rows(ids, dy, dtable):
    """``dtable[ids[p]] += dy[p]`` for every position ``p``: repeated ids add up."""
    # Serial on purpose: two positions with the same id write the same row,
    # so a parallel loop over positions would race.
    P, D = dy.shape
    for p in range(P):
        row = ids[p]
        for d in range(D):
            dtable[row, d] += dy[p, d]


def embedding_backward(ids, dy, vocab_size):
    """The contract's ``embedding_backward`` by :func:`_scatter_add_rows`."""
    D = dy.shape[-1]
    dtable = numpy.zeros((vocab_size, D), dtype=dy.dtype)
    _scatter_add_rows(
        numpy.ascontiguousarray(ids.reshape(-1)), numpy.ascontiguousarray(dy.reshape(-1, D)), dtable
    )
    return dtable
