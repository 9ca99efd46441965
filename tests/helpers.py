"""The test suite's shared helpers: arrays to the backend, comparison with the project's tolerances, TensorFlow on demand.

Import them by name (``from helpers import assert_close, to_backend``):
``tests/`` is on ``sys.path`` (pyproject's ``[tool.pytest.ini_options]
pythonpath``). Fixtures and hooks stay in ``conftest.py``; the hypothesis
strategies are in ``strategies.py``. Gradient checks by finite differences
live in the public module ``scratchnet.gradcheck``.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from scratchnet.backend import BACKEND_NAMES, cupy_unavailable_reason

# SCRATCHNET_BACKEND narrows the backend-parametrised tests to one backend
# (the GPU run uses SCRATCHNET_BACKEND=cupy); the reference always runs too,
# since it is the oracle the others are compared with.
_ONLY = os.environ.get("SCRATCHNET_BACKEND")
# SCRATCHNET_FAKE_CUPY=1: the run on the CuPy stand-in (conftest.py puts it on sys.path).
FAKE_CUPY = os.environ.get("SCRATCHNET_FAKE_CUPY", "") not in ("", "0")


def backend_params(names=BACKEND_NAMES):
    """``pytest.param`` per backend in ``names``, marked to skip where it cannot or should not run here.

    cupy is marked ``gpu`` and skips without CuPy; ``SCRATCHNET_BACKEND`` keeps one backend (and the
    reference); the stand-in's run (``SCRATCHNET_FAKE_CUPY=1``) keeps cupy alone. The ``backend``
    fixture of ``conftest.py`` is parametrised with all of them.
    """
    params = []
    for name in names:
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


def to_backend(be, *arrays):
    """Host arrays -> the backend's arrays (a tuple, ``None`` kept; one array alone when given one)."""
    out = tuple(None if a is None else be.xp.asarray(a) for a in arrays)
    return out if len(out) != 1 else out[0]


def tolerances(dtype):
    """``(rtol, atol)`` of the project for ``dtype``: ~1e-9 relative in float64, ~1e-4 in float32."""
    if np.dtype(dtype) == np.float64:
        return 1e-9, 1e-11
    return 1e-4, 1e-5


def assert_close(actual, expected, dtype, name=""):
    """Compare with the project's tolerances (:func:`tolerances`), the absolute one scaled by the reference's magnitude."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
    rtol, atol = tolerances(dtype)
    # Scale the absolute tolerance by the magnitude of the reference, so sums of
    # many terms (weight gradients) are compared relatively.
    scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol * scale, err_msg=name)


def load_tensorflow():
    """TensorFlow, the referee, imported on demand (the module).

    Outside CI a missing TensorFlow skips the comparison (the GPU image has
    none; the reference is proved against TensorFlow on the CPU). In CI it is
    an error: there the referee must run.
    """
    if os.environ.get("CI"):
        import tensorflow

        return tensorflow
    return pytest.importorskip("tensorflow", reason="TensorFlow is the referee; install scratchnet[test]")
