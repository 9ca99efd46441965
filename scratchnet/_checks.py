"""Input validation shared by the ops: errors name the op, the argument and the shapes."""
from __future__ import annotations

import contextlib
import numbers
import threading

import numpy

from .backend import to_numpy

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


def check_ids(op, be, name, ids, upper, what, floats=False):
    """``ids`` as a backend integer array with every entry in ``[0, upper)``.

    ``what`` says where the bound comes from, for the error (``"table has 10 rows"``).
    Used for embedding ids and for class labels. With ``floats=True`` float ids
    are taken too (Keras accepts a float dataset's labels), but only when each
    is a whole number in range: ``1.0`` is class 1, while ``1.7`` or NaN is a
    mistake that a cast would silently truncate. They come back as int64.

    The check is one elementwise mask and one reduction in the array's own
    module, so on a GPU it is one small kernel and one sync; the first bad
    entry is looked up only when there is one. Inside :func:`deferred_checks`
    on a device backend it does not wait: the reduction's answer joins the
    step's one transfer, and until then the bad entries read as 0, so that no
    kernel indexes out of bounds before the step raises.
    """
    ids = be.native(op, name, ids)
    xp = be.xp
    kind = ids.dtype.kind
    if kind in "iu":
        bad = (ids < 0) | (ids >= upper)
    elif kind == "f" and floats:
        # ids != floor(ids) is also true of NaN; an infinity is out of range.
        bad = (ids != xp.floor(ids)) | (ids < 0) | (ids >= upper)
    else:
        raise ValueError(f"{op}: {name} must be integers, got {ids.dtype} ({name}: {tuple(ids.shape)})")
    deferred = _deferral(xp)
    if deferred is not None:
        deferred.add(bad.any(), lambda: _bad_id(op, name, ids, bad, upper, what))
        safe = xp.where(bad, 0, ids)
        return safe.astype(xp.int64) if kind == "f" else safe
    if bad.any():
        raise _bad_id(op, name, ids, bad, upper, what)
    return ids.astype(xp.int64) if kind == "f" else ids


class DeferredChecks:
    """Checks of a device step whose answers stay on the device until the step's one transfer.

    ``flags`` are 0-d device booleans, true where a check failed; ``errors``
    the matching ``() -> Exception`` (called only on failure: finding the
    bad entry for the message may wait for the device, as an error may).
    """

    def __init__(self):
        self.flags, self.errors = [], []

    def add(self, failed, error):
        self.flags.append(failed)
        self.errors.append(error)

    def raise_first(self, failed):
        """Raise the first error whose flag (read back, in ``failed``) is set."""
        for bad, error in zip(failed, self.errors):
            if bad:
                raise error()


_deferred = threading.local()


@contextlib.contextmanager
def deferred_checks():
    """Within, :func:`check_ids` on a device backend defers its answer into the yielded :class:`DeferredChecks`.

    The caller must read every flag and call :meth:`DeferredChecks.raise_first`
    before it lets anything the checked arrays fed reach the model's state
    (``scratchnet.model.step.train_step`` does so before its updates). On the CPU backends
    checks answer at once, as outside.
    """
    previous = getattr(_deferred, "checks", None)
    _deferred.checks = checks = DeferredChecks()
    try:
        yield checks
    finally:
        _deferred.checks = previous


def _deferral(xp):
    """The open :class:`DeferredChecks` when ``xp`` is a device's module, else None."""
    checks = getattr(_deferred, "checks", None)
    return checks if checks is not None and xp is not numpy else None


def _bad_id(op, name, ids, bad, upper, what):
    """The error for the first entry of ``ids`` that ``bad`` marks: not a whole number, or out of range."""
    index, value = first_marked(ids, bad)
    at = f"found {value!s} at {name}[{format_index(index)}] ({name}: {tuple(ids.shape)})"
    whole = ids.dtype.kind in "iu" or (numpy.isfinite(value) and value == numpy.floor(value))
    if not whole:
        return ValueError(f"{op}: {name} must be whole numbers (a float is taken only when integral, as 1.0), {at}")
    return ValueError(f"{op}: {name} must lie in [0, {upper}) ({what}), {at}")


def first_marked(a, mask):
    """``(index, value)``: the index (a tuple) and the value of ``a``'s first entry where ``mask`` is true.

    For error messages only (it copies one value to the host); ``mask`` must
    have a true entry. The value is a NumPy scalar of ``a``'s dtype, so it
    prints as written (``1.7``, not float32's ``1.7000000476837158``).
    """
    i = int(mask.reshape(-1).argmax())  # the first True
    index = tuple(int(k) for k in numpy.unravel_index(i, tuple(a.shape)))
    return index, numpy.asarray(to_numpy(a.reshape(-1)[i]))[()]


def format_index(index):
    """``(0, 1)`` as ``"0, 1"``, for ``name[0, 1]`` in a message."""
    return ", ".join(str(k) for k in index)


def check_count(op, name, value, minimum=1, none=False):
    """``value`` as an int of at least ``minimum`` (0 or 1); ``None`` passes when ``none``.

    A bool or a float is refused, even ``2.0``: a batch size or a number of
    steps is never a float, and ``int()`` would truncate ``2.5`` silently.
    """
    if none and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        kind = "a positive int" if minimum == 1 else "a non-negative int"
        raise ValueError(f"{op}: {name} must be {kind}{' or None' if none else ''}, got {value!r}")
    return int(value)


def check_bool(op, name, value):
    """``value`` must be a bool (``numpy.bool_`` too): ``1`` or ``"yes"`` is more likely a misplaced argument."""
    if not isinstance(value, (bool, numpy.bool_)):
        raise ValueError(f"{op}: {name} must be a bool, got {value!r}")
    return bool(value)


def check_padding(op, padding, explicit=False):
    """``"SAME"`` or ``"VALID"`` (any case); with ``explicit``, also an explicit padding, returned as
    ``((top, bottom), (left, right))`` (checked by :func:`scratchnet.ops.shapes.explicit_pads`)."""
    if explicit and not isinstance(padding, str):
        from .ops.shapes import explicit_pads

        top, bottom, left, right = explicit_pads(op, padding)
        return ((top, bottom), (left, right))
    if not isinstance(padding, str) or padding.upper() not in ("SAME", "VALID"):
        also = ", an int, a pair or ((top, bottom), (left, right))" if explicit else ""
        raise ValueError(f"{op}: padding must be 'SAME' or 'VALID'{also}, got {padding!r}")
    return padding.upper()
