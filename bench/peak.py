"""This machine's limits: the peak float32 FMA rate, the sgemm rate and the memory bandwidth.

The yardsticks for every other benchmark here. ``bench/ops.py`` sets each
op's achieved GFLOP/s against the FMA peak measured here and against the
sgemm rate (the best a BLAS gets on these shapes of hardware), and a
memory-bound op's GB/s against the copy bandwidth.

- **FMA peak.** A Numba function whose loop is written in LLVM IR: 16
  independent chains of 512-bit (16 x float32) fused multiply-adds, enough to
  cover the FMA latency on both FMA ports, on 1 thread and on every core
  (each thread runs its own chains; the function releases the GIL). This is
  the number no kernel can beat; an AVX2-only machine runs it as two 256-bit
  halves.
- **sgemm.** ``numpy.matmul`` of two 2048 x 2048 float32 matrices, OpenBLAS
  on one thread and on all.
- **Bandwidth.** ``numpy.copyto`` of arrays held in L2 (1 MiB), in the last
  level cache (32 MiB) and in memory (1 GiB), each copy reading and writing
  every byte; with all cores, each thread copies its own half.

Every figure is the best of a few runs (a limit is the best case)::

    python bench/peak.py
"""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_count, machine_line, markdown_table  # noqa: E402

CHAINS = 16  # independent FMA chains: latency 4 cycles x 2 ports x 2 for headroom
LANES = 16  # float32 lanes of a 512-bit vector


def _fma_kernel():
    """``fma_chains(n, b, c)``: ``n`` iterations of ``CHAINS`` vector FMAs ``acc = acc * b + c``; returns a checksum."""
    from llvmlite import ir
    from numba import njit, types
    from numba.core import cgutils
    from numba.extending import intrinsic

    @intrinsic
    def _chains(typingctx, n, b, c):
        sig = types.float32(types.int64, types.float32, types.float32)

        def codegen(context, builder, signature, args):
            n, b, c = args
            i64, i32, vec = ir.IntType(64), ir.IntType(32), ir.VectorType(ir.FloatType(), LANES)
            fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec] * 3), f"llvm.fma.v{LANES}f32")

            def splat(x):
                v = builder.insert_element(ir.Constant(vec, ir.Undefined), x, ir.Constant(i32, 0))
                return builder.shuffle_vector(v, ir.Constant(vec, ir.Undefined),
                                              ir.Constant(ir.VectorType(i32, LANES), [0] * LANES))

            # b and c come from the caller, so that LLVM cannot fold the loop into a constant.
            bv, cv = splat(b), splat(c)
            init = [ir.Constant(vec, [1.0 + 1e-3 * k + 1e-4 * lane for lane in range(LANES)]) for k in range(CHAINS)]
            entry = builder.block
            loop, done = builder.append_basic_block("fma_loop"), builder.append_basic_block("fma_done")
            builder.branch(loop)
            builder.position_at_end(loop)
            i = builder.phi(i64)
            accs = [builder.phi(vec) for _ in range(CHAINS)]
            new = [builder.call(fma, [a, bv, cv]) for a in accs]
            for a, first, nxt in zip(accs, init, new):
                a.add_incoming(first, entry)
                a.add_incoming(nxt, loop)
            step = builder.add(i, ir.Constant(i64, 1))
            i.add_incoming(ir.Constant(i64, 0), entry)
            i.add_incoming(step, loop)
            builder.cbranch(builder.icmp_signed("<", step, n), loop, done)
            builder.position_at_end(done)
            total = new[0]
            for v in new[1:]:
                total = builder.fadd(total, v)
            s = builder.extract_element(total, ir.Constant(i32, 0))
            for lane in range(1, LANES):
                s = builder.fadd(s, builder.extract_element(total, ir.Constant(i32, lane)))
            return s

        return sig, codegen

    @njit(nogil=True)
    def fma_chains(n, b, c):
        return _chains(n, b, c)

    return fma_chains


def _best(fn, runs=5):
    fn()
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _on_threads(fn, threads):
    """``fn`` run on ``threads`` threads at once."""
    def run():
        ts = [threading.Thread(target=fn) for _ in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    return run


def fma_peak_gflops(threads=1, iterations=20_000_000):
    """Float32 FMA GFLOP/s (an FMA is 2 FLOPs) of ``threads`` threads each running its own chains."""
    fma_chains = _fma_kernel()
    b, c = np.float32(0.999), np.float32(1e-3)
    fma_chains(10, b, c)
    seconds = _best(_on_threads(lambda: fma_chains(iterations, b, c), threads))
    return threads * iterations * CHAINS * LANES * 2 / seconds / 1e9


def sgemm_gflops(threads=None, n=2048):
    """``numpy.matmul`` of two n x n float32 matrices, in GFLOP/s, on ``threads`` BLAS threads (None: as set)."""
    import threadpoolctl

    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    out = np.empty_like(a)
    with threadpoolctl.threadpool_limits(threads, user_api="blas"):
        seconds = _best(lambda: np.matmul(a, b, out=out), runs=3)
    return 2 * n**3 / seconds / 1e9


def copy_gbs(nbytes, threads=1):
    """GB/s of ``numpy.copyto`` (read + write) over ``nbytes``, each thread copying its own part.

    Each thread repeats its copy enough times (``reps``) that starting the
    threads does not count, for arrays that fit a cache too.
    """
    src = np.ones(nbytes // 4, dtype=np.float32)
    dst = np.empty_like(src)
    k = src.size // threads
    parts = [(src[i * k:(i + 1) * k], dst[i * k:(i + 1) * k]) for i in range(threads)]
    reps = max(1, (256 << 20) // nbytes)

    def copies(s, d):
        for _ in range(reps):
            np.copyto(d, s)

    seconds = _best(_on_threads_each(copies, parts), runs=3)
    return 2 * k * threads * 4 * reps / seconds / 1e9


def _on_threads_each(fn, args):
    """``fn(*a)`` for each ``a`` of ``args``, each on its own thread, all at once."""
    def run():
        ts = [threading.Thread(target=fn, args=a) for a in args]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    return run


def measure():
    """``{"fma_gflops", "fma_gflops_1", "sgemm_gflops", "sgemm_gflops_1", "copy_gbs"}`` on this machine, all cores
    unless ``_1`` (one core); ``copy_gbs`` is the memory (1 GiB) copy rate on all cores."""
    cores = cpu_count()
    return {"fma_gflops": fma_peak_gflops(cores), "fma_gflops_1": fma_peak_gflops(1),
            "sgemm_gflops": sgemm_gflops(cores), "sgemm_gflops_1": sgemm_gflops(1),
            "copy_gbs": copy_gbs(1 << 30, cores)}


def main():
    cores = cpu_count()
    print(machine_line())
    rows = []
    for threads in sorted({1, cores}):
        rows.append(["float32 FMA peak (512-bit FMA chains, Numba/LLVM)", threads,
                     f"{fma_peak_gflops(threads):.1f} GFLOP/s"])
    for threads in sorted({1, cores}):
        rows.append(["float32 sgemm 2048^3 (numpy.matmul, OpenBLAS)", threads, f"{sgemm_gflops(threads):.1f} GFLOP/s"])
    for label, size in (("L2, 1 MiB", 1 << 20), ("last-level cache, 32 MiB", 32 << 20), ("memory, 1 GiB", 1 << 30)):
        for threads in sorted({1, cores}):
            rows.append([f"copy bandwidth ({label}; read + write)", threads, f"{copy_gbs(size, threads):.1f} GB/s"])
    print()
    print(markdown_table(["limit", "threads", "best of runs"], rows))


if __name__ == "__main__":
    main()
