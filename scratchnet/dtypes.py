"""The default float dtype of new layers: ``sn.floatx()`` and ``sn.set_floatx()``, as in Keras.

A layer created without ``dtype=`` takes the dtype of the model it is put in
(``sn.Sequential([...], dtype="float64")``), or else this default::

    sn.set_floatx("float64")          # from now on
    with sn.set_floatx("float64"):    # only inside the block
        model = sn.Sequential([sn.layers.Dense(10)])
"""
from __future__ import annotations

import threading

import numpy

#: The float dtypes scratchnet computes in.
FLOAT_DTYPES = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))

_state = threading.local()
_default = numpy.dtype(numpy.float32)


def float_dtype(where, dtype):
    """``dtype`` as a numpy dtype, float32 or float64; any other is a ValueError naming ``where``."""
    try:
        d = numpy.dtype(dtype)
    except TypeError:
        d = None
    if d not in FLOAT_DTYPES:
        raise ValueError(f"{where}: dtype must be 'float32' or 'float64', got {dtype!r}")
    return d


def floatx():
    """The default dtype of new layers, as a string (``"float32"`` unless set)."""
    return getattr(_state, "floatx", _default).name


class set_floatx:
    """Set the default dtype of new layers: ``"float32"`` or ``"float64"``.

    A plain call sets it for good (on every thread that has not set its own);
    used as a context manager, it sets it for this thread until the block ends.
    """

    def __init__(self, dtype):
        global _default
        d = float_dtype("set_floatx", dtype)
        self._previous = getattr(_state, "floatx", None)
        self._previous_default = _default
        _default = d
        _state.floatx = d

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        global _default
        _default = self._previous_default
        if self._previous is None:
            del _state.floatx
        else:
            _state.floatx = self._previous
        return False
