"""Backend selection: which array module and which kernels the ops run on.

Three backends share one interface (:class:`scratchnet.ops.reference.ReferenceOps`):

- ``numpy``: the reference. Plain NumPy, no JIT, written to be read.
- ``numba``: the CPU default. NumPy arrays, hot kernels compiled by Numba.
- ``cupy``: the GPU default. CuPy arrays, cuBLAS GEMMs and CUDA C kernels.

Backends are built lazily on first use, so ``import scratchnet`` imports
neither Numba nor CuPy and compiles nothing.
"""
from __future__ import annotations

import os
import threading

import numpy

BACKEND_NAMES = ("numpy", "numba", "cupy")

_instances: dict = {}
_state = threading.local()


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here; the message says why."""


def _build(name):
    if name == "numpy":
        from .ops.reference import ReferenceOps

        return ReferenceOps()
    if name == "numba":
        try:
            import numba  # noqa: F401
        except ImportError as e:
            raise BackendUnavailable(f"backend 'numba' needs the numba package ({e}); pip install numba") from e
        from .kernels.numba_ops import NumbaOps

        return NumbaOps()
    if name == "cupy":
        reason = cupy_unavailable_reason()
        if reason:
            raise BackendUnavailable(f"backend 'cupy' cannot run here: {reason}")
        from .kernels.cupy_ops import CupyOps

        return CupyOps()
    raise ValueError(f"use_backend: unknown backend {name!r}; choose one of 'auto', {', '.join(map(repr, BACKEND_NAMES))}")


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
    if name == "auto":
        if cupy_unavailable_reason() is None:
            return "cupy"
        try:
            import numba  # noqa: F401

            return "numba"
        except ImportError:
            return "numpy"
    if name not in BACKEND_NAMES:
        raise ValueError(f"use_backend: unknown backend {name!r}; choose one of 'auto', {', '.join(map(repr, BACKEND_NAMES))}")
    return name


def _instance(name):
    name = _resolve(name)
    if name not in _instances:
        _instances[name] = _build(name)
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
    try:
        import numba  # noqa: F401

        names.append("numba")
    except ImportError:
        pass
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
