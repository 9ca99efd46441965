"""Input validation shared by the ops: errors name the op, the argument and the shapes."""
from __future__ import annotations

import numbers

import numpy

FLOAT_DTYPES = (numpy.float32, numpy.float64)


def as_float_arrays(op, be, **named):
    """Return the named arrays as backend arrays of one float dtype.

    ``None`` passes through (an absent bias). Lists and scalars are converted
    (to float32 unless they already are float64 arrays). An array of the wrong
    kind for the backend (a NumPy array in a CuPy computation, or the reverse)
    is an error, never a silent copy.
    """
    out = []
    dtype = None
    first = None
    for name, a in named.items():
        if a is None:
            out.append(None)
            continue
        a = be.native(op, name, a)
        if a.dtype not in FLOAT_DTYPES:
            raise ValueError(f"{op}: {name} must be float32 or float64, got {a.dtype} ({name}: {tuple(a.shape)})")
        if dtype is None:
            dtype, first = a.dtype, name
        elif a.dtype != dtype:
            raise ValueError(
                f"{op}: {name} is {a.dtype} but {first} is {dtype}; all inputs must share one dtype"
            )
        out.append(a)
    return out


def check_rank(op, name, a, rank, layout=None):
    """``a`` must have ``rank`` dimensions; ``layout`` (``"[N, C]"``) goes into the error."""
    if a.ndim != rank:
        hint = f" {layout}" if layout else ""
        raise ValueError(f"{op}: {name} must have rank {rank}{hint}, got shape {tuple(a.shape)}")


def check_grad(op, dy, y, be, name="dy"):
    """The incoming gradient ``dy`` of a backprop closure, checked against the output ``y`` it matches.

    ``dy`` must have ``y``'s shape; it is cast to ``y``'s dtype.
    """
    dy = be.native(op, name, dy)
    if tuple(dy.shape) != tuple(y.shape):
        raise ValueError(f"{op}: {name} must have the output's shape {tuple(y.shape)}, got {tuple(dy.shape)}")
    if dy.dtype != y.dtype:
        dy = dy.astype(y.dtype)
    return dy


def check_positive(op, name, value):
    """``value`` must be a real number above 0 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"{op}: {name} must be a positive number, got {value!r}")


def check_fraction(op, name, value):
    """``value`` must be a real number in [0, 1) (not a bool): a rate, a momentum, a beta."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ValueError(f"{op}: {name} must be a number in [0, 1), got {value!r}")


def scalar_grad(op, be, dloss, name="dloss"):
    """The incoming gradient of a scalar loss (a number or a one-element array) as a Python float."""
    if isinstance(dloss, numbers.Number):
        return float(dloss)
    dloss = be.native(op, name, dloss)
    if dloss.size != 1 or dloss.ndim > 1:
        raise ValueError(f"{op}: {name} must be a scalar, got shape {tuple(dloss.shape)}")
    return float(dloss.reshape(()))


def pair(op, name, v):
    """An int or a pair of ints -> a pair of positive ints."""
    if isinstance(v, (int, numpy.integer)):
        v = (int(v), int(v))
    try:
        v = tuple(int(i) for i in v)
    except TypeError:
        raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {v!r}") from None
    if len(v) != 2 or min(v) < 1:
        raise ValueError(f"{op}: {name} must be a positive int or a pair of positive ints, got {v!r}")
    return v


def check_ids(op, be, name, ids, upper, what):
    """``ids`` as a backend integer array with every entry in ``[0, upper)``.

    ``what`` says where the bound comes from, for the error (``"table has 10 rows"``).
    Used for embedding ids and for class labels.
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


def check_padding(op, padding):
    if not isinstance(padding, str) or padding.upper() not in ("SAME", "VALID"):
        raise ValueError(f"{op}: padding must be 'SAME' or 'VALID', got {padding!r}")
    return padding.upper()
