"""What ``sn.profile()`` costs: a LeNet training step with and without it, and an op with no profile active.

Blocks of ``--steps`` LeNet steps (the zoo recipe, batch 100, random data)
alternate between profiled (each step one segment, as ``scratchnet train
--profile`` records it) and not, so that drift in the machine's speed hits
both alike; the figures are the medians of the per-step times. With no
profile active an op pays one check in ``scratchnet.recording.op``: the
second figure times ``sn.ops.relu`` on a small array against the same
function undecorated.

    python bench/profile_overhead.py                     # numba, 15 x 2 alternating blocks of 2 steps
    python bench/profile_overhead.py --backend numpy --blocks 3
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_count, import_or_reason  # noqa: E402

import scratchnet as sn  # noqa: E402
from scratchnet.profiler import calibration  # noqa: E402


def blas_line():
    """The BLAS numpy calls, as threadpoolctl sees it (``pip install threadpoolctl`` for it)."""
    threadpoolctl, why = import_or_reason("threadpoolctl")
    if threadpoolctl is None:
        return f"BLAS: unknown ({why})"
    pools = [p for p in threadpoolctl.threadpool_info() if p.get("user_api") == "blas"]
    if not pools:
        return "BLAS: none found by threadpoolctl"
    return "BLAS: " + "; ".join(f"{p['internal_api']} {p.get('version')} ({p.get('architecture') or '?'}, "
                                f"{p['num_threads']} threads)" for p in pools)


def step_times(recipe, x, y, steps, prof=None):
    """Seconds of each of ``steps`` training steps; each one a segment of ``prof`` when given."""
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        if prof is not None:
            prof.start()
        recipe.train_step(x, y)
        if prof is not None:
            prof.stop()
        times.append(time.perf_counter() - start)
    return times


def ns_per_call(fn, x, calls=20000, repeats=7):
    """Median nanoseconds of one ``fn(x)`` over ``repeats`` runs of ``calls`` calls."""
    runs = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for _ in range(calls):
            fn(x)
        runs.append((time.perf_counter_ns() - start) / calls)
    return statistics.median(runs)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", default="numba")
    p.add_argument("--steps", type=int, default=2, help="steps per block (default 2: short blocks, so that a drift in the machine's load hits both kinds alike)")
    p.add_argument("--blocks", type=int, default=15, help="blocks of each kind, alternating (default 15)")
    p.add_argument("--batch-size", type=int, default=100)
    args = p.parse_args(argv)

    sn.use_backend(args.backend)
    sn.random.seed(0)
    recipe = sn.zoo.build("lenet", batch_size=args.batch_size)
    rng = np.random.default_rng(0)
    x = rng.random((args.batch_size, 784), dtype=np.float32)
    y = rng.integers(0, 10, args.batch_size)
    step_times(recipe, x, y, 3)  # compile the kernels, grow the allocator
    peaks = sn.profile.calibrate()

    off, on, prof = [], [], sn.profile(peaks=peaks)
    for _ in range(args.blocks):
        off += step_times(recipe, x, y, args.steps)
        on += step_times(recipe, x, y, args.steps, prof)
    off_ms, on_ms = 1e3 * statistics.median(off), 1e3 * statistics.median(on)
    calls = sum(r["calls"] for r in prof.rows if r["kind"] == "forward") / len(on)  # op calls per step

    # One op call, forward and backward, on a small array: the per-call price, out of the noise of a step.
    small = np.ones((16, 16), dtype=np.float32)
    relu, bare = sn.ops.relu, sn.ops.relu.__wrapped__
    bare_ns = ns_per_call(lambda a: bare(a)[1](a), small)
    off_ns = ns_per_call(lambda a: relu(a)[1](a), small)
    with sn.profile(peaks=peaks):
        on_ns = ns_per_call(lambda a: relu(a)[1](a), small, calls=5000)

    print(f"CPU: {calibration.cpu_model()}, {cpu_count()} threads; {blas_line()}")
    print(f"backend {args.backend}; roofs: sgemm {peaks['sgemm_gflops']:.1f} GFLOP/s, copy {peaks['copy_gbs']:.1f} GB/s")
    print(f"LeNet step, batch {args.batch_size}, {calls:.0f} op calls: median of {len(off)} steps each "
          f"({args.blocks} alternating blocks of {args.steps})")
    print(f"  profiling off: {off_ms:.2f} ms (fastest {1e3 * min(off):.2f})")
    print(f"  profiling on:  {on_ms:.2f} ms (fastest {1e3 * min(on):.2f}): {100 * (on_ms - off_ms) / off_ms:+.1f}% "
          f"(fastest {100 * (min(on) - min(off)) / min(off):+.1f}%)")
    print("sn.ops.relu forward + backward on a 16x16 array, per call:")
    print(f"  undecorated function: {bare_ns:.0f} ns")
    print(f"  profiling off:        {off_ns:.0f} ns ({off_ns - bare_ns:+.0f} ns; x {calls:.0f} calls = "
          f"{100 * (off_ns - bare_ns) * calls / (off_ms * 1e6):+.4f}% of a step)")
    print(f"  profiling on:         {on_ns:.0f} ns ({on_ns - off_ns:+.0f} ns; x {calls:.0f} calls = "
          f"{100 * (on_ns - off_ns) * calls / (off_ms * 1e6):+.2f}% of a step)")

if __name__ == "__main__":
    main()
