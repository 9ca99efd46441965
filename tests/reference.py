"""The test suite's referee helpers: TensorFlow on demand, and comparison with the project's tolerances.

Gradient checks by finite differences live in the public module
``scratchnet.gradcheck``; this module holds what only the tests need.
"""
from __future__ import annotations

import os

import numpy as np
import pytest


def assert_close(actual, expected, dtype, name=""):
    """Compare with the project's tolerances: ~1e-9 relative in float64, ~1e-4 in float32."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
    if np.dtype(dtype) == np.float64:
        rtol, atol = 1e-9, 1e-11
    else:
        rtol, atol = 1e-4, 1e-5
    # Scale the absolute tolerance by the magnitude of the reference, so sums of
    # many terms (weight gradients) are compared relatively.
    scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol * scale, err_msg=name)


def tf():
    """TensorFlow, imported on demand.

    Outside CI a missing TensorFlow skips the comparison (the GPU image has
    none; the reference is proved against TensorFlow on the CPU). In CI it is
    an error: there the referee must run.
    """
    if os.environ.get("CI"):
        import tensorflow

        return tensorflow
    return pytest.importorskip("tensorflow", reason="TensorFlow is the referee; install scratchnet[test]")
