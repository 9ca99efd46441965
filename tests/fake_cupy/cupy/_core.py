"""The stand-in's array: a NumPy array in a wrapper that behaves like device memory.

Why a wrapper and not a ``numpy.ndarray`` subclass: ``numpy.asarray`` of a
subclass quietly returns the base array, so a host leak would pass unseen.
A wrapper that defines ``__array__`` to raise (CuPy's own message) makes
every silent conversion fail as it fails on a GPU, and everything that
really is a device-to-host copy goes through one function, :func:`sync`,
which counts it (and raises under ``cupyx.allow_synchronize(False)``).

What counts as a synchronisation, as on a GPU: ``.get()``,
``cupy.asnumpy``, scalar conversions (``float``, ``int``, ``bool``,
``.item()``, ``.tolist()``, formatting, ``repr``), and the explicit waits of
``cupy.cuda`` (``Stream.synchronize``, ``Event.synchronize``,
``Device.synchronize``). Scalar conversions are allowed, since CuPy allows
them, but each is counted and named, and the guard turns them into errors.
"""
from __future__ import annotations

import contextlib
import threading
import traceback

import numpy as _np

_MESSAGE = ("Implicit conversion to a NumPy array is not allowed. "
            "Please use `.get()` to construct a NumPy array explicitly.")


def _stats():
    """The package's counters (``cupy.stats``)."""
    import sys

    return sys.modules[__package__].stats


class DeviceSynchronized(RuntimeError):
    """Raised when a synchronisation happens under ``cupyx.allow_synchronize(False)``."""


# --- the synchronisation counter --------------------------------------------

class SyncLog:
    """The device-to-host synchronisations seen while it was open: ``(kind, where)`` pairs.

    ``where`` is the first frame outside the stand-in and NumPy, as
    ``file:line (function)``, so a test's failure names the line that synced.
    """

    def __init__(self):
        self.events = []

    @property
    def count(self):
        return len(self.events)

    def by_kind(self):
        out = {}
        for kind, _ in self.events:
            out[kind] = out.get(kind, 0) + 1
        return out

    def __repr__(self):
        lines = "\n".join(f"  {kind:10s} {where}" for kind, where in self.events)
        return f"<SyncLog: {self.count} synchronisations>\n{lines}"


_state = threading.local()
_logs = []  # the open SyncLogs (all threads: the counter is per process, as a device is)
#: Every synchronisation since import, whatever was listening.
total = {"count": 0}


def _allowed():
    return getattr(_state, "allow", True)


@contextlib.contextmanager
def allow_synchronize(allow):
    """``cupyx.allow_synchronize``: with ``False``, any synchronisation raises :class:`DeviceSynchronized`."""
    previous = _allowed()
    _state.allow = bool(allow)
    try:
        yield
    finally:
        _state.allow = previous


def _where():
    here = __file__.rsplit("/", 2)[0]
    for frame in reversed(traceback.extract_stack()[:-2]):
        f = frame.filename
        if f.startswith(here) or "/numpy/" in f or f.endswith("contextlib.py"):
            continue
        return f"{f}:{frame.lineno} ({frame.name})"
    return "?"


def sync(kind):
    """Record one device-to-host synchronisation of ``kind``; raise if the guard is on."""
    where = _where()
    if not _allowed():
        raise DeviceSynchronized(f"device synchronisation ({kind}) at {where} while cupyx.allow_synchronize(False)")
    total["count"] += 1
    for log in _logs:
        log.events.append((kind, where))


@contextlib.contextmanager
def count_syncs():
    """Count the synchronisations inside the block: ``with count_syncs() as log: ...; log.count``."""
    log = SyncLog()
    _logs.append(log)
    try:
        yield log
    finally:
        _logs.remove(log)


# --- wrapping and unwrapping --------------------------------------------------

