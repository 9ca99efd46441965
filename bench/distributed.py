"""Data-parallel scaling: step time for 1 and 2 ranks on this machine, and the allreduce cost on a cluster.

For each model in ``--models`` it trains the zoo recipe (global batch 100)
for ``--steps`` steps as one process, then as 2 ranks under ``mpiexec``, one
thread each, and reports the median step time, the time of the gradient
allreduce within it, the speedup and the scaling efficiency
(``speedup / ranks``). Beside the figures: the CPU (``/proc/cpuinfo``), the
BLAS (threadpoolctl) and the MPI library.

Then the plan for real clusters: the ring allreduce's cost per step
(``scratchnet.distributed.ring_cost``: each rank sends ``2 (R-1)/R`` of the
gradient bytes), computed from each model's parameter bytes, at 10 and 100
Gb/s for 2 to 64 nodes.

Usage::

    python bench/distributed.py                         # mlp and lenet, 40 steps, best of 3 runs
    python bench/distributed.py --models lenet --steps 100 --ranks 1,2
    python bench/distributed.py --table-only            # the cluster table alone (no MPI needed)

Each run is a fresh ``mpiexec -n R python bench/distributed.py --worker ...``;
the machine is timed as it is, so other load on it shows up in the figures
(hence the best of ``--repeats`` runs).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

from common import blas_line, cpu_model, markdown_table

NODES = (2, 4, 8, 16, 32, 64)
LINKS_GBPS = (10, 100)
#: Latency of one message between nodes (alpha of the cost model), in seconds.
LATENCY = 5e-6
WARMUP_STEPS = 3


# ----------------------------------------------------------------------------- worker


def worker(args):
    """One rank: train ``args.worker`` for ``args.steps`` timed steps; rank 0 prints a RESULT line."""
    import scratchnet as sn

    world = sn.distributed.world()  # 2 ranks: each pins itself to one core and limits its threads to 1
    if world.size == 1:  # one process: as many cores and threads as asked
        from threadpoolctl import threadpool_limits

        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:args.threads])
        threadpool_limits(limits=args.threads)
    sn.use_backend(args.backend)
    sn.random.seed(0)
    recipe_class = sn.zoo.recipe_class(args.worker)
    data = recipe_class.load_data(data=args.data, download=False, progress=False)
    recipe = recipe_class(data=data)
    model = recipe.model
    parallel = sn.distributed.DataParallel(model) if world.size > 1 else None
    batches = recipe.batches()
    for _ in range(WARMUP_STEPS):
        _, x, y = next(batches)
        model.train_on_batch(x, y)
    times = []
    for _ in range(args.steps):
        _, x, y = next(batches)
        world.barrier()
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    allreduce = []
    if parallel is not None:
        for _ in range(10):
            world.barrier()
            start = time.perf_counter()
            parallel.allreduce_gradients()
            allreduce.append(time.perf_counter() - start)
    if world.is_root:
        print("RESULT " + json.dumps({
            "model": args.worker, "ranks": world.size, "threads": world.threads or args.threads,
            "step_ms": 1e3 * statistics.median(times),
            "allreduce_ms": 1e3 * statistics.median(allreduce) if allreduce else 0.0,
            "backend": sn.get_backend().name, "batch": recipe.batch_size, "data": data.source,
        }), flush=True)


# ----------------------------------------------------------------------------- report


def run_ranks(mpiexec, model, ranks, threads, steps, backend, data):
    """Median step time of one run of ``model`` on ``ranks`` ranks of ``threads`` threads (a dict from the worker)."""
    n = str(threads)
    env = {**os.environ, "OMP_NUM_THREADS": n, "NUMBA_NUM_THREADS": n, "SCRATCHNET_THREADS": n}
    worker_cmd = [sys.executable, os.path.abspath(__file__), "--worker", model, "--steps", str(steps),
                  "--threads", n, "--backend", backend, *(["--data", data] if data else [])]
    cmd = worker_cmd if ranks == 1 else [mpiexec, "-n", str(ranks), *worker_cmd]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")


def parameter_bytes(model):
    import scratchnet as sn

    with sn.use_backend("numpy"):  # counting needs no kernels
        return sn.zoo.build(model, dtype="float32").model.count_params() * 4


def cost_table(models):
    import scratchnet as sn

    rows = []
    for model in models:
        nbytes = parameter_bytes(model)
        for gbps in LINKS_GBPS:
            rows.append([model, f"{nbytes / 1e6:.2f} MB", f"{gbps} Gb/s",
                         *(f"{1e3 * sn.distributed.ring_cost(nbytes, n, gbps * 1e9 / 8, LATENCY):.2f}" for n in NODES)])
    return markdown_table(["model", "gradients", "link", *(f"{n} nodes" for n in NODES)], rows)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="mlp,lenet")
    p.add_argument("--ranks", default="1,2", help="rank counts to run, one thread per rank")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--repeats", type=int, default=3, help="runs of each configuration; the fastest is reported")
    p.add_argument("--backend", default="numba")
    p.add_argument("--data", help="MNIST IDX folder (default: what load_mnist finds offline, else the 5,000-digit sample)")
    p.add_argument("--table-only", action="store_true", help="print the cluster table only")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)
    models = args.models.split(",")
    if not args.table_only:
        mpiexec = shutil.which("mpiexec", path=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]))
        if mpiexec is None:
            sys.exit("bench/distributed.py: no mpiexec; pip install 'scratchnet[mpi]'")
        from mpi4py import MPI

        print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; {blas_line()}; MPI: {' '.join(MPI.Get_library_version().split()[:3])}")
        # One thread per rank; then, for comparison, one process on as many cores as the ranks had.
        configs = [(int(r), 1) for r in args.ranks.split(",")]
        configs.append((1, max(r for r, _ in configs)))
        rows, data_line = [], None
        for model in models:
            # Rounds of every configuration in turn, so that a burst of other load on the machine
            # slows one run of each configuration rather than all the runs of one.
            runs = {config: [] for config in configs}
            for _ in range(args.repeats):
                for ranks, threads in configs:
                    runs[ranks, threads].append(run_ranks(mpiexec, model, ranks, threads, args.steps, args.backend,
                                                          args.data))
            base = None
            for ranks, threads in configs:
                best = min(runs[ranks, threads], key=lambda r: r["step_ms"])
                data_line = best["data"]
                if (ranks, threads) == (1, 1):
                    base = best["step_ms"]
                speedup = base / best["step_ms"] if base else float("nan")
                cores = ranks * threads
                rows.append([model, ranks, threads, f"{best['batch']} = {best['batch'] // ranks} x {ranks}",
                             f"{best['step_ms']:.1f}", f"{best['allreduce_ms']:.2f}" if ranks > 1 else "-",
                             f"{speedup:.2f}x", f"{100 * speedup / cores:.0f}%"])
        print(f"data: {data_line}; backend {args.backend}; median of {args.steps} steps, best of {args.repeats} runs\n")
        print(markdown_table(["model", "ranks", "threads/rank", "batch", "step ms", "allreduce ms",
                              "speedup vs 1x1", "efficiency per core"], rows))
        print()
    print(f"Ring allreduce per step, ms: 2(R-1)/R x gradient bytes / bandwidth + 2(R-1) x {LATENCY * 1e6:.0f} us "
          "latency (float32 gradients)\n")
    print(cost_table(models))


if __name__ == "__main__":
    main()
