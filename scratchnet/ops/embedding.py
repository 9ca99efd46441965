"""Embedding lookup: ``y[p] = table[ids[p]]``, and its scatter-add gradient.

Notation::

    V, D   rows of the table (vocabulary size) and their width
    p      a position of ``ids`` (any shape; y has shape ids.shape + (D,))

Forward: a row copy per position, ``y[p, d] = table[ids[p], d]``.

Backward. ``y[p, d]`` depends on ``table[v, d]`` only when ``ids[p] == v``,
with slope 1, so::

    dtable[v, d] = sum_p [ids[p] == v] * dy[p, d]

a scatter-add of the rows of ``dy`` into the rows their ids name. An id that
appears at several positions receives the SUM of their gradients, and a row
no id picked receives zeros. ``dtable[ids] += dy`` would be wrong: with
repeated ids NumPy keeps only one of the writes, so the kernels use
``add.at`` (reference), a serial loop (Numba) or ``atomicAdd`` (CUDA).
"""
from __future__ import annotations

from .._checks import as_float_arrays, check_grad, check_ids, check_rank
from ..backend import get_backend
from ..recording import Cost, nbytes
from ..recording import op as recorded_op


class EmbeddingReference:
    """Reference kernel for the embedding gradient."""

    def embedding_backward(self, ids, dy, vocab_size):
        """``dtable[ids[p]] += dy[p]`` for every position ``p``, repeated ids adding up."""
        xp = self.xp
        D = dy.shape[-1]
        dtable = xp.zeros((vocab_size, D), dtype=dy.dtype)
        # add.at accumulates repeated ids; ``dtable[ids] += dy`` would keep only
        # the last write to a row that appears twice.
        xp.add.at(dtable, ids.reshape(-1), dy.reshape(-1, D))
        return dtable


def embedding_cost(ids, table):
    """Bytes of :func:`embedding`: a gather of one row per id forward, a scatter-add backward."""
    rows = ids.size * table.shape[1] * table.dtype.itemsize
    return Cost(flops=0.0, bytes=2.0 * rows, backward_flops=float(ids.size * table.shape[1]),
                backward_bytes=2.0 * rows + nbytes(table))


@recorded_op("embedding", cost=embedding_cost)
def embedding(ids, table):
    """Look up one row of ``table`` per id.

    Parameters
    ----------
    ids : integer array of any shape
        Each entry in ``[0, V)``.
    table : array of shape (V, D)

    Returns
    -------
    y : array of shape ids.shape + (D,)
        ``y[p] = table[ids[p]]``
    backprop : callable
        ``backprop(dy) -> dtable`` of shape (V, D); rows picked several times
        receive the sum of their gradients, rows never picked receive zeros.
    """
    be = get_backend()
    (table,) = as_float_arrays("embedding", be, table=table)
    check_rank("embedding", "table", table, 2, "[V, D]")
    V = table.shape[0]
    ids = check_ids("embedding", be, "ids", ids, V, f"table has {V} rows")
    y = table[ids]

    def backprop(dy):
        dy = check_grad("embedding", dy, y, be)
        return be.embedding_backward(ids, dy, V)

    return y, backprop
