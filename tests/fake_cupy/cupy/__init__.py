"""A NumPy-backed stand-in for the part of CuPy that scratchnet uses, so the cupy backend runs in CI.

Put ``tests/fake_cupy`` first on ``sys.path`` (``SCRATCHNET_FAKE_CUPY=1`` makes
``tests/conftest.py`` do it) and ``import cupy`` finds this package. What it
holds, and why each part looks the way it does:

- the array namespace: every name NumPy has, running NumPy on the arrays'
  host memory; arrays are :class:`cupy.ndarray` (``_core.py``), a wrapper whose
  silent conversion to NumPy raises as CuPy's does, and which counts every
  device-to-host synchronisation (:func:`count_syncs`);
- ``asarray``/``array`` copy host data in, ``asnumpy``/``.get()`` copy it out
  (each a counted synchronisation);
- ``RawModule``/``RawKernel``: the CUDA text and options compiled for the
  host (``_host.py``), cached on ``(code, options)`` as CuPy's kernel cache
  is, so a test can see what that key misses;
- ``cupy.cuda``: one device, streams and events (a host clock), the
  runtime's queries, the compiler's exception; no NCCL.

It stands in for the GPU's semantics, not its speed: nothing here is timed.
"""
from __future__ import annotations

import numpy as _np

from . import _core, _host, cuda
from ._core import SyncLog, count_syncs, ndarray  # noqa: F401

__version__ = "14.0.0+stand-in"
#: Says which machine this is to code that wants to know (bench/gpu_check.sh prints it).
STAND_IN = True
#: Counters a test reads: compiles and cache hits of RawModule, get_function calls, launches, and
#: allocations (device arrays made with memory of their own; views are not counted).
stats = {"compiles": 0, "cache_hits": 0, "get_function": 0, "launches": 0, "allocations": 0}


# --- host <-> device ---------------------------------------------------------

def asarray(a, dtype=None, order=None, *, blocking=False):
    """Host data -> the device (a copy), or a device array as it is (converted when ``dtype`` differs)."""
    if isinstance(a, ndarray):
        b = _np.asarray(a._a, dtype=dtype, order=order)
        return a if b is a._a else ndarray._from(b)
    return ndarray._from(_np.array(_core._unwrap(a, host_ok=True), dtype=dtype, order=order or "K", copy=True))


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False):
    """Like NumPy's ``array``, into device memory; a host array is copied in."""
    src = obj._a if isinstance(obj, ndarray) else _core._unwrap(obj, host_ok=True)
    out = _np.array(src, dtype=dtype, copy=True if copy is None else copy, order=order, ndmin=ndmin)
    if isinstance(obj, ndarray) and out is obj._a:
        return obj
    return ndarray._from(out)


def asanyarray(a, dtype=None, order=None):
    return asarray(a, dtype, order)


def ascontiguousarray(a, dtype=None):
    """CuPy's takes a device array only: a host array here is a missing transfer."""
    if not isinstance(a, ndarray):
        raise TypeError(f"ascontiguousarray: Unsupported type {type(a)}; expected cupy.ndarray")
    b = _np.ascontiguousarray(a._a, dtype=dtype)
    return a if b is a._a else ndarray._from(b)


def asnumpy(a, stream=None, order="C", out=None, blocking=True):
    """Device -> host (one synchronisation); a host array comes back as it is."""
    if isinstance(a, ndarray):
        return a.get(order=order, out=out)
    return _np.asarray(a, order=order)


def get_array_module(*args):
    """``cupy`` when any argument is a device array, else ``numpy``."""
    import sys

    return sys.modules[__name__] if any(isinstance(a, ndarray) for a in args) else _np


# --- kernels -----------------------------------------------------------------

# (code, options) -> the built module: CuPy's kernel cache is keyed so, on disk, across processes.
_kernel_cache = {}


