"""Shared fixtures: run a test on every backend that can run here.

``SCRATCHNET_FAKE_CUPY=1`` puts the CuPy stand-in (``tests/fake_cupy``) first on
``sys.path`` before scratchnet is imported, so ``import cupy`` finds it and the
cupy backend runs on the host: its Python logic, its kernels through the
host shim, and the stand-in's checks (no silent host copies, counted
synchronisations). ``make test`` runs a subset so (see the Makefile); on a
machine with a real GPU the variable must stay unset.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

FAKE_CUPY = os.environ.get("SCRATCHNET_FAKE_CUPY", "") not in ("", "0")
if FAKE_CUPY:
    sys.path.insert(0, str(Path(__file__).resolve().parent / "fake_cupy"))
    import cupy  # noqa: E402

    assert getattr(cupy, "STAND_IN", False), f"SCRATCHNET_FAKE_CUPY=1 but {cupy.__file__} is not the stand-in"

import scratchnet as sn  # noqa: E402  (after the stand-in, when asked for)
from scratchnet.backend import BACKEND_NAMES, cupy_unavailable_reason  # noqa: E402

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
        elif FAKE_CUPY and name != "cupy":
            # The stand-in's run is for the cupy backend; the main run covered the others.
            marks.append(pytest.mark.skip(reason="SCRATCHNET_FAKE_CUPY=1 runs the cupy backend only"))
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
