"""The BLAS behind the Numba backend's matrix products, and how many threads it runs: this module owns both.

Which BLAS: Intel oneMKL when it is installed, else NumPy's OpenBLAS. Every
GEMM of the Numba backend (the dense op's, the convolutions', the LSTM's
input and weight products) goes through :func:`matmul`. MKL is the BLAS that
PyTorch's CPU wheels link, so ``bench/`` compares like with like, and it is
faster per core on the seed models' thin products (figures in
``bench/RESULTS.md``, "Kernel design notes"). ``pip install scratchnet[mkl]``
(``make`` installs it) brings it as a wheel.

How many threads: one per call. The cores are shared out by
``kernels/runtime/threads.py``, which runs one part of each op per core; a
BLAS thread pool of its own would spin on the cores the next part wants.
So MKL is loaded sequential, and NumPy's OpenBLAS (found among the loaded
libraries, ``/proc/self/maps``, its count set through ``ctypes``) is held to
one thread for the duration of each split (:class:`single_threaded`).

MKL's results (``MKL_Set_Threading_Layer(SEQUENTIAL)``) do not depend on the
operands' alignment or on the run (``tests/test_blas.py`` checks both), so a
run repeats bit for bit as with OpenBLAS; they differ from OpenBLAS's in the
last bits, as any two BLAS do.

Which BLAS: the environment variable ``SCRATCHNET_BLAS``, read once, at the
first product (or the first :func:`name` or :func:`describe`); the choice
then holds for the whole process:

- ``auto`` (the default): MKL when the ``mkl`` wheel is installed, else
  OpenBLAS. The choice depends on what is installed, never on what the
  process has imported so far, so every process of a run (a resumed one, an
  MPI rank, a killed and restarted one) multiplies through the same BLAS and
  rounds the same way;
- ``mkl``: MKL, and an error naming the variable when it cannot be loaded;
- ``openblas``: NumPy's BLAS, whatever is installed.

:func:`describe` names the one in use and, under ``auto``, why MKL was not
(the profiler and ``bench/`` print it).

**PyTorch in the same process.** ``libmkl_rt`` loads MKL's core with
``RTLD_GLOBAL``, and PyTorch's CPU library carries a static MKL whose
symbols it exports and binds when it is loaded. Imported after scratchnet
has loaded MKL, PyTorch binds them to scratchnet's sequential MKL instead,
and its own matrix products run on one thread (its results are unchanged).
Imported before, it keeps its own: import ``torch`` first in a process that
uses both (``bench/`` does). An earlier version waited under ``auto`` for an
installed PyTorch to be imported, which made the BLAS, and so the last bits
of a run, depend on import order: a run resumed in a fresh process could
then differ from the uninterrupted one.
**Thin products on a CPU not Intel's.** Under ``auto`` on an AMD (or any
non-Intel) CPU, a product with a side under ``THIN`` (32) runs through NumPy's
OpenBLAS even when MKL is in use: MKL's kernels for them ran 1.4 to 4 times
slower than OpenBLAS's there (:func:`_thin_to_openblas`).

A product MKL cannot take as it lies (an integer dtype, mixed dtypes, a
matrix with no unit stride) runs through ``numpy.matmul``, which computes the
same product.
"""
from __future__ import annotations

import ctypes
import functools
import os
import threading
from importlib import metadata

import numpy

#: The environment variable that chooses the BLAS.
ENV = "SCRATCHNET_BLAS"
CHOICES = ("auto", "mkl", "openblas")

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
_SEQUENTIAL = 1  # MKL_THREADING_SEQUENTIAL
_LP64 = 0  # MKL_INTERFACE_LP64
_INT_MAX = 2**31 - 1


def _mkl_path():
    """Where the ``mkl`` wheel put ``libmkl_rt``, or None."""
    try:
        files = metadata.distribution("mkl").files or []
    except metadata.PackageNotFoundError:
        return None
    for f in files:
        name = f.name
        if name.startswith("libmkl_rt.so") or (name.startswith("mkl_rt") and name.endswith(".dll")):
            path = str(f.locate())
            if os.path.exists(path):
                return path
    return None


