"""Find, compile and cache the CUDA C kernels (``kernels/cuda/*.cu``).

Each ``.cu`` file holds the kernels of one op family, written once against a
``REAL`` type macro. A file is compiled on first use, once per dtype
(``-DREAL=float`` for float32, ``-DREAL=double`` for float64), through
``cupy.RawModule`` (NVRTC), and the module is cached for the process. Nothing
compiles, and CuPy is not imported, until a kernel is asked for.

The same source text, with the same ``#line`` directive and the same flags
(:func:`nvrtc_options`), can be compiled by ``nvcc`` to PTX (:func:`nvcc_ptx`),
which is how the kernels are checked on a machine without a GPU.

Two things about CuPy shape this file:

- CuPy's kernel cache (on disk, across processes) is keyed on the source
  text and the options, not on the headers the text includes through
  ``-I``. An edit to ``common.cuh`` alone would leave the key as it was and
  the stale cubin would run, so the options carry a digest of the headers
  (:func:`headers_digest`): a header edit is a new key.
- ``cupy.RawModule`` appends ``-ftz=true`` to the caller's options (CuPy's
  ``_compile_with_cache_cuda``), and the last flag wins. The floating-point
  flags are therefore stated here, that one included (:data:`FLOAT_FLAGS`),
  and nvcc is given the same ones, so the PTX the checks read is the code
  the GPU runs.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.resources
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy

# dtype name -> the REAL macro the sources are compiled with.
REAL_TYPES = {"float32": "float", "float64": "double"}

#: The flags of NVRTC and nvcc alike: C++17, and IEEE division and square root with fused
#: multiply-adds (each compiler's default, stated). ``-ftz=true`` (float32 subnormals flushed to
#: zero) is what CuPy appends to every RawModule, so it is stated too rather than left to differ.
FLOAT_FLAGS = ("--std=c++17", "-ftz=true", "-prec-div=true", "-prec-sqrt=true", "-fmad=true")


class CudaCompileError(RuntimeError):
    """A CUDA source failed to compile; the message names the file and line."""


def kernel_dir():
    """The folder holding the ``.cu`` sources: ``kernels/cuda/`` in a checkout,
    ``scratchnet/kernels/cuda/`` in an installed wheel."""
    try:
        root = importlib.resources.files("scratchnet.kernels.cuda")
    except ModuleNotFoundError:
        root = None
    # A plain install or checkout gives a real folder; a zipped install would
    # not, and NVRTC's -I needs one, so fall back to this file's folder.
    if isinstance(root, Path) and root.is_dir():
        return root
    return Path(__file__).resolve().parent


def source_files():
    """Every CUDA source of the package, sorted by name."""
    return sorted(kernel_dir().glob("*.cu"))


def source_path(name):
    """The path of ``<name>.cu`` (``name`` as ``"conv"`` or ``"conv.cu"``)."""
    filename = name if name.endswith(".cu") else f"{name}.cu"
    path = kernel_dir() / filename
    if not path.is_file():
        known = ", ".join(p.stem for p in source_files())
        raise FileNotFoundError(f"cuda: no kernel source {filename!r} in {kernel_dir()} (have: {known})")
    return path


def display_name(path):
    """How errors name a source: ``kernels/cuda/conv.cu`` (its path in the repository) for the package's own."""
    path = Path(path)
    if path.resolve().parent == kernel_dir().resolve():
        return f"kernels/cuda/{path.name}"
    return path.as_posix()


def kernel_source(path):
    """The text handed to the compiler: the file, led by a ``#line`` directive.

    The compiler sees a string, not a file, so without the directive its
    errors would point at an anonymous buffer; with it they read
    ``kernels/cuda/conv.cu(12): error: ...``.
    """
    path = Path(path)
    name = display_name(path).replace("\\", "/").replace('"', '\\"')
    return f'#line 1 "{name}"\n' + path.read_text()


def real_type(dtype):
    """``"float"`` or ``"double"`` for a float32 or float64 dtype."""
    name = numpy.dtype(dtype).name
    if name not in REAL_TYPES:
        raise ValueError(f"cuda: kernels exist for float32 and float64, not {name}")
    return REAL_TYPES[name]


