"""Data-parallel training over MPI: the same model, the same result, on one machine or many.

::

    mpiexec -n 4 scratchnet train lenet                   # the CLI needs nothing more
    mpiexec -n 4 -f hosts python train.py                 # your own script, on the machines in `hosts`

Every rank holds the whole model and draws the same global batch; it steps on
its rows (:class:`Shard`), the gradients are averaged in one ``Allreduce``
(:func:`allreduce_gradients`), and every rank applies the same update. The
result does not depend on the number of ranks: dropout masks are drawn for the
global batch and sliced, the L2 gradient is counted once, and a short batch is
weighted by its size. See :mod:`.data_parallel` for the step, :mod:`.world`
for how a process finds its world (and why ``import scratchnet`` never
imports mpi4py), :mod:`.ring` for the ring allreduce written out, with its
cost model, and :mod:`.device` for GPUs (NCCL, or staging through the host).

With ``fit`` or :func:`scratchnet.training.train`::

    sn.random.seed(0)                         # optional: rank 0's generator is broadcast anyway
    model.compile(...)
    sn.distributed.DataParallel(model)        # broadcast rank 0's state; train_on_batch shards from now on
    model.fit(x, y, batch_size=100)           # batch_size is the global batch; only rank 0 shows progress

In a loop of your own::

    sn.distributed.pin_cores()                # first: this rank's share of the machine's cores
    ...
    shard = sn.distributed.Shard.of(len(x), sn.distributed.rank(), sn.distributed.world_size())
    logits, backprop = model.forward(shard.take(x), training=shard)  # dropout: the global mask, these rows
    loss, dloss = loss_fn(shard.take(y), logits)
    backprop(dloss())
    sn.distributed.allreduce_gradients(model, weight=shard.weight)   # weighted by the shard's share
    opt.step(model.trainable_parameters, regularize=True)            # + the L2 gradient, then the update

Outside ``mpiexec`` (or without mpi4py) the world has one rank and all of
this costs nothing.

Nothing hangs (:mod:`.deadline`): every collective waits at most
:func:`get_timeout` seconds (300 by default; :func:`set_timeout`,
``SCRATCHNET_MPI_TIMEOUT``) for the last rank, then names the ranks that did
not arrive and ends the job; a SIGTERM reaching a waiting rank ends the job
within 5 s. Nothing disagrees silently (:mod:`.agree`): before the first
step, ::

    world.agree({"steps": 1000, "batch_size": 100, "seed": 0, "data": sn.distributed.fingerprint(data)})

raises :class:`DisagreementError` on every rank, naming the keys that
differ and the ranks holding each value, when the ranks were launched with
different arguments or read different data.
"""
from __future__ import annotations

from .agree import array_fingerprint, fingerprint
from .data_parallel import DataParallel, GradientBuffer, allreduce_gradients, broadcast_state
from .deadline import DEFAULT_TIMEOUT
from .ring import ring_allreduce, ring_cost
from .cores import pin_cores
from .shard import Shard
from .world import (DisagreementError, DistributedError, MPIWorld, World, current_world, get_timeout, rank,
                    set_timeout, world, world_size)

__all__ = ["DEFAULT_TIMEOUT", "DataParallel", "DisagreementError", "DistributedError", "GradientBuffer", "MPIWorld",
           "Shard", "World", "allreduce_gradients", "array_fingerprint", "broadcast_state", "current_world",
           "fingerprint", "get_timeout", "pin_cores", "rank", "ring_allreduce", "ring_cost", "set_timeout", "world",
           "world_size"]