class _MKL:
    """A sequential ``libmkl_rt``, its ``cblas_?gemm`` and ``cblas_?gemm_batch_strided`` called from Numba.

    The calls are compiled Numba functions (:func:`_compile`) taking the arrays
    themselves: the layout (which axis has the unit stride) is read from the
    strides there, so that a product costs about 4 microseconds of Python (the checks included)
    rather than the dozen that ``ctypes`` takes to convert fourteen arguments.
    """

    def __init__(self, path):
        lib = ctypes.CDLL(path)
        for setter in (lib.MKL_Set_Interface_Layer, lib.MKL_Set_Threading_Layer):
            setter.argtypes, setter.restype = [ctypes.c_int], ctypes.c_int
        # LP64 (32-bit integers, as the calls below pass them) and sequential; each returns the layer in
        # force, which is another one when something in the process has already initialised this MKL.
        if lib.MKL_Set_Interface_Layer(_LP64) != _LP64 or lib.MKL_Set_Threading_Layer(_SEQUENTIAL) != _SEQUENTIAL:
            raise OSError("MKL was initialised with another interface or threading layer before scratchnet loaded it")
        buf = ctypes.create_string_buffer(256)
        lib.MKL_Get_Version_String(buf, len(buf))
        self.version = buf.value.decode(errors="replace").strip()
        self.gemm, self.batch = _compile(lib)


def _compile(lib):
    """``(gemm, batch)``: Numba functions ``f(a, b, out) -> bool`` computing ``out = a @ b`` through MKL.

    Each returns False, having done nothing, when a matrix has no unit stride
    (the caller then runs ``numpy.matmul``). The C functions' pointers go in as
    ``size_t`` (the same register as a pointer on every 64-bit ABI).
    """
    from numba import njit, types

    i, z = ctypes.c_int, ctypes.c_size_t

    def any_layout(ndim):
        """One signature per dtype, arrays of any layout: each function compiles twice, at the first product,
        rather than once for every mix of C-, F- and strided operands that comes along (nine in a LeNet step)."""
        return [types.boolean(*[types.Array(t, ndim, "A")] * 3) for t in (types.float32, types.float64)]

    def c_function(name, scalar, batched):
        args = ([i] * 6 + [scalar, z, i, i, z, i, i, scalar, z, i, i, i] if batched
                else [i] * 6 + [scalar, z, i, z, i, scalar, z, i])
        return ctypes.CFUNCTYPE(None, *args)(ctypes.cast(getattr(lib, name), ctypes.c_void_p).value)

    sgemm, dgemm = c_function("cblas_sgemm", ctypes.c_float, False), c_function("cblas_dgemm", ctypes.c_double, False)
    sbatch = c_function("cblas_sgemm_batch_strided", ctypes.c_float, True)
    dbatch = c_function("cblas_dgemm_batch_strided", ctypes.c_double, True)

    @njit(nogil=True)
    def layout(rows, cols, s0, s1, size):
        """(transpose flag, leading dimension) of a matrix from its strides in bytes; flag 0: neither fits."""
        if (s1 == size or cols == 1) and s0 % size == 0 and s0 >= max(cols, 1) * size and s0 // size < _INT_MAX:
            return _NO_TRANS, s0 // size
        if (s0 == size or rows == 1) and s1 % size == 0 and s1 >= max(rows, 1) * size and s1 // size < _INT_MAX:
            return _TRANS, s1 // size
        return 0, 0

    @njit(any_layout(2), nogil=True)
    def gemm(a, b, out):
        M, K = a.shape
        N = b.shape[1]
        size = a.itemsize
        ta, lda = layout(M, K, a.strides[0], a.strides[1], size)
        tb, ldb = layout(K, N, b.strides[0], b.strides[1], size)
        tc, ldc = layout(M, N, out.strides[0], out.strides[1], size)
        if ta == 0 or tb == 0 or tc != _NO_TRANS or max(M, N, K) >= _INT_MAX:
            return False
        if size == 4:  # float32 (the caller checked that all three share one float dtype)
            sgemm(_ROW_MAJOR, ta, tb, M, N, K, 1.0, a.ctypes.data, lda, b.ctypes.data, ldb, 0.0, out.ctypes.data, ldc)
        else:
            dgemm(_ROW_MAJOR, ta, tb, M, N, K, 1.0, a.ctypes.data, lda, b.ctypes.data, ldb, 0.0, out.ctypes.data, ldc)
        return True

    @njit(any_layout(3), nogil=True)
    def batch(a, b, out):
        count, M, K = a.shape
        N = b.shape[2]
        size = a.itemsize
        ta, lda = layout(M, K, a.strides[1], a.strides[2], size)
        tb, ldb = layout(K, N, b.strides[1], b.strides[2], size)
        tc, ldc = layout(M, N, out.strides[1], out.strides[2], size)
        if ta == 0 or tb == 0 or tc != _NO_TRANS or max(M, N, K, count) >= _INT_MAX:
            return False
        sa, sb, sc = a.strides[0] // size, b.strides[0] // size, out.strides[0] // size
        if (min(sa, sb, sc) < 0 or max(sa, sb, sc) >= _INT_MAX or a.strides[0] % size or b.strides[0] % size
                or out.strides[0] % size):
            return False
        if size == 4:  # float32 (the caller checked that all three share one float dtype)
            sbatch(_ROW_MAJOR, ta, tb, M, N, K, 1.0, a.ctypes.data, lda, sa, b.ctypes.data, ldb, sb, 0.0,
                   out.ctypes.data, ldc, sc, count)
        else:
            dbatch(_ROW_MAJOR, ta, tb, M, N, K, 1.0, a.ctypes.data, lda, sa, b.ctypes.data, ldb, sb, 0.0,
                   out.ctypes.data, ldc, sc, count)
        return True

    return gemm, batch


