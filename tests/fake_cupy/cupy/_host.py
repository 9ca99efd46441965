"""How the stand-in runs a CUDA kernel: through the faithful host shim when it exists, else one thread.

``tests/cuda_host.py`` (``HostModule``) compiles the CUDA text with g++ and
OpenMP and runs every kernel with its real grid and block: threads of a
block as a team, ``__syncthreads`` a barrier, shared memory per block,
atomics atomic. Until it exists (or when ``SCRATCHNET_FAKE_CUPY_SHIM=single``
asks), the fallback below compiles the same text behind a one-thread shim:
the grid-stride loops then run serially, which checks the index math and
the arguments but not concurrency.

Either way the text and the options are exactly what ``scratchnet.kernels.cuda.compiler``
hands NVRTC.
"""
from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy

TESTS = Path(__file__).resolve().parents[2]

SHIM = r"""
#include <cmath>
using namespace std;
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__
struct shim_dim3 { unsigned x, y, z; };
static const shim_dim3 threadIdx = {0, 0, 0}, blockIdx = {0, 0, 0};
static const shim_dim3 blockDim = {1, 1, 1}, gridDim = {1, 1, 1};
static inline void __syncthreads() {}
alignas(16) static char shim_dynamic_shared[48 * 1024];
template <class T> T atomicAdd(T* p, T v) { T old = *p; *p += v; return old; }
"""


class HostCompileError(RuntimeError):
    """g++ refused the text; the message is in NVRTC's ``file(line): error`` form."""


def _faithful():
    """``tests/cuda_host.py``'s module, or None while it does not exist (or is not wanted)."""
    if os.environ.get("SCRATCHNET_FAKE_CUPY_SHIM") == "single":
        return None
    path = TESTS / "cuda_host.py"
    if not path.is_file():
        return None
    import sys

    module = sys.modules.get("cuda_host")
    if module is None:
        spec = importlib.util.spec_from_file_location("cuda_host", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["cuda_host"] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules["cuda_host"]
            raise
    return module


def shim_name():
    """Which host shim runs the kernels: ``"cuda_host (teams of threads)"`` or ``"one thread"``."""
    return "cuda_host (teams of threads)" if _faithful() is not None else "one thread"


def build(code, options):
    """A module whose ``get_function(name)`` gives ``f(grid, block, args, shared_mem)``."""
    faithful = _faithful()
    if faithful is not None:
        return faithful.HostModule(code, tuple(options))
    return SingleThreadModule(code, tuple(options))


def _cache_dir():
    d = Path(tempfile.gettempdir()) / f"scratchnet-fake-cupy-{os.getuid()}"
    d.mkdir(exist_ok=True)
    return d


class SingleThreadModule:
    """The fallback: the text compiled by g++ behind :data:`SHIM`, each kernel a plain C function."""

    def __init__(self, code, options, _retry=True):
        gxx = shutil.which("g++")
        if gxx is None:
            raise HostCompileError("the stand-in needs g++ to run CUDA kernels on the host")
        # The host compiler takes the macros and include folders; NVRTC's other flags mean nothing to it.
        flags = [o for o in options if o.startswith(("-D", "-U", "-I"))]
        key = hashlib.sha256((SHIM + code + "\0".join(flags)).encode()).hexdigest()[:24]
        so = _cache_dir() / f"{key}.so"
        if not so.exists():
            with tempfile.TemporaryDirectory() as tmp:
                (Path(tmp) / "shim.h").write_text(SHIM)
                src = Path(tmp) / "module.cu"
                # extern __shared__ T buf[]: one block at a time, so one static buffer serves every launch.
                src.write_text(re.sub(r"extern\s+__shared__\s+([\w:]+)\s+(\w+)\s*\[\s*\]\s*;",
                                      r"\1* \2 = (\1*)shim_dynamic_shared;", code))
                out = Path(tmp) / "module.so"
                cmd = [gxx, "-O1", "-shared", "-fPIC", "-x", "c++", "-include", str(Path(tmp) / "shim.h"),
                       *flags, "-o", str(out), str(src)]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    log = re.sub(r"(\S+?):(\d+):\d+: error", r"\1(\2): error", proc.stderr)
                    raise HostCompileError(log)
                os.replace(out, so)  # atomic: other processes may build the same key
        try:
            self.lib = ctypes.CDLL(str(so))
        except OSError:  # a damaged cache entry: build again
            so.unlink(missing_ok=True)
            if not _retry:
                raise
            self.__init__(code, options, _retry=False)

    def get_function(self, name):
        fn = getattr(self.lib, name)

        def launch(grid, block, args, shared_mem=0):
            fn(*(_c_arg(a) for a in args))
        return launch


_SCALARS = {
    numpy.dtype(numpy.int64): ctypes.c_longlong, numpy.dtype(numpy.uint64): ctypes.c_ulonglong,
    numpy.dtype(numpy.int32): ctypes.c_int, numpy.dtype(numpy.uint32): ctypes.c_uint,
    numpy.dtype(numpy.float32): ctypes.c_float, numpy.dtype(numpy.float64): ctypes.c_double,
    numpy.dtype(numpy.bool_): ctypes.c_bool,
}


def _c_arg(a):
    if isinstance(a, numpy.ndarray):
        return ctypes.c_void_p(a.ctypes.data)
    return _SCALARS[a.dtype](a.item())