class RawKernel:
    """One kernel of a :class:`RawModule`, called as CuPy's: ``kernel(grid, block, args, shared_mem=0)``."""

    def __init__(self, module, name):
        self.module, self.name = module, name
        self._fn = module._built().get_function(name)
        # What the GPU's kernel attributes say (bench/gpu_check.sh prints them); the host has no registers.
        self.attributes = {"num_regs": 0, "local_size_bytes": 0, "shared_size_bytes": 0,
                           "max_threads_per_block": 1024, "const_size_bytes": 0}
        self.num_regs = 0
        self.local_size_bytes = 0
        self.max_threads_per_block = 1024

    def __call__(self, grid, block, args, *, shared_mem=0, stream=None, enable_cooperative_groups=False):
        grid, block = _dims("grid", grid), _dims("block", block)
        if block[0] * block[1] * block[2] > 1024 or block[0] > 1024 or block[2] > 64:
            raise ValueError(f"{self.name}: block {block} exceeds the device's limits (1,024 threads, z <= 64)")
        if grid[0] >= 1 << 31 or grid[1] > 65535 or grid[2] > 65535:
            raise ValueError(f"{self.name}: grid {grid} exceeds the device's limits")
        if not 0 <= int(shared_mem) <= 48 * 1024:
            raise ValueError(f"{self.name}: {shared_mem} bytes of dynamic shared memory (at most 48 KiB)")
        if not isinstance(args, tuple):
            raise TypeError(f"{self.name}: args must be a tuple, got {type(args).__name__}")
        host = []
        for i, a in enumerate(args):
            if isinstance(a, ndarray):
                host.append(a._a)
            elif isinstance(a, _np.generic):
                host.append(a)
            else:
                # A Python number's C type would be CuPy's guess: the kernels take exact NumPy scalars.
                raise TypeError(f"{self.name}: argument {i} is {type(a).__name__}; pass a cupy array or a NumPy scalar")
        stats["launches"] += 1
        self._fn(grid, block, tuple(host), shared_mem=int(shared_mem))


def _dims(what, d):
    d = tuple(int(v) for v in (d if isinstance(d, tuple) else (d,)))
    if not 1 <= len(d) <= 3 or min(d) < 1:
        raise ValueError(f"{what} must be 1 to 3 positive sizes, got {d}")
    return d + (1,) * (3 - len(d))


class RawModule:
    """CUDA text compiled on first use (``compile()`` or ``get_function``), cached on ``(code, options)``."""

    def __init__(self, code=None, path=None, options=(), backend="nvrtc", translate_cucomplex=False,
                 enable_cooperative_groups=False, name_expressions=None, jitify=False):
        if code is None:
            raise ValueError("the stand-in's RawModule takes code=, as scratchnet passes it")
        self.code, self.options, self.backend = code, tuple(options), backend
        self._module = None

    def _built(self):
        if self._module is None:
            key = (self.code, self.options)
            if key in _kernel_cache:
                stats["cache_hits"] += 1
            else:
                stats["compiles"] += 1
                try:
                    _kernel_cache[key] = _host.build(self.code, self.options)
                except Exception as e:  # noqa: BLE001 (the shim's compile error, whatever its class)
                    raise cuda.compiler.CompileException(str(e), self.code, "module", self.options) from e
            self._module = _kernel_cache[key]
        return self._module

    def compile(self, log_stream=None):
        self._built()

    def get_function(self, name):
        """A new :class:`RawKernel` each call, as CuPy's (so a caller should keep it)."""
        stats["get_function"] += 1
        return RawKernel(self, name)


# --- everything else: NumPy's namespace, on device arrays ---------------------

class _Ufunc:
    """A NumPy ufunc on device arrays, with its methods (``add.at``, ``maximum.reduce``)."""

    def __init__(self, ufunc):
        self._u = ufunc
        self.__name__ = ufunc.__name__

    def __call__(self, *args, **kwargs):
        return _core.call(self._u, args, kwargs, name=f"cupy.{self.__name__}")

    def __getattr__(self, name):
        value = getattr(self._u, name)
        if callable(value):
            return lambda *a, **k: _core.call(value, a, k, name=f"cupy.{self.__name__}.{name}")
        return value


class _Namespace:
    """A NumPy submodule (``random``, ``linalg``, ``fft``) on device arrays."""

    def __init__(self, module):
        self._m = module

    def __getattr__(self, name):
        return _convert(getattr(self._m, name), f"{self._m.__name__}.{name}")


def _convert(value, name):
    if isinstance(value, _np.ufunc):
        return _Ufunc(value)
    if isinstance(value, type) or not callable(value):
        if type(value).__name__ == "module":
            return _Namespace(value)
        return value

    def fn(*args, **kwargs):
        return _core.call(value, args, kwargs, name=f"cupy.{name}")
    fn.__name__ = name
    fn.__doc__ = getattr(value, "__doc__", None)
    return fn


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    try:
        value = getattr(_np, name)
    except AttributeError:
        raise AttributeError(f"the CuPy stand-in has no {name!r} (NumPy has none either)") from None
    converted = _convert(value, name)
    globals()[name] = converted  # looked up once
    return converted
