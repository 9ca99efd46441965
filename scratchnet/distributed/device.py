"""Allreduce of a GPU (CuPy) buffer: over NCCL when CuPy has it, else staged through the host.

The CPU backends hand NumPy buffers straight to MPI. A CuPy buffer takes one
of two paths, chosen once per world by :func:`device_allreduce`:

- **NCCL** (``cupy.cuda.nccl``): GPU to GPU over NVLink, PCIe or the
  network, on the current stream, without a copy to the host. Rank 0 makes a
  NCCL id, MPI broadcasts it, and every rank joins one communicator.
- **Host staging**: copy the buffer to the host, ``MPI_Allreduce`` it there,
  copy it back. Slower (two PCIe copies per step), but it needs nothing
  beyond MPI; it is the fallback when CuPy has no NCCL, or NCCL cannot make
  a communicator (two ranks on one GPU, say).

With several GPUs in a machine each rank takes its own: the world sets
``CUDA_VISIBLE_DEVICES`` to the local rank before CUDA starts (see
:func:`choose_gpu`).
"""
from __future__ import annotations

import os
import sys

import numpy


def device_allreduce(world):
    """A function ``allreduce(buf) -> buf`` summing a CuPy array over ``world``'s ranks, in place."""
    nccl = _nccl_communicator(world)
    if nccl is not None:
        return nccl
    return HostStaged(world)


class HostStaged:
    """Device -> host, ``MPI_Allreduce`` on the host, host -> device."""

    path = "host staging"

    def __init__(self, world):
        self.world = world

    def __call__(self, buf):
        import cupy

        host = cupy.asnumpy(buf)
        self.world.allreduce(host)
        buf.set(host)
        return buf


class NcclAllreduce:
    """``ncclAllReduce`` on the current CuPy stream, in place."""

    path = "NCCL"

    def __init__(self, communicator, nccl):
        self.communicator, self.nccl = communicator, nccl
        self.types = {numpy.dtype(numpy.float32): nccl.NCCL_FLOAT32, numpy.dtype(numpy.float64): nccl.NCCL_FLOAT64}

    def __call__(self, buf):
        import cupy

        if buf.dtype not in self.types:
            raise ValueError(f"allreduce over NCCL: unsupported dtype {buf.dtype} (float32 or float64)")
        stream = cupy.cuda.get_current_stream()
        self.communicator.allReduce(buf.data.ptr, buf.data.ptr, buf.size, self.types[buf.dtype], self.nccl.NCCL_SUM,
                                    stream.ptr)
        return buf


def _nccl_communicator(world):
    """An :class:`NcclAllreduce` over ``world``'s ranks, or None when any rank lacks NCCL or cannot join."""
    try:
        from cupy.cuda import nccl
    except ImportError:
        nccl = None
    if world.any(nccl is None or not getattr(nccl, "available", True)):
        return None
    uid = world.bcast(nccl.get_unique_id() if world.is_root else None)
    try:
        communicator, failed = nccl.NcclCommunicator(world.size, uid, world.rank), None
    except Exception as e:  # noqa: BLE001 (an NcclError or a CUDA error: fall back on the host)
        communicator, failed = None, e
    if world.any(failed is not None):
        if failed is not None:
            print(f"rank {world.rank}: NCCL failed ({failed}); averaging gradients through the host", file=sys.stderr)
        return None
    return NcclAllreduce(communicator, nccl)


def choose_gpu(local_rank):
    """Give each rank of a machine its own GPU (``CUDA_VISIBLE_DEVICES``), before CUDA starts.

    Does nothing when the user chose already, when CUDA has started (CuPy is
    imported) or when the machine has fewer than two GPUs. The GPUs are
    counted from ``/proc/driver/nvidia/gpus``, so nothing is imported.
    """
    if "CUDA_VISIBLE_DEVICES" in os.environ or "cupy" in sys.modules:
        return
    try:
        count = len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        return
    if count > 1:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(local_rank % count)