def headers_digest(folder=None):
    """A short digest of every header (``*.cuh``) in ``folder`` (default: the kernels' folder).

    It goes into the options as ``-DSCRATCHNET_HEADERS=<digest>``, so that CuPy's
    cache key, which covers the text and the options only, changes when a header does.
    """
    h = hashlib.sha256()
    for header in sorted(Path(folder or kernel_dir()).glob("*.cuh")):
        h.update(header.name.encode() + b"\0" + header.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def compile_options(real, include_dir=None):
    """The macros and the include folder: what any compiler of the sources takes (g++ too).

    ``-DSCRATCHNET_HEADERS`` names the headers' contents (:func:`headers_digest`); no source uses it.
    """
    folder = include_dir or kernel_dir()
    return (f"-DREAL={real}", f"-I{folder}", f"-DSCRATCHNET_HEADERS={headers_digest(folder)}")


def nvrtc_options(real, include_dir=None):
    """The options of a CUDA compile, NVRTC's (the loader) and nvcc's (the checks) alike."""
    return (*compile_options(real, include_dir), *FLOAT_FLAGS)


def source_define(name, macro):
    """The integer value of ``#define <macro> <n>`` in ``<name>.cu``, or None when it defines none.

    The launcher reads a kernel's fixed sizes (a shared buffer's length) from
    its source, so that the two cannot disagree.
    """
    match = re.search(rf"^\s*#\s*define\s+{re.escape(macro)}\s+\(?(\d+)\)?\s*$",
                      _text(source_path(name)), re.MULTILINE)
    return int(match.group(1)) if match else None


def uses_dynamic_shared_memory(name):
    """Whether ``<name>.cu`` declares an ``extern __shared__`` buffer (sized by the launch)."""
    return re.search(r"extern\s+__shared__", _text(source_path(name))) is not None


@functools.lru_cache(maxsize=None)
def _text(path):
    # The launcher asks these questions on every launch; the file is read once per process.
    return Path(path).read_text()


@functools.lru_cache(maxsize=None)
def _module(name, dtype_name):
    import cupy

    path = source_path(name)
    real = real_type(dtype_name)
    module = cupy.RawModule(code=kernel_source(path), options=nvrtc_options(real))
    try:
        # RawModule compiles lazily; compile now so errors surface here.
        module.compile()
    except cupy.cuda.compiler.CompileException as e:
        raise CudaCompileError(f"CUDA compile of {display_name(path)} (REAL={real}) failed:\n{e}") from e
    return module


def module(name, dtype):
    """The compiled ``cupy.RawModule`` of ``<name>.cu`` for ``dtype`` (cached)."""
    return _module(name, numpy.dtype(dtype).name)


@functools.lru_cache(maxsize=None)
def _function(name, kernel, dtype_name):
    return _module(name, dtype_name).get_function(kernel)


def function(name, kernel, dtype):
    """The ``cupy.RawKernel`` called ``kernel`` in ``<name>.cu`` for ``dtype`` (cached).

    ``RawModule.get_function`` looks the kernel up in the module and builds a
    new ``RawKernel`` on every call; an LSTM step launches about ten kernels,
    so the kernel objects are kept for the process, as the modules are.
    """
    return _function(name, kernel, numpy.dtype(dtype).name)


def clear_caches():
    """Forget the compiled modules and kernels of this process (after an edit to a source, in a test)."""
    _function.cache_clear()
    _module.cache_clear()
    _text.cache_clear()


def nvcc_ptx(path, arch="sm_80", real="float", nvcc=None):
    """Compile one source with nvcc to PTX and return the PTX text.

    The source goes through :func:`kernel_source`, exactly as the loader hands
    it to NVRTC, so a failure here names the file and line the same way.
    Raises ``FileNotFoundError`` when nvcc is absent and
    :class:`CudaCompileError` when the source does not compile.
    """
    path = Path(path)
    nvcc = nvcc or shutil.which("nvcc")
    if nvcc is None:
        raise FileNotFoundError("cuda: nvcc is not on PATH")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / path.name
        src.write_text(kernel_source(path))
        out = Path(tmp) / f"{path.stem}.ptx"
        # The copy sits in a temporary folder, so point -I at the original's
        # folder (for its own headers) and at the package's (common.cuh).
        cmd = [nvcc, "-ptx", f"-arch={arch}", *nvrtc_options(real, path.resolve().parent),
               f"-I{kernel_dir()}", "-o", str(out), str(src)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            log = (proc.stderr + proc.stdout).strip()
            raise CudaCompileError(f"nvcc: {display_name(path)} failed for {arch} with REAL={real}:\n{log}")
        return out.read_text()