def _wrap(x, keep=None):
    """A NumPy result -> the stand-in's value: arrays and NumPy scalars become device arrays.

    A reduction on a GPU returns a 0-d device array, not a host scalar, so a
    NumPy scalar result becomes a 0-d array here too. ``keep`` maps the ids of
    unwrapped inputs to their wrappers, so ``out=a`` returns ``a`` itself.
    """
    if isinstance(x, _np.ndarray):
        if keep is not None and id(x) in keep:
            return keep[id(x)]
        return ndarray._from(x)
    if isinstance(x, _np.generic):
        return ndarray._from(_np.asarray(x))
    if isinstance(x, tuple):
        return tuple(_wrap(v, keep) for v in x)
    if isinstance(x, list):
        return [_wrap(v, keep) for v in x]
    return x


def _unwrap(x, keep=None, host_ok=False, what="argument"):
    """The stand-in's values -> NumPy's; a NumPy array where device memory is expected is a TypeError.

    ``host_ok`` is for the functions that copy host data to the device
    (``cupy.asarray``, ``cupy.array``) and for indices.
    """
    if isinstance(x, ndarray):
        if keep is not None:
            keep[id(x._a)] = x
        return x._a
    if isinstance(x, _np.ndarray) and not host_ok:
        raise TypeError(f"Unsupported type {type(x)} ({what}): a NumPy array where a CuPy array is expected "
                        "(a missing cupy.asarray: on a GPU this is an error)")
    if isinstance(x, (tuple, list)):
        return type(x)(_unwrap(v, keep, host_ok, what) for v in x)
    if isinstance(x, dict):
        return {k: _unwrap(v, keep, host_ok, what) for k, v in x.items()}
    return x


def call(fn, args, kwargs, host_ok=False, name=None):
    """Run NumPy's ``fn`` on unwrapped arguments and wrap what it returns."""
    keep = {}
    a = _unwrap(args, keep, host_ok, name or getattr(fn, "__name__", "argument"))
    k = _unwrap(kwargs, keep, host_ok, name or getattr(fn, "__name__", "argument"))
    return _wrap(fn(*a, **k), keep)


# --- the array ----------------------------------------------------------------

class _Flags:
    def __init__(self, flags):
        self.c_contiguous = flags.c_contiguous
        self.f_contiguous = flags.f_contiguous
        self.owndata = flags.owndata

    def __getitem__(self, key):
        return {"C_CONTIGUOUS": self.c_contiguous, "F_CONTIGUOUS": self.f_contiguous, "OWNDATA": self.owndata}[key]


class MemoryPointer:
    """``a.data``: what a device pointer is to CuPy (here the host address of the NumPy buffer)."""

    def __init__(self, ptr):
        self.ptr = ptr


# Attributes of a NumPy array that are plain data (no array comes back, no copy to the host).
_PLAIN = {"shape", "dtype", "ndim", "size", "itemsize", "nbytes", "strides"}
# NumPy methods that would copy to the host without .get(): CuPy has no such methods, or syncs in them.
_HOST = {"tobytes", "tofile", "dump", "dumps", "ctypes", "__array_interface__", "__array_struct__"}


