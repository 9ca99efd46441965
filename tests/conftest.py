"""Shared fixtures: run a test on every backend that can run here."""
from __future__ import annotations

import os

import numpy as np
import pytest

import scratchnet as sn
from scratchnet.backend import BACKEND_NAMES, cupy_unavailable_reason

# SCRATCHNET_BACKEND narrows the backend-parametrised tests to one backend
# (the GPU run uses SCRATCHNET_BACKEND=cupy); the reference always runs too,
# since it is the oracle the others are compared with.
_ONLY = os.environ.get("SCRATCHNET_BACKEND")


def _backend_params():
    params = []
    for name in BACKEND_NAMES:
        marks = []
        if name == "cupy":
            reason = cupy_unavailable_reason()
            marks.append(pytest.mark.gpu)
            if reason:
                marks.append(pytest.mark.skip(reason=f"cupy backend: {reason}"))
        if _ONLY and _ONLY != "auto" and name not in (_ONLY, "numpy"):
            marks.append(pytest.mark.skip(reason=f"SCRATCHNET_BACKEND={_ONLY} selects one backend"))
        params.append(pytest.param(name, marks=marks, id=name))
    return params


@pytest.fixture(params=_backend_params())
def backend(request):
    """The backend under test, selected for the duration of the test."""
    with sn.use_backend(request.param) as be:
        yield be


@pytest.fixture(scope="session")
def numba_ops():
    """The Numba backend itself, for comparing its kernels with the reference.

    Numba is a hard dependency, so this never skips: a broken install fails.
    """
    from scratchnet.kernels.numba_ops import NumbaOps

    return NumbaOps()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def to_backend(be, *arrays):
    """Host arrays -> the backend's arrays (a tuple, ``None`` kept)."""
    out = tuple(None if a is None else be.xp.asarray(a) for a in arrays)
    return out if len(out) != 1 else out[0]
