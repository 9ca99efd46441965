"""This machine's limits: a float32 GEMM rate and a memory copy rate, measured once and cached.

A profile shows each op against what the machine can do, not against a
datasheet: :func:`calibrate` times ``1024 x 1024`` float32 GEMMs (the best a
BLAS gets: the compute roof) and a 64 MiB array copy (the memory roof) on
the current backend's array module, and keeps the numbers in
``~/.cache/scratchnet/profile-peaks.json`` (``$XDG_CACHE_HOME`` honoured),
keyed by the CPU model, the backend, the threads it may use and the GPU, so
that another machine measures its own. It takes well under 2 s.
"""
from __future__ import annotations

import json
import os
import platform
import time

import numpy

from ..backend import get_backend
from .clocks import clock_for

CACHE_FILE = "profile-peaks.json"
GEMM_N = 1024
COPY_BYTES = 64 * 2**20
# Each measurement repeats until it has taken this long (at least 2 runs, at most 10).
BUDGET_S = 0.3

_memo = {}


def cpu_model():
    """The CPU's name (``model name`` in /proc/cpuinfo), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_count():
    """CPUs this process may run on (the affinity mask, not the whole machine)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine_key(backend):
    """What the cached numbers hold for: CPU model, backend, threads, and the GPU on CuPy."""
    key = f"{cpu_model()} | {backend.name} | {cpu_count()} threads"
    if backend.name == "numba":
        from ..kernels.runtime import blas

        key += f" | {blas.name()}"  # the BLAS of its products (kernels/runtime/blas.py)
    if backend.name == "cupy":
        import cupy

        device = cupy.cuda.Device()
        name = cupy.cuda.runtime.getDeviceProperties(device.id)["name"]
        key += f" | {name.decode() if isinstance(name, bytes) else name}"
    return key


def _best_seconds(fn, clock):
    """The fastest of a few timed runs of ``fn()`` after one warm-up (a roof is the best case)."""
    fn()
    clock.wait(clock.mark())
    best, spent, runs = float("inf"), 0.0, 0
    while runs < 2 or (spent < BUDGET_S and runs < 10):
        a = clock.mark()
        fn()
        b = clock.mark()
        clock.wait(b)
        seconds = clock.seconds(a, b)
        best, spent, runs = min(best, seconds), spent + seconds, runs + 1
    return best


def measure(backend):
    """``{"sgemm_gflops", "copy_gbs"}`` measured now on ``backend``'s array module."""
    xp, clock = backend.xp, clock_for(backend.name)
    rng = numpy.random.default_rng(0)
    a = xp.asarray(rng.standard_normal((GEMM_N, GEMM_N), dtype=numpy.float32))
    b = xp.asarray(rng.standard_normal((GEMM_N, GEMM_N), dtype=numpy.float32))
    # Through the backend's own GEMM (on Numba: split between the cores, each part in its BLAS), so that
    # the roof is the rate the backend's products can reach.
    gemm_s = _best_seconds(lambda: backend.gemm(a, b), clock)
    src = xp.ones(COPY_BYTES // 4, dtype=numpy.float32)
    dst = xp.empty_like(src)
    copy_s = _best_seconds(lambda: xp.copyto(dst, src), clock)
    return {"sgemm_gflops": 2.0 * GEMM_N**3 / gemm_s / 1e9,
            "copy_gbs": 2.0 * COPY_BYTES / copy_s / 1e9}  # a copy reads and writes every byte


def cache_path():
    from ..data.download import cache_dir

    return cache_dir() / CACHE_FILE


def _read(path):
    try:
        with open(path, encoding="utf-8") as f:
            cached = json.load(f)
        return cached if isinstance(cached, dict) else {}
    except (OSError, ValueError):
        return {}


def _write(path, cached):
    from ..archive import atomic_write

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(str(path), lambda f: f.write(json.dumps(cached, indent=1, sort_keys=True).encode()))
    except OSError:
        pass  # a read-only home: the numbers are still kept for this process


def calibrate(force=False):
    """This machine's roofs on the current backend, from the cache or measured (``force=True`` remeasures).

    Returns
    -------
    dict
        ``sgemm_gflops`` (float32 GEMM rate, GFLOP/s), ``copy_gbs`` (array
        copy rate, GB/s, read plus write), ``balance`` (FLOPs per byte
        where the two roofs meet), ``key`` (the machine they hold for),
        ``measured`` (when, seconds since the epoch) and ``cached`` (read
        from the cache file rather than measured by this call).
    """
    backend = get_backend()
    key, path = machine_key(backend), cache_path()
    if not force and (str(path), key) in _memo:
        return dict(_memo[str(path), key], cached=True)
    cached = _read(path)
    entry = cached.get(key)
    fresh = force or not (isinstance(entry, dict) and entry.get("sgemm_gflops", 0) > 0 and entry.get("copy_gbs", 0) > 0)
    if fresh:
        entry = {**measure(backend), "measured": time.time()}
        cached[key] = entry
        _write(path, cached)
    peaks = {"sgemm_gflops": float(entry["sgemm_gflops"]), "copy_gbs": float(entry["copy_gbs"]),
             "measured": entry.get("measured"), "key": key}
    peaks["balance"] = peaks["sgemm_gflops"] / peaks["copy_gbs"]
    _memo[str(path), key] = peaks
    return dict(peaks, cached=not fresh)
