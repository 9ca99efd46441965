"""Sequence masks for the recurrent ops (Keras's RNN ``mask``): checked, and the outputs Keras makes of them.

``mask[n, t]`` False marks step ``t`` of sequence ``n`` as padding. The recurrent
ops (:func:`~scratchnet.ops.lstm`, :func:`~scratchnet.ops.gru`,
:func:`~scratchnet.ops.simple_rnn`) carry the state through a masked step, and
output there what Keras's ``backend.rnn`` outputs: the previous step's output,
zeros before the first step. Every output of these cells is the state ``h``
itself, so that is ``h_t`` (carried) once the sequence has had an unmasked
step, and 0 before it::

    y_t = seen_t ? h_t : 0,      seen_t = m_0 or ... or m_t

(the two differ only while the carried state is a nonzero ``h0``).
"""
from __future__ import annotations

import numpy


def sequence_mask(op, be, mask, N, T):
    """``mask`` as a boolean (N, T) array of the backend, or None; a clear ValueError for anything else."""
    if mask is None:
        return None
    mask = be.native(op, "mask", mask)
    if mask.dtype != numpy.bool_:
        if mask.dtype.kind not in "iu":
            raise ValueError(f"{op}: mask must be boolean (True: a real step, False: padding), got {mask.dtype} "
                             f"{tuple(mask.shape)}")
        mask = mask != 0
    if tuple(mask.shape) != (N, T):
        raise ValueError(f"{op}: mask must have shape (N, T) = ({N}, {T}) to match the input, got "
                         f"{tuple(mask.shape)}")
    return mask


def seen(xp, mask):
    """``seen[n, t]``: whether sequence n has an unmasked step at or before t (N, T)."""
    return xp.cumsum(mask, axis=1) > 0


def keras_outputs(xp, ys, mask):
    """``(ys, dys_of)``: every step's output as Keras's (:mod:`this module's <scratchnet.ops.masks>` rule)
    from the carried states ``ys`` (N, T, H), and the map of its gradient back onto them."""
    if mask is None:
        return ys, (lambda dys: dys)
    keep = seen(xp, mask)[..., None]
    return xp.where(keep, ys, 0), (lambda dys: None if dys is None else xp.where(keep, dys, 0))
