"""What tests/test_distributed.py runs on every rank, under ``mpiexec -n R`` or as one plain process.

    python tests/mpi_worker.py ring OUT.json          # the ring allreduce against MPI's Allreduce
    python tests/mpi_worker.py fit DTYPE OUT.npz      # fit data-parallel; rank 0 saves the final state

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
import sys

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


if __name__ == "__main__":
    if sys.argv[1] == "ring":
        ring(sys.argv[2])
    else:
        fit(sys.argv[2], sys.argv[3])
