"""Special functions the ops need and NumPy lacks, compiled: ``erf`` (for GELU).

The reference backend calls the C library's ``erf`` one element at a time
from Python (``ActivationReference.erf``); here the same libm function runs
in a compiled elementwise loop, so the results agree with the reference's to
the last bit in float64 (float32 goes through ``erff``).
"""
from __future__ import annotations

import math

import numba


@numba.vectorize(["float32(float32)", "float64(float64)"], cache=True)
def erf(x):
    """``erf(x)`` elementwise, in ``x``'s dtype."""
    return math.erf(x)
