"""The ring allreduce, written out: reduce-scatter, then all-gather, over send-receive pairs.

This is the teaching version of what ``MPI_Allreduce`` (and NCCL) do for a
large buffer; the tests hold it equal to MPI's ``Allreduce``, the way the
NumPy backend holds the Numba kernels. Training uses MPI's own (tuned, and
written in C) unless ``SCRATCHNET_ALLREDUCE=ring`` asks for this one.

The algorithm. ``R`` ranks stand in a ring; rank ``r`` sends to ``r + 1`` and
receives from ``r - 1`` (mod ``R``). Each cuts its buffer of ``B`` bytes
into ``R`` chunks. Reduce-scatter first: ``R - 1`` steps; at step ``s`` rank
``r`` sends chunk ``r - s`` and adds the chunk ``r - s - 1`` it receives into
its own copy of that chunk. With 3 ranks holding ``a``, ``b``, ``c``::

    step 0   rank 0 sends a0 to 1, gets c2 from 2:      chunk 2 = a2+c2
             rank 1 sends b1 to 2, gets a0 from 0:      chunk 0 = a0+b0
             rank 2 sends c2 to 0, gets b1 from 1:      chunk 1 = b1+c1
    step 1   rank 0 sends a2+c2, gets b1+c1:            chunk 1 = a1+b1+c1   complete
             rank 1 sends a0+b0, gets a2+c2:            chunk 2 = a2+b2+c2   complete
             rank 2 sends b1+c1, gets a0+b0:            chunk 0 = a0+b0+c0   complete

After ``R - 1`` steps rank ``r`` holds the complete sum of chunk ``r + 1``.
All-gather then: ``R - 1`` more steps; at step ``s`` rank ``r`` sends chunk
``r + 1 - s``, which is complete, and overwrites chunk ``r - s`` with the one
it receives.

Every chunk of the result is summed on exactly one rank, in one order, and
then copied around the ring, so every rank ends with the *same bits*.

The cost model. Each step sends one chunk, ``B / R`` bytes, in both phases::

    bytes sent per rank = 2 (R - 1) / R * B          (< 2 B, whatever R is)
    time                = 2 (R - 1) * alpha + 2 (R - 1) / R * B / beta

with ``alpha`` the latency of one message and ``beta`` the link's bandwidth.
The bandwidth term hardly grows with ``R``: that is why the ring is the
algorithm of data parallelism. Sending every rank's buffer to one root and
back costs the root ``2 (R - 1) B`` instead. (The latency term grows with
``R``; for small buffers MPI switches to trees or recursive doubling.)
"""
from __future__ import annotations

import numpy


def chunk_bounds(n, parts):
    """``parts + 1`` offsets that cut ``n`` elements into ``parts`` chunks differing by at most one element."""
    return [i * n // parts for i in range(parts + 1)]


def ring_allreduce(comm, x, wait=None):
    """The sum of ``x`` over every rank of ``comm``, by reduce-scatter then all-gather around a ring.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
        Any communicator (``Get_rank``, ``Get_size``, ``Isend``, ``Irecv``).
    x : numpy.ndarray
        The same shape and dtype on every rank; any size, including sizes
        that do not divide by the number of ranks, and 0.
    wait : callable, optional
        ``wait(requests)`` returns when the send and the receive of a step
        are done. Default ``MPI.Request.Waitall``; the world passes its
        waiter's, which has a deadline (:mod:`.deadline`).

    Returns
    -------
    numpy.ndarray
        A new array of ``x``'s shape: ``sum over ranks of x``, bit for bit the
        same on every rank.
    """
    R, r = comm.Get_size(), comm.Get_rank()
    out = numpy.array(x, copy=True).reshape(-1)
    if R == 1:
        return out.reshape(x.shape)
    bounds = chunk_bounds(out.size, R)

    def chunk(c):
        c %= R
        return out[bounds[c]:bounds[c + 1]]

    if wait is None:
        from mpi4py import MPI

        wait = MPI.Request.Waitall

    def sendrecv(send, received, tag):  # Sendrecv, as a non-blocking pair that `wait` waits for
        wait([comm.Isend(send, dest=right, tag=tag), comm.Irecv(received, source=left, tag=tag)])

    right, left = (r + 1) % R, (r - 1) % R
    incoming = numpy.empty(bounds[1] - bounds[0] + 1, dtype=out.dtype)  # the largest chunk
    for s in range(R - 1):  # reduce-scatter
        send, into = chunk(r - s), chunk(r - s - 1)
        received = incoming[:into.size]
        sendrecv(send, received, tag=s)
        into += received
    for s in range(R - 1):  # all-gather
        send, into = chunk(r + 1 - s), chunk(r - s)
        received = incoming[:into.size]
        sendrecv(send, received, tag=R + s)
        into[...] = received
    return out.reshape(x.shape)


def ring_cost(nbytes, ranks, bandwidth, latency=0.0):
    """Seconds of a ring allreduce of ``nbytes`` over ``ranks`` ranks: ``2 (R-1) alpha + 2 (R-1)/R B / beta``.

    ``bandwidth`` in bytes per second, ``latency`` (alpha) in seconds per message.
    """
    if ranks <= 1:
        return 0.0
    return 2 * (ranks - 1) * latency + 2 * (ranks - 1) / ranks * nbytes / bandwidth
