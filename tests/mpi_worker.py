"""What tests/test_distributed.py runs on every rank, under ``mpiexec -n R`` or as one plain process.

    python tests/mpi_worker.py ring OUT.json          # the ring allreduce against MPI's Allreduce
    python tests/mpi_worker.py fit DTYPE OUT.npz      # fit data-parallel; rank 0 saves the final state
    python tests/mpi_worker.py loop FOLDER            # the collectives of a training step, until stopped
    python tests/mpi_worker.py uneven                 # rank r makes 2 + r collectives, then leaves
    python tests/mpi_worker.py agree KEY=VALUE ...    # World.agree on these settings and a data fingerprint
    python tests/mpi_worker.py model UNITS            # DataParallel over a model of Dense(UNITS)

``fit`` trains a small model that has everything whose result could depend
on the number of ranks: dropout, L2 on both kernels, Adam's moments, global
norm clipping, a moving average, and batches that do not divide evenly (the
last one of each epoch has a single row, so with 2 ranks one rank's share is
empty). Rank 0 saves every tensor and the history, and the SHA-256 of every
tensor on every rank.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time

import numpy as np

import scratchnet as sn


def ring(out):
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    results = []
    for dtype in ("float64", "float32", "int64"):
        for n in (0, 1, 2, 3, 5, 7, 64, 1000, 1001):
            rng = np.random.default_rng([rank, n])
            x = (rng.standard_normal(n) * 10).astype(dtype) if dtype != "int64" else rng.integers(-99, 99, n)
            expected = x.copy()
            comm.Allreduce(MPI.IN_PLACE, expected, op=MPI.SUM)
            got = sn.distributed.ring_allreduce(comm, x)
            # The sums differ only by the order of the additions: float rounding (the values are ~10).
            atol = {"float64": 1e-12, "float32": 1e-4, "int64": 0}[dtype]
            close = bool(np.allclose(got, expected, rtol=0, atol=atol))
            exact = bool(np.array_equal(got, expected))
            digests = comm.gather(hashlib.sha256(got.tobytes()).hexdigest(), root=0)
            results.append({"dtype": dtype, "n": n, "close": close, "exact": exact, "shape": list(got.shape),
                            "same_on_every_rank": None if digests is None else len(set(digests)) == 1})
    if rank == 0:
        with open(out, "w") as f:
            json.dump({"ranks": comm.Get_size(), "results": results}, f)


def fit(dtype, out):
    sn.random.seed(0)
    model = sn.Sequential([
        sn.layers.Dense(16, activation="relu", kernel_regularizer=sn.regularizers.l2(1e-2)),
        sn.layers.Dropout(0.3),
        sn.layers.Dense(5, kernel_regularizer=sn.regularizers.l2(1e-2)),
    ], dtype=dtype)
    model.build((None, 8))
    model.compile(sn.optimizers.Adam(1e-2, global_clipnorm=1.0), loss=sn.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.ema = sn.ExponentialMovingAverage(0.9, num_updates=lambda: model.step)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((49, 8)).astype(dtype)
    y = rng.integers(0, 5, 49)
    world = sn.distributed.world()
    if world.size > 1:
        sn.distributed.DataParallel(model)
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0)  # batches of 16, 16, 16 and 1
    tensors = {f"weight:{p.name}": sn.to_numpy(p.value) for p in model.parameters()}
    tensors.update({f"optimizer:{k}": v for k, v in model.optimizer.state_dict().items()})
    tensors.update({f"ema:{k}": v for k, v in model.ema.state_dict().items()})
    digests = world.gather({k: hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest() for k, v in tensors.items()})
    if world.is_root:
        np.savez(out, **tensors, history=json.dumps({"history": history.history, "digests": digests,
                                                     "step": model.step, "ranks": world.size}))


def loop(folder):
    """A training step's collectives, over and over; SIGTERM stops every rank at the same step, as training does.

    Each rank writes its pid to ``FOLDER/rank-R.pid`` once it has made its
    first collectives, so that a test can stop one. On SIGTERM (mpiexec
    forwards it) each rank prints ``stopped at step N`` and exits 143.
    """
    world = sn.distributed.world()
    stop = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.append(signum))  # like StopOnSignal
    gradients = np.ones(100_000, dtype=np.float32)
    step = 0
    while True:
        step += 1
        world.step = step
        world.allreduce(gradients, what="allreduce of gradients")
        world.allreduce_sum([1.0, 2.0], what="allreduce of the loss and metrics")
        if step == 1:
            with open(os.path.join(folder, f"rank-{world.rank}.pid"), "w") as f:
                f.write(str(os.getpid()))
        if world.any(bool(stop), what="agreement on stopping"):
            print(f"rank {world.rank} stopped at step {step}", flush=True)
            sys.exit(143)
        time.sleep(0.02)


def uneven():
    """Rank r makes 2 + r barriers then exits: rank 1 waits for rank 0 at its third, which never comes."""
    world = sn.distributed.world()
    for _ in range(2 + world.rank):
        world.barrier(what="barrier of the test")
    print(f"rank {world.rank} done", flush=True)


def agree(settings):
    """``World.agree`` on ``KEY=VALUE`` settings and the fingerprint of ``examples`` rows of data."""
    config = dict(item.split("=", 1) for item in settings)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((int(config.pop("examples", 50)), 4)).astype(np.float32)
    config["data"] = sn.distributed.fingerprint({"train": x})
    try:
        digest = sn.distributed.world().agree(config)
    except sn.distributed.DisagreementError as e:
        print(f"rank {sn.distributed.rank()}: {e}", flush=True)
        sys.exit(e.code)
    print(f"rank {sn.distributed.rank()} agrees: {digest}", flush=True)


def model(units):
    """``DataParallel`` over ``Dense(units)``: ranks given different ``units`` must refuse to train."""
    net = sn.Sequential([sn.layers.Dense(int(units))])
    net.build((None, 3))
    net.compile(sn.optimizers.SGD(0.1), loss="mse")
    try:
        sn.distributed.DataParallel(net)
    except sn.distributed.DisagreementError as e:
        print(f"rank {sn.distributed.rank()}: {e}", flush=True)
        sys.exit(e.code)
    print(f"rank {sn.distributed.rank()} trains", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "ring":
        ring(sys.argv[2])
    elif sys.argv[1] == "loop":
        loop(sys.argv[2])
    elif sys.argv[1] == "uneven":
        uneven()
    elif sys.argv[1] == "agree":
        agree(sys.argv[2:])
    elif sys.argv[1] == "model":
        model(sys.argv[2])
    else:
        fit(sys.argv[2], sys.argv[3])
