"""Keep freed memory for the next step: glibc's ``malloc`` told not to hand large blocks back to the OS.

A training step allocates and frees the same large arrays at every step (a
convolution's output, an LSTM's gates, every gradient). glibc serves a block
above its mmap threshold (128 KiB to start with) with a fresh ``mmap`` and
unmaps it when it is freed, so each step touches the pages of its arrays for
the first time again: some 3,500 page faults per call of a 256-unit LSTM at
batch 100, each a trap into the kernel (microseconds in a virtual machine),
which made the op much slower than its kernels (figures in ``bench/RESULTS.md``).

:func:`keep_freed_memory` raises the threshold to glibc's maximum (32 MiB) and
stops the trimming of the heap, so freed blocks are reused: after the first
step, no page faults. The resident memory then stays at its peak between
steps instead of shrinking; the peak itself does not change. PyTorch's CPU
allocator makes the same trade. Only glibc has ``mallopt``; elsewhere, or with
``SCRATCHNET_KEEP_FREED_MEMORY=0``, nothing is changed.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 << 20  # glibc's largest on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 2**31 - 1  # the largest an int takes: the top of the heap is never trimmed

_done = False


def keep_freed_memory():
    """Tell glibc to keep blocks up to 32 MiB for reuse (once per process); True if it took effect."""
    global _done
    if _done:
        return True
    if os.environ.get("SCRATCHNET_KEEP_FREED_MEMORY", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _done
