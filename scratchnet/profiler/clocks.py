"""The clocks a profile reads: the host's ``perf_counter``, or CUDA events on the GPU.

A clock hands out *marks* and turns two marks into seconds::

    a = clock.mark(); ...work...; b = clock.mark()
    clock.wait(b)                      # the work before b has finished
    seconds = clock.seconds(a, b)

On the CPU backends an op has finished when it returns, so a mark is the
host time. On CuPy an op only *launches* its kernels; the host returns long
before the GPU is done, so host times would measure the launches. There a
mark is a CUDA event recorded on the current stream, and the time between
two marks is the GPU's own (``cupy.cuda.get_elapsed_time``), read once at
the end of the profile instead of synchronizing after every op.
"""
from __future__ import annotations

import time


class HostClock:
    """``time.perf_counter()``: the clock of the CPU backends, where an op is done when it returns."""

    name = "host perf_counter"

    def mark(self):
        return time.perf_counter()

    def wait(self, mark):
        """Nothing to wait for: host work is done when the call returns."""

    def seconds(self, a, b):
        return b - a


class CudaClock:
    """CUDA events on the current stream: the GPU's time between two marks (CuPy backend only)."""

    name = "CUDA events"

    def __init__(self):
        import cupy

        self._cuda = cupy.cuda

    def mark(self):
        event = self._cuda.Event()
        event.record()
        return event

    def wait(self, mark):
        """Block until the GPU reaches ``mark`` (so every earlier event has a time)."""
        mark.synchronize()

    def seconds(self, a, b):
        return self._cuda.get_elapsed_time(a, b) / 1e3  # milliseconds -> seconds


def clock_for(backend_name):
    """The clock that times work on backend ``backend_name``."""
    return CudaClock() if backend_name == "cupy" else HostClock()