_state = None  # (name, _MKL or None[, thin products to OpenBLAS]), chosen at the first product
_why_not_mkl = None  # under auto, why the products stay on OpenBLAS


@functools.lru_cache(maxsize=None)
def load_mkl(path):
    """The :class:`_MKL` of the ``libmkl_rt`` at ``path``, loaded and compiled once per process."""
    return _MKL(path)


_choosing = threading.Lock()  # the first product often runs on two threads at once (a split's parts)


def _choose():
    global _state
    if _state is not None:
        return _state
    with _choosing:
        if _state is None:
            _state = _decide()
    return _state


def _decide():
    """``(name, _MKL or None)`` from ``SCRATCHNET_BLAS`` and what is installed and imported (module docstring)."""
    global _why_not_mkl
    choice = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if choice not in CHOICES:
        raise ValueError(f"{ENV}={os.environ.get(ENV)!r}: expected one of {', '.join(CHOICES)}")
    mkl, why = None, None
    if choice in ("auto", "mkl"):
        path = _mkl_path()
        if path is None and choice == "mkl":
            raise RuntimeError(f"{ENV}=mkl, but the mkl wheel is not installed: pip install 'scratchnet[mkl]'")
        if path is not None:
            try:
                mkl = load_mkl(path)
            except (OSError, AttributeError) as e:
                if choice == "mkl":
                    raise RuntimeError(f"{ENV}=mkl, but {path} does not load: {e}") from e
                why = f"{path} does not load: {e}"
    if mkl is None and why is None and choice == "auto":
        why = "the mkl wheel is not installed (pip install 'scratchnet[mkl]')"
    _why_not_mkl = why
    if mkl is None:
        return ("openblas", None)
    return ("mkl", mkl, choice == "auto" and not _cpu_is_intel())


def name():
    """``"mkl"`` or ``"openblas"``: the BLAS that :func:`matmul` uses."""
    return _choose()[0]


def describe():
    """The BLAS in use, for a report: ``"mkl (sequential), Intel(R) oneMKL ..."`` or ``"openblas (NumPy's)"``."""
    mkl = _choose()[1]
    if mkl is not None:
        thin = f"; products with a side under {THIN} through NumPy's OpenBLAS (CPU not Intel's)" if _thin_to_openblas() else ""
        return f"mkl (sequential), {mkl.version}{thin}"
    return "openblas (NumPy's)" + (f"; not MKL: {_why_not_mkl}" if _why_not_mkl else "")


def matmul(a, b, out=None):
    """``a @ b`` into ``out`` (new when None) for 2-D operands, or stacks of them (3-D, one batch axis).

    MKL when it is in use and the operands suit it (one float dtype; each
    matrix with a unit stride along its rows or its columns; ``out``'s rows
    contiguous), else ``numpy.matmul``.
    """
    mkl = _choose()[1]
    if out is None:
        if a.ndim != b.ndim or a.ndim not in (2, 3):
            return numpy.matmul(a, b)
        out = numpy.empty(a.shape[:-1] + b.shape[-1:], dtype=numpy.result_type(a, b))
    if (mkl is None or not _suits(a, b, out) or (_thin_to_openblas() and _thin(a, b))
            or numpy.may_share_memory(out, a) or numpy.may_share_memory(out, b)):
        return numpy.matmul(a, b, out=out)  # (numpy.matmul also takes an out that overlaps an operand)
    if out.size == 0:
        return out
    if a.shape[-1] == 0:
        out[...] = 0
        return out
    if not (mkl.gemm if a.ndim == 2 else mkl.batch)(a, b, out):
        numpy.matmul(a, b, out=out)
    return out


