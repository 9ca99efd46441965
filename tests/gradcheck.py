"""Finite-difference gradient checks and TensorFlow helpers for the op tests."""
from __future__ import annotations

import os

import numpy as np
import pytest


def directional_check(f, inputs, grads, rng, eps=1e-6, rtol=1e-6, atol=1e-9):
    """Check analytic gradients with one central difference along a random direction.

    ``f(*inputs) -> scalar`` (float64). ``grads[i]`` is the analytic gradient of
    ``f`` with respect to ``inputs[i]`` (``None`` to skip an input, e.g. ids).
    With a random direction ``v_i`` per input, the directional derivative
    ``(f(x + eps v) - f(x - eps v)) / 2 eps`` must equal ``sum_i <grads_i, v_i>``,
    so one difference covers every element of every input (Chainer's method).
    Each input is also checked on its own, so that an error in one gradient
    cannot be cancelled by another.
    """
    dirs = [None if g is None else rng.standard_normal(np.shape(x)) for x, g in zip(inputs, grads)]

    def fd(which):
        plus = [x if (d is None or i not in which) else x + eps * d for i, (x, d) in enumerate(zip(inputs, dirs))]
        minus = [x if (d is None or i not in which) else x - eps * d for i, (x, d) in enumerate(zip(inputs, dirs))]
        return (f(*plus) - f(*minus)) / (2 * eps)

    idx = [i for i, g in enumerate(grads) if g is not None]
    for i in idx + [None]:
        which = set(idx) if i is None else {i}
        numeric = fd(which)
        analytic = sum(float(np.sum(np.asarray(grads[j]) * dirs[j])) for j in which)
        label = "all inputs" if i is None else f"input {i}"
        assert numeric == pytest.approx(analytic, rel=rtol, abs=atol), f"directional derivative mismatch for {label}"


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
