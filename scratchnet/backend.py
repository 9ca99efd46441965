"""Backend selection: which array module and which kernels the ops run on.

Three backends keep one contract, :class:`scratchnet.ops.contract.Ops`:

- ``numpy``: the reference. Plain NumPy, no JIT, written to be read.
- ``numba``: the CPU default. NumPy arrays, hot kernels compiled by Numba.
- ``cupy``: the GPU default. CuPy arrays, cuBLAS GEMMs and CUDA C kernels.

This module is a leaf: it imports nothing from scratchnet. It holds

- the selection: ``use_backend`` / ``get_backend``, one current backend per thread;
- ``FACTORIES``, the table of how to build each backend, and ``register_backend``;
- the probes that say whether Numba and CuPy can run here;
- ``to_numpy`` and ``BackendUnavailable``.

Why the table is filled from outside: every op calls ``get_backend()``, so
every op module imports this one, and the reference backend is assembled
from those op modules. If this module imported the backends, even inside a
function, the two would import each other: a circle that a lazy import only
hides. So the arrow runs one way. ``scratchnet/ops/backends.py``, above the
ops, registers one factory per name here, and ``scratchnet/__init__.py``
imports it, so the table is full whenever scratchnet is imported.

Backends are built on first use, so ``import scratchnet`` imports neither
Numba nor CuPy and compiles nothing.
"""
from __future__ import annotations

import os
import threading

import numpy

BACKEND_NAMES = ("numpy", "numba", "cupy")

# Backend name -> a function of no arguments that builds that backend, called
# once, on first use. Filled by scratchnet/ops/backends.py (register_backend).
FACTORIES: dict = {}

_instances: dict = {}  # name -> the backend built from FACTORIES[name]
_state = threading.local()  # _state.backend: this thread's current backend


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here; the message says why."""


def _unknown(name):
    choices = ", ".join(map(repr, BACKEND_NAMES))
    return ValueError(f"use_backend: unknown backend {name!r}; choose one of 'auto', {choices}")


def register_backend(name, factory):
    """Say how to build backend ``name``: ``factory()`` returns it (an ``Ops``)."""
    if name not in BACKEND_NAMES:
        raise _unknown(name)
    FACTORIES[name] = factory
    _instances.pop(name, None)


def numba_unavailable_reason():
    """Return why Numba cannot be used here, or None when it can."""
    try:
        import numba  # noqa: F401
    except ImportError as e:
        return f"the numba package does not import ({e}); pip install numba"
    return None


def cupy_unavailable_reason():
    """Return why CuPy cannot be used here, or None when it can."""
    try:
        import cupy
    except Exception as e:  # ImportError, or a broken CUDA install raising at import
        return f"CuPy does not import ({type(e).__name__}: {e}); install scratchnet[gpu]"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:
        return f"CUDA runtime error ({type(e).__name__}: {e})"
    if n < 1:
        return "no CUDA device is present"
    return None


def _resolve(name):
    """The backend name ``name`` stands for: ``auto`` is cupy, else numba, else numpy."""
    if name == "auto":
        if cupy_unavailable_reason() is None:
            return "cupy"
        if numba_unavailable_reason() is None:
            return "numba"
        return "numpy"
    if name not in BACKEND_NAMES:
        raise _unknown(name)
    return name


def _instance(name):
    name = _resolve(name)
    if name not in _instances:
        if name not in FACTORIES:
            raise RuntimeError(
                f"use_backend: no factory is registered for backend {name!r}; "
                "scratchnet/ops/backends.py registers them when scratchnet is imported"
            )
        _instances[name] = FACTORIES[name]()
    return _instances[name]


def get_backend():
    """The backend the ops run on now.

    The first call picks ``$SCRATCHNET_BACKEND`` (default ``auto``).
    """
    be = getattr(_state, "backend", None)
    if be is None:
        be = _instance(os.environ.get("SCRATCHNET_BACKEND", "auto"))
        _state.backend = be
    return be


class use_backend:
    """Select a backend: ``"auto"``, ``"numpy"``, ``"numba"`` or ``"cupy"``.

    Works as a plain call, which switches for good::

        sn.use_backend("numba")

    and as a context manager, which restores the previous backend on exit::

        with sn.use_backend("numpy"):
            y, bp = sn.ops.dense(x, w)
    """

    def __init__(self, name="auto"):
        if not isinstance(name, str):
            raise TypeError(f"use_backend: name must be a string, got {type(name).__name__}")
        self._previous = getattr(_state, "backend", None)
        self.backend = _instance(name)
        _state.backend = self.backend

    @property
    def name(self):
        return self.backend.name

    def __enter__(self):
        return self.backend

    def __exit__(self, *exc):
        _state.backend = self._previous
        return False

    def __repr__(self):
        return f"use_backend({self.backend.name!r})"


def available_backends():
    """Names of the backends that can run on this machine."""
    names = ["numpy"]
    if numba_unavailable_reason() is None:
        names.append("numba")
    if cupy_unavailable_reason() is None:
        names.append("cupy")
    return names


def to_numpy(a):
    """A host (NumPy) copy of ``a``, whichever backend made it."""
    if isinstance(a, numpy.ndarray):
        return a.copy()
    get = getattr(a, "get", None)
    if get is not None and type(a).__module__.startswith("cupy"):
        return get()
    return numpy.array(a)
