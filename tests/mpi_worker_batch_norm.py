"""What tests/test_distributed.py's batch-norm test runs on every rank, under ``mpiexec -n R`` or as one process.

    python tests/mpi_worker_batch_norm.py DTYPE OUT.npz CHECKPOINT_DIR

Trains ``BatchNormalization -> Dense(relu) -> BatchNormalization -> Dense`` with
``fit`` (data-parallel when launched on several ranks). The first batch norm reads the data itself, so
its moving averages depend on the data alone: one process and R ranks must end with the same ones. Rank 0
saves every tensor, the SHA-256 of every tensor on every rank, and a checkpoint.
"""
from __future__ import annotations

import hashlib
import json
import sys

import numpy as np

import scratchnet as sn


def main(dtype, out, checkpoint_dir):
    sn.random.seed(0)
    model = sn.Sequential([
        sn.layers.BatchNormalization(momentum=0.5, name="bn_data"),
        sn.layers.Dense(6, activation="relu"),
        sn.layers.BatchNormalization(momentum=0.8, name="bn_hidden"),
        sn.layers.Dense(3),
    ], dtype=dtype)
    model.build((None, 4))
    model.compile(sn.optimizers.SGD(0.1), loss=sn.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(2)
    # Channels with means far from 0 and unequal scales; rows sorted so that the two shards' means differ.
    x = (rng.standard_normal((36, 4)) * [1.0, 3.0, 0.5, 2.0] + [5.0, -2.0, 0.0, 10.0]).astype(dtype)
    x = x[np.argsort(x[:, 0])]
    y = rng.integers(0, 3, 36)
    world = sn.distributed.world()
    if world.size > 1:
        sn.distributed.DataParallel(model)
    model.fit(x, y, batch_size=12, epochs=2, shuffle=False, verbose=0)  # 6 steps of 12 rows: 6 per rank
    tensors = {p.name: sn.to_numpy(p.value) for p in model.parameters()}
    digests = world.gather({k: hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest()
                            for k, v in tensors.items()})
    if world.is_root:
        path = sn.Checkpoint(model).save(checkpoint_dir, step=model.step)
        np.savez(out, **tensors, meta=json.dumps({"digests": digests, "ranks": world.size, "checkpoint": path}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
