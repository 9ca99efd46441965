"""``cupy.cuda`` of the stand-in: one device, streams and events on a host clock, no NCCL.

The waits (``Stream.synchronize``, ``Event.synchronize``,
``Device.synchronize``) are counted as synchronisations: they are what makes
the host wait for the GPU. Kernels run when launched here, so every event
has already happened when it is recorded; its time is the host's.
"""
from __future__ import annotations

import time

from .. import _core
from . import compiler, runtime  # noqa: F401
from .._core import MemoryPointer  # noqa: F401


class Device:
    def __init__(self, device=None):
        self.id = int(device or 0)
        if self.id != 0:
            raise runtime.CUDARuntimeError(f"cudaErrorInvalidDevice: the stand-in has one device, not {self.id}")
        self.compute_capability = "90"

    def use(self):
        pass

    def synchronize(self):
        _core.sync("Device.synchronize")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return hash(self.id)

    def __repr__(self):
        return f"<CUDA Device {self.id} (stand-in)>"


class Event:
    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self.time = None
        self.ptr = id(self)

    def record(self, stream=None):
        self.time = time.perf_counter()

    @property
    def done(self):
        return True

    def synchronize(self):
        _core.sync("Event.synchronize")


def get_elapsed_time(start_event, end_event):
    """Milliseconds between two recorded events (the host's clock here)."""
    if start_event.time is None or end_event.time is None:
        raise RuntimeError("cudaErrorInvalidResourceHandle: an event was not recorded")
    return (end_event.time - start_event.time) * 1e3


class Stream:
    null = None

    def __init__(self, null=False, non_blocking=False, ptds=False):
        self.ptr = 0 if null else id(self)

    def synchronize(self):
        _core.sync("Stream.synchronize")

    def record(self, event=None):
        event = event or Event()
        event.record(self)
        return event

    def use(self):
        global _current
        _current = self
        return self

    def __enter__(self):
        self._previous = get_current_stream()
        return self.use()

    def __exit__(self, *exc):
        self._previous.use()
        return False

    @property
    def done(self):
        return True


Stream.null = Stream(null=True)
_current = Stream.null


def get_current_stream(device_id=None):
    return _current
