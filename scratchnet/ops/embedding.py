"""Embedding lookup: ``Y[...] = table[ids[...]]``, and its scatter-add gradient."""
from __future__ import annotations

from .._checks import as_float_arrays, check_grad, check_rank
from ..backend import get_backend


class EmbeddingKernels:
    """Reference kernel for the embedding gradient."""

    def embedding_backward(self, ids, dY, vocab_size):
        """Scatter-add the output gradient into the rows the ids picked.

        Parameters
        ----------
        ids : integer array of any shape
        dY : array of shape ids.shape + (D,)
        vocab_size : int, V

        Returns
        -------
        dtable : array of shape (V, D)
            ``dtable[v] = sum of dY[p] over positions p with ids[p] == v``.
        """
        xp = self.xp
        D = dY.shape[-1]
        dtable = xp.zeros((vocab_size, D), dtype=dY.dtype)
        # add.at accumulates repeated ids; ``dtable[ids] += dY`` would keep only
        # the last write to a row that appears twice.
        xp.add.at(dtable, ids.reshape(-1), dY.reshape(-1, D))
        return dtable


def check_ids(op, be, name, ids, upper, what):
    """``ids`` as a backend integer array with every entry in ``[0, upper)``.

    ``what`` says where the bound comes from, for the error (``"table has 10 rows"``).
    """
    ids = be.native(op, name, ids)
    if ids.dtype.kind not in "iu":
        raise ValueError(f"{op}: {name} must be integers, got {ids.dtype} ({name}: {tuple(ids.shape)})")
    if ids.size:
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= upper:
            bad = lo if lo < 0 else hi
            raise ValueError(
                f"{op}: {name} must lie in [0, {upper}) ({what}), found {bad} ({name}: {tuple(ids.shape)})"
            )
    return ids


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
    Y = table[ids]

    def backprop(dY):
        dY = check_grad("embedding", dY, Y, be)
        return be.embedding_backward(ids, dY, V)

    return Y, backprop