class ndarray:
    """A device array of the stand-in; ``a._a`` is the NumPy array that holds its memory."""

    __slots__ = ("_a", "__weakref__")
    __array_priority__ = 100
    __hash__ = None

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        self._a = _np.empty(shape, dtype=dtype, order=order)
        _stats()["allocations"] += 1

    @classmethod
    def _from(cls, a):
        obj = object.__new__(cls)
        obj._a = a
        if a.base is None:  # new memory, not a view of another array: what a GPU would allocate
            _stats()["allocations"] += 1
        return obj

    # -- plain attributes
    def __getattr__(self, name):
        if name.startswith("__") or name in _HOST:
            raise AttributeError(f"cupy.ndarray has no attribute {name!r} (the stand-in refuses host-only APIs)")
        value = getattr(self._a, name)
        if name in _PLAIN:
            return value
        if callable(value):
            def method(*args, **kwargs):
                return call(value, args, kwargs, name=f"ndarray.{name}")
            method.__name__ = name
            return method
        return _wrap(value)

    @property
    def flags(self):
        return _Flags(self._a.flags)

    @property
    def T(self):
        return _wrap(self._a.T)

    @property
    def data(self):
        return MemoryPointer(self._a.ctypes.data)

    @property
    def device(self):
        from .cuda import Device

        return Device(0)

    # -- the explicit ways to the host
    def get(self, stream=None, order="C", out=None, blocking=True):
        """Device -> host: a NumPy copy (one synchronisation)."""
        sync("get")
        host = _np.array(self._a, order=order, copy=True)
        if out is not None:
            out[...] = host
            return out
        return host

    def set(self, arr, stream=None):
        """Host -> device: copy a NumPy array of the same shape and dtype in (no synchronisation)."""
        arr = _np.asarray(arr)
        if arr.shape != self._a.shape or arr.dtype != self._a.dtype:
            raise ValueError(f"set: shape and dtype must match ({arr.shape}, {arr.dtype} vs {self._a.shape}, {self._a.dtype})")
        self._a[...] = arr

    # -- the implicit ones: CuPy does them, and each is a synchronisation
    def __array__(self, dtype=None, copy=None):
        raise TypeError(_MESSAGE)

    def _scalar(self, kind):
        sync(kind)
        if self._a.size != 1:
            raise TypeError("only size-1 arrays can be converted to Python scalars")
        return self._a.reshape(()).item()

    def __float__(self):
        return float(self._scalar("float()"))

    def __int__(self):
        return int(self._scalar("int()"))

    def __index__(self):
        if self._a.dtype.kind not in "iub":
            raise TypeError("only integer arrays can be used as an index")
        return int(self._scalar("index"))

    def __complex__(self):
        return complex(self._scalar("complex()"))

    def __bool__(self):
        return bool(self._scalar("bool()"))

    def item(self, *args):
        sync("item()")
        return self._a.item(*args)

    def tolist(self):
        sync("tolist()")
        return self._a.tolist()

    def __repr__(self):
        sync("repr")
        return repr(self._a)

    def __str__(self):
        sync("str")
        return str(self._a)

    def __format__(self, spec):
        if not spec:
            return str(self)
        return format(self._scalar("format"), spec)

    # -- sequences and indexing
    def __len__(self):
        return len(self._a)

    def __iter__(self):
        for row in self._a:
            yield _wrap(row)

    def __getitem__(self, key):
        return _wrap(self._a[_unwrap(key, host_ok=True, what="index")])

    def __setitem__(self, key, value):
        self._a[_unwrap(key, host_ok=True, what="index")] = _unwrap(value, host_ok=True, what="value")

    # -- NumPy's protocols: NumPy functions on device arrays run "on the device", as CuPy's do
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return call(getattr(ufunc, method), inputs, kwargs, name=f"numpy.{ufunc.__name__}")

    def __array_function__(self, func, types, args, kwargs):
        return call(func, args, kwargs, name=f"numpy.{func.__name__}")

    def __copy__(self):
        return _wrap(self._a.copy())

    def __deepcopy__(self, memo):
        return _wrap(self._a.copy())

    def __reduce__(self):
        # Pickling a device array copies it to the host, as CuPy's does.
        sync("pickle")
        return (_rebuild, (self._a.copy(),))


def _rebuild(a):
    return ndarray._from(a)


def _binary(name):
    def op(self, other):
        return _wrap(getattr(self._a, name)(_unwrap(other, what=f"operand of {name}")))
    op.__name__ = name
    return op


def _inplace(name):
    def op(self, other):
        getattr(self._a, name)(_unwrap(other, what=f"operand of {name}"))
        return self
    op.__name__ = name
    return op


def _unary(name):
    def op(self):
        return _wrap(getattr(self._a, name)())
    op.__name__ = name
    return op


for _n in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or", "xor",
           "lshift", "rshift", "divmod"):
    setattr(ndarray, f"__{_n}__", _binary(f"__{_n}__"))
    setattr(ndarray, f"__r{_n}__", _binary(f"__r{_n}__"))
    if _n != "divmod":
        setattr(ndarray, f"__i{_n}__", _inplace(f"__i{_n}__"))
for _n in ("lt", "le", "eq", "ne", "gt", "ge"):
    setattr(ndarray, f"__{_n}__", _binary(f"__{_n}__"))
for _n in ("neg", "pos", "abs", "invert"):
    setattr(ndarray, f"__{_n}__", _unary(f"__{_n}__"))
del _n

ndarray.__module__ = "cupy"
