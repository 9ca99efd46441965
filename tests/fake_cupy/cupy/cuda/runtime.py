"""``cupy.cuda.runtime`` of the stand-in: one device that says what it is."""
from __future__ import annotations

from .. import _core


class CUDARuntimeError(RuntimeError):
    pass


def getDeviceCount():
    return 1


def getDevice():
    return 0


def getDeviceProperties(device):
    return {"name": b"CuPy stand-in (NumPy on the host)", "major": 9, "minor": 0,
            "totalGlobalMem": 1 << 34, "sharedMemPerBlock": 48 * 1024, "maxThreadsPerBlock": 1024,
            "multiProcessorCount": 1}


def runtimeGetVersion():
    return 13000


def driverGetVersion():
    return 13000


def deviceSynchronize():
    _core.sync("deviceSynchronize")
