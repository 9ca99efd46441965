"""Timing helpers shared by the benchmark scripts.

Nothing here runs at import. Timings are medians of repeated calls after a
warm-up (JIT compilation, cuDNN autotuning and allocator growth all happen in
the first calls and are not what is measured).
"""
from __future__ import annotations

import ctypes
import statistics
import threading
import time

import numpy as np

# The profiler's: the key its cached roofs are stored under names the same CPU.
from scratchnet.profiler.calibration import cpu_count, cpu_model  # noqa: F401  (re-exported to the benches)


#: Untimed seconds before each framework's block: an idle OpenBLAS pool spins for about 0.1 s after a
#: call (2^28 cycles), OpenMP's and TensorFlow's for a while too (docs/timing.md).
SETTLE_S = 0.3


def busy_wait(seconds=SETTLE_S):
    """Wait ``seconds`` with every core kept busy (a thread per core calling ``sched_yield``).

    The pause lets the framework before go quiet: its spinning workers stop after their own spin count
    whatever else runs. Sleeping instead would let the cores go idle, and on a virtual machine an idle
    core takes tens of milliseconds to run at speed again (measured: the MLP step at 3.6 ms for its
    first fifteen steps after a 0.6 s sleep, then 2.0; after this busy pause, 1.5 from the second step).
    ``sched_yield`` releases the GIL and gives the core to any thread that wants it.
    """
    libc = ctypes.CDLL(None)
    end = time.perf_counter() + seconds

    def spin():
        yield_ = libc.sched_yield
        while time.perf_counter() < end:
            yield_()

    helpers = [threading.Thread(target=spin, daemon=True) for _ in range(max(cpu_count() - 1, 0))]
    for t in helpers:
        t.start()
    spin()
    for t in helpers:
        t.join()


def alternating_medians(steps, rounds, block, warmup, sync=None, settle=SETTLE_S):
    """``{name: median ms}`` of ``steps`` (name -> callable) timed in alternating blocks of ``block`` calls.

    ``settle`` seconds pass before each block, untimed: the thread pool of the
    framework before (OpenMP's spinning workers, PyTorch's, scratchnet's own)
    goes back to sleep, so that no block starts with another framework's
    threads still holding a core.
    """
    sync = sync or (lambda: None)
    for fn in steps.values():
        for _ in range(warmup):
            fn()
            sync()
    times = {name: [] for name in steps}
    for _ in range(rounds):
        for name, fn in steps.items():
            busy_wait(settle)
            for _ in range(block):
                start = time.perf_counter()
                fn()
                sync()
                times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def median_ms(fn, repeats=10, warmup=2, sync=None):
    """Median wall time of ``fn()`` in milliseconds.

    ``sync`` is called after each call before the clock stops; GPU work is
    asynchronous, so without it only the launch would be timed.
    """
    sync = sync or (lambda: None)
    for _ in range(warmup):
        fn()
        sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def sgemm_gflops(xp=np, n=2048, repeats=5, sync=None):
    """The float32 matmul rate of this machine (``xp.matmul`` of two n x n), in GFLOP/s.

    The yardstick for the ops' achieved rates: a GEMM is as close to peak as
    a library gets on this hardware.
    """
    rng = np.random.default_rng(0)
    A = xp.asarray(rng.standard_normal((n, n), dtype=np.float32))
    B = xp.asarray(rng.standard_normal((n, n), dtype=np.float32))
    ms = median_ms(lambda: xp.matmul(A, B), repeats=repeats, warmup=1, sync=sync)
    return 2 * n**3 / (ms * 1e-3) / 1e9


def blas_line():
    """The BLAS NumPy calls, as threadpoolctl sees it (library, version, kernel, threads), and the one
    behind the Numba backend's products (``kernels/runtime/blas.py``: MKL when installed)."""
    from scratchnet.kernels.runtime import blas

    ours = f"scratchnet's Numba GEMMs: {blas.describe()}"
    try:
        import threadpoolctl
    except ImportError:
        return f"BLAS: NumPy's unknown (pip install threadpoolctl); {ours}"
    libs = [lib for lib in threadpoolctl.threadpool_info() if lib.get("user_api") == "blas"]
    if not libs:
        return f"BLAS: NumPy's none found by threadpoolctl; {ours}"
    lib = next((lib for lib in libs if lib.get("internal_api") == "openblas"), libs[0])
    return (f"BLAS: NumPy's {lib.get('internal_api')} {lib.get('version')}, kernel {lib.get('architecture', '?')}, "
            f"{lib.get('threading_layer', '?')} threads, {lib.get('num_threads')} threads; {ours}")


def machine_line():
    """One line saying where a benchmark ran: CPU model and cores, the BLAS, and the library versions
    (PyTorch and TensorFlow too, when this process has imported them)."""
    import sys

    import numba

    peers = "".join(f", {name} {sys.modules[module].__version__}" for name, module in
                    (("torch", "torch"), ("tensorflow", "tensorflow")) if module in sys.modules)
    return (f"CPU: {cpu_model()}, {cpu_count()} cores; {blas_line()}; "
            f"numpy {np.__version__}, numba {numba.__version__}{peers}")


def import_peers_first(names):
    """Import the peer frameworks in ``names`` ("torch", "tensorflow") before scratchnet runs a product.

    PyTorch binds its own MKL when it is loaded; imported after scratchnet has
    loaded MKL it would bind scratchnet's sequential one and run slower than it
    is (``kernels/runtime/blas.py``). Those not installed are skipped here; the bench
    reports them later.
    """
    for name in names:
        try:
            __import__(name)
        except ImportError:
            pass


def import_or_reason(name):
    """``(module, None)``, or ``(None, why)`` when ``name`` does not import."""
    try:
        return __import__(name), None
    except Exception as e:  # ImportError, or a broken install raising anything
        return None, f"{type(e).__name__}: {e}"


def markdown_table(headers, rows):
    """A Markdown table; cells are formatted with ``str``."""
    rows = [[str(c) for c in row] for row in rows]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def fmt_ms(ms):
    return f"{ms:.2f}" if isinstance(ms, float) else str(ms)
