"""Gradient checks: hand-written backward passes against finite differences and across backends.

Every scratchnet op returns ``(y, backprop)``; so does any function a user
writes in the same form. This package checks three things about such a
function, with nothing but NumPy and scratchnet (no pytest):

- :func:`check_op`: that ``backprop`` returns the gradient of every float
  input, by central finite differences of the scalar
  ``L(inputs) = sum_k <y_k, dy_k>`` (the outputs ``y_k`` weighted by fixed
  random ``dy_k``), whose exact gradient is what ``backprop(dy)`` must return;
- :func:`check_layer`: the same for a layer's input gradient and for the
  gradient it accumulates into every parameter's ``.grad``;
- :func:`check_backends` (and :func:`check_against`): that every backend, or
  a second implementation, gives the NumPy reference's outputs and gradients.

A failure raises :class:`GradcheckError` (an ``AssertionError``) whose message
names the input (by the function's parameter name) or the parameter (by its
store name, ``dense/kernel``), the worst element's index where one is known,
the analytic and numeric values, the relative error and the outputs used.
Success returns a report (print it for a table).

Modes
-----
``mode="directional"`` (the default, Chainer's ``check_backward``): one
random direction ``v_i`` per input ``x_i``; the central difference
``(L(x_i + eps v_i) - L(x_i - eps v_i)) / 2 eps`` must equal
``<g_i, v_i>``. Two evaluations per input check every element at once, so it
is cheap for big inputs. Each input is checked on its own, so an error in one
gradient cannot cancel an error in another. When an input fails and has at
most ``max_full`` (4096) elements, it is re-checked element by element to
report the worst index. ``mode="full"`` checks every element (two
evaluations each): for small inputs.

Non-differentiable points
-------------------------
ReLU at 0 and max-pool ties have no derivative: the central difference there
is the mean of two one-sided slopes, which no correct backward returns. The
checker compares the forward difference ``(L(x + eps v) - L(x)) / eps`` with
the backward one; when they disagree beyond tolerance, and the gap does not
halve with the step as smooth curvature would, the point is
non-differentiable (within ``eps`` of a kink). There the analytic value must
equal one of the two one-sided derivatives (second-order one-sided
differences): a gradient that picks a side passes; one that splits a tie
(``dy / 2`` to each maximum) or is simply wrong fails. Such points are counted
and listed in the report, never a random failure. In directional mode a
non-smooth direction is resolved element by element (inputs up to
``max_full`` elements) or by bisecting the direction until the kinks are
isolated (larger inputs). Finite differences cannot say *which* side a
backward should pick (the first maximum of a tie, as TensorFlow does, or the
last): compare with a reference for that (:func:`check_against`,
:func:`check_backends`).

Tolerances
----------
Defaults, for float64 (cs231n's rule of thumb: a relative error below
``1e-7`` is fine, above ``1e-4`` is wrong):

- ``eps = 1e-6``: the finite-difference step (truncation ``~eps**2``).
- ``rtol = 1e-5``, ``atol = 1e-8``: analytic ``a`` and numeric ``n`` agree when
  ``|a - n| <= atol * scale + rtol * max(|a|, |n|) + noise``, where ``scale``
  is the gradient's scale (``max(1, max |g|)`` per element,
  ``max(1, sum |g v|)`` along a direction) and ``noise`` bounds the round-off
  of the difference itself (``16 eps_mach sum |y dy| / eps``).
- The relative error reported is ``|a - n| / max(|a|, |n|, (atol * scale + noise) / rtol)``:
  below the level where the absolute tolerance takes over, values are floored
  there, so a reported ``max_rel_error <= rtol`` means (within a factor 2) a pass.

float32
-------
Finite differences need float64: in float32 a step of ``1e-6`` is below the
resolution of the inputs. Float32 (or float16) inputs of :func:`check_op` are
**upcast** to float64 with a :class:`GradcheckWarning`. If the function then
fails (an op refusing to mix a float64 input with a float32 constant the
function closes over) or returns a float32 output (it computes in float32
somewhere), that is a :class:`GradcheckError` saying so: give the function
float64 constants. :func:`check_layer` cannot upcast a layer, which casts its
input to its own dtype: it refuses a float32 layer (create it with
``dtype="float64"``). :func:`check_backends` keeps the dtypes it is given,
with dtype-aware tolerances (float64 ``rtol 1e-9``, float32 ``rtol 1e-4``).

Randomness
----------
Every evaluation starts from the same state of ``scratchnet.random``'s global
generator (restored afterwards), so that dropout without a seed draws the same
mask each time. Other randomness makes the function non-deterministic, which
is detected (two evaluations at the same point differ) and reported.

Layout
------
``report.py`` the reports and the errors; ``numeric.py`` the
finite-difference engine (directions, elements, kinks, the default step and
tolerances); ``calling.py`` how a ``(y, backprop)`` function is called and its
gradients collected; ``ops.py`` :func:`check_op`; ``layers.py``
:func:`check_layer`; ``compare.py`` :func:`check_backends` and
:func:`check_against`. Each imports only those before it in this list.

Examples
--------
>>> import numpy as np, scratchnet as sn
>>> rng = np.random.default_rng(0)
>>> report = sn.gradcheck.check_op(sn.ops.dense, rng.normal(size=(4, 3)), rng.normal(size=(3, 2)), np.zeros(2))
>>> report["w"].max_rel_error < 1e-7
True
"""
from __future__ import annotations

from .compare import COMPARE_TOLERANCES, check_against, check_backends
from .layers import check_layer
from .numeric import ATOL, EPS, MAX_FULL, RTOL
from .ops import check_op
from .report import ComparisonReport, Difference, GradcheckError, GradcheckReport, GradcheckWarning, GradientCheck

__all__ = [
    "ATOL",
    "COMPARE_TOLERANCES",
    "EPS",
    "MAX_FULL",
    "RTOL",
    "ComparisonReport",
    "Difference",
    "GradcheckError",
    "GradcheckReport",
    "GradcheckWarning",
    "GradientCheck",
    "check_against",
    "check_backends",
    "check_layer",
    "check_op",
]
