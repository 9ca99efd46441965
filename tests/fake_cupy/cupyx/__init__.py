"""``cupyx`` of the CuPy stand-in: the synchronisation guard, and nothing else scratchnet uses."""
from __future__ import annotations

from cupy._core import DeviceSynchronized, allow_synchronize  # noqa: F401