_FLOATS = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))

#: A product with a side (rows, sum or columns) shorter than this is thin (:func:`_thin_for_mkl_here`).
THIN = 32
_intel = None  # whether this CPU is Intel's, read once


def _cpu_is_intel():
    """Whether the CPU is Intel's (``vendor_id`` in ``/proc/cpuinfo``; True where that cannot be read)."""
    global _intel
    if _intel is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                vendor = next((line.split(":", 1)[1].strip() for line in f if line.startswith("vendor_id")), "GenuineIntel")
        except OSError:
            vendor = "GenuineIntel"
        _intel = vendor == "GenuineIntel"
    return _intel


def _thin(a, b):
    """Whether the product ``a @ b`` has a side (rows, sum or columns) under ``THIN``."""
    return min(a.shape[-2], a.shape[-1], b.shape[-1]) < THIN


def _thin_to_openblas():
    """Whether thin products go to NumPy's OpenBLAS although MKL is in use: under ``auto``, on a CPU not Intel's.

    On an AMD EPYC (AVX-512) MKL ran every thin product at a quarter to two
    thirds of OpenBLAS's speed (an MLP's last layer, ``(100, 500) @ (500, 10)``:
    60 against 15 microseconds; float64 alike) and no product faster. The
    choice depends on the shapes and the CPU only, so a run on one machine
    repeats bit for bit. ``SCRATCHNET_BLAS=mkl`` runs every product MKL takes through MKL.
    """
    state = _choose()
    return len(state) > 2 and state[2]


def _suits(a, b, out):
    """Whether the shapes and dtypes are a product MKL's calls take (the strides are checked there)."""
    dtype = out.dtype
    if dtype not in _FLOATS or a.dtype != dtype or b.dtype != dtype or not out.flags.writeable:
        return False
    if not (a.flags.aligned and b.flags.aligned and out.flags.aligned):
        return False  # the compiled calls take aligned arrays only (one signature per dtype)
    nd = a.ndim
    if nd != b.ndim or nd != out.ndim or nd not in (2, 3):
        return False
    if a.shape[-1] != b.shape[-2] or out.shape[-2] != a.shape[-2] or out.shape[-1] != b.shape[-1]:
        return False
    return nd == 2 or a.shape[0] == b.shape[0] == out.shape[0]


# --- how many threads the BLAS runs ------------------------------------------------------------
# kernels/runtime/threads.py runs one part of an op per core, each with a one-thread BLAS: MKL is
# loaded sequential (above), and NumPy's OpenBLAS is told so for the duration of a split.

class _OpenBLAS:
    """``get_num_threads`` / ``set_num_threads`` of the OpenBLAS that NumPy loaded, or None each."""

    # Plain OpenBLAS, and the builds NumPy's wheels bundle (``scipy_`` prefix, ``64_`` suffix for ILP64).
    NAMES = [(f"{prefix}openblas_get_num_threads{suffix}", f"{prefix}openblas_set_num_threads{suffix}")
             for prefix in ("scipy_", "") for suffix in ("64_", "")]

    def __init__(self):
        self.get = self.set = None
        try:
            with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
                paths = {line.split()[-1] for line in f if "openblas" in line.lower() and ".so" in line}
        except OSError:
            return
        for path in sorted(paths):
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for get, set_ in self.NAMES:
                if hasattr(lib, get) and hasattr(lib, set_):
                    self.get, self.set = getattr(lib, get), getattr(lib, set_)
                    self.get.restype = ctypes.c_int
                    self.set.argtypes = [ctypes.c_int]
                    return


_openblas_handle = None


def _openblas():
    global _openblas_handle
    if _openblas_handle is None:
        _openblas_handle = _OpenBLAS()
    return _openblas_handle


def thread_count_settable():
    """Whether NumPy's OpenBLAS was found, so that :class:`single_threaded` can hold it to one thread."""
    return _openblas().set is not None


def thread_count():
    """OpenBLAS's thread count now, or None where it was not found."""
    lib = _openblas()
    return lib.get() if lib.get is not None else None


class single_threaded:
    """``with single_threaded():`` every OpenBLAS call inside uses one thread; the count is restored after.

    (MKL needs nothing: it is loaded sequential.)
    """

    def __enter__(self):
        self.before = thread_count()
        if self.before is not None and self.before != 1:
            _openblas().set(1)
        return self

    def __exit__(self, *exc):
        if self.before is not None and self.before != 1:
            _openblas().set(self.before)
        return False
