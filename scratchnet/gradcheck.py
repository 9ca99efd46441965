"""Gradient checks: hand-written backward passes against finite differences and across backends.

Every scratchnet op returns ``(y, backprop)``; so does any function a user
writes in the same form. This module checks three things about such a
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

Examples
--------
>>> import numpy as np, scratchnet as sn
>>> rng = np.random.default_rng(0)
>>> report = sn.gradcheck.check_op(sn.ops.dense, rng.normal(size=(4, 3)), rng.normal(size=(3, 2)), np.zeros(2))
>>> report["w"].max_rel_error < 1e-7
True
"""
from __future__ import annotations

import inspect
import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from . import random as _random
from .backend import available_backends, get_backend, to_numpy, use_backend

__all__ = [
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

EPS = 1e-6
RTOL = 1e-5
ATOL = 1e-8
MAX_FULL = 4096
# Tolerances of a comparison between two implementations, by dtype: (rtol, atol).
COMPARE_TOLERANCES = {np.dtype(np.float64): (1e-9, 1e-11), np.dtype(np.float32): (1e-4, 1e-5)}

_EPS_MACH = float(np.finfo(np.float64).eps)
_MAX_LISTED = 100  # non-differentiable indices kept in a report


class GradcheckError(AssertionError):
    """A gradient (or an output) is wrong; the message says which and by how much.

    Attributes
    ----------
    names : list of str
        The inputs or parameters that failed (``["w"]``, ``["dense/kernel"]``).
    """

    def __init__(self, message, names=()):
        super().__init__(message)
        self.names = list(names)


class GradcheckWarning(UserWarning):
    """The check changed something it was given (a float32 input upcast to float64)."""


# -- reports ------------------------------------------------------------------------------------
@dataclass
class GradientCheck:
    """The result of checking one input's or one parameter's gradient.

    Attributes
    ----------
    name : str
        The input's parameter name (``"x"``, ``"inputs[2]"``) or the parameter's store name.
    kind : {"input", "parameter"}
    shape : tuple of int
    mode : str
        How it was checked: ``"directional"``, ``"full"``, or a directional check
        followed by ``"full"`` / ``"bisect"`` where the direction failed or was not smooth.
    max_abs_error, max_rel_error : float
        Largest ``|a - n|`` and relative error over the comparisons made.
    n_checks : int
        Number of comparisons (directions or elements).
    n_failed : int
        Comparisons beyond tolerance.
    nondiff_indices : list of tuple of int
        Elements found at a non-differentiable point (at most 100 listed).
    n_nondiff : int
        How many were found in all (directions included when no element was isolated).
    worst : dict or None
        The comparison nearest to (or furthest beyond) its tolerance: ``index``
        (a tuple, or None for a direction), ``analytic``, ``numeric``,
        ``abs_error``, ``rel_error``, ``tolerance``, ``nondiff``.
    notes : list of str
    """

    name: str
    kind: str
    shape: tuple
    mode: str
    max_abs_error: float = 0.0
    max_rel_error: float = 0.0
    n_checks: int = 0
    n_failed: int = 0
    nondiff_indices: list = field(default_factory=list)
    n_nondiff: int = 0
    worst: dict | None = None
    notes: list = field(default_factory=list)

    @property
    def passed(self):
        return self.n_failed == 0


class GradcheckReport:
    """What :func:`check_op` and :func:`check_layer` return: one :class:`GradientCheck` per float input.

    ``report["w"]`` is the check of the input or parameter ``w``; iterating
    yields the checks in order; ``print(report)`` shows a table.
    """

    def __init__(self, title, checks, outputs, settings):
        self.title = title
        self.checks = list(checks)
        self.outputs = list(outputs)
        self.settings = dict(settings)

    def __getitem__(self, name):
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"{name!r}: the report holds {', '.join(repr(c.name) for c in self.checks) or 'nothing'}")

    def __iter__(self):
        return iter(self.checks)

    def __len__(self):
        return len(self.checks)

    @property
    def passed(self):
        return all(c.passed for c in self.checks)

    @property
    def n_nondiff(self):
        return sum(c.n_nondiff for c in self.checks)

    def __str__(self):
        s = self.settings
        head = (f"{self.title}: {'passed' if self.passed else 'FAILED'} (mode {s['mode']}, eps {s['eps']:g}, "
                f"rtol {s['rtol']:g}, atol {s['atol']:g}; outputs used: {', '.join(self.outputs) or 'none'})")
        rows = [("", "name", "shape", "mode", "max abs err", "max rel err", "checks", "non-diff")]
        for c in self.checks:
            rows.append((c.kind, c.name, str(c.shape), c.mode, f"{c.max_abs_error:.2e}", f"{c.max_rel_error:.2e}",
                         f"{c.n_checks - c.n_failed}/{c.n_checks} ok", str(c.n_nondiff)))
        lines = [head, *_table(rows)]
        for c in self.checks:
            if c.nondiff_indices:
                more = "" if len(c.nondiff_indices) == c.n_nondiff else f" (first {len(c.nondiff_indices)})"
                lines.append(f"  {c.name}: non-differentiable at {_indices(c.nondiff_indices)}{more}")
            lines.extend(f"  {c.name}: {note}" for note in c.notes)
        return "\n".join(lines)

    __repr__ = __str__


@dataclass
class Difference:
    """The largest difference of one output or gradient between an implementation and the reference.

    Attributes
    ----------
    backend : str
        The backend (or, for :func:`check_against`, ``"fn on <backend>"``) compared.
    kind : {"output", "gradient"}
    name : str
        ``"y"``, ``"y[1]"``, or the input's name for a gradient.
    dtype : str
    max_abs_diff, max_rel_diff : float
        Largest ``|got - want|``, and largest ``|got - want| / max(|want|, atol * scale / rtol)``
        (values below where ``atol`` takes over are floored there).
    rtol, atol : float
        Tolerance used: ``|got - want| <= atol * max(1, max |want|) + rtol * |want|``.
    worst_index : tuple of int or None
    got, want : float or None
        The values at ``worst_index``.
    passed : bool
    """

    backend: str
    kind: str
    name: str
    dtype: str
    max_abs_diff: float
    max_rel_diff: float
    rtol: float
    atol: float
    worst_index: tuple | None = None
    got: float | None = None
    want: float | None = None
    passed: bool = True


class ComparisonReport:
    """What :func:`check_backends` and :func:`check_against` return: one :class:`Difference` per item and backend."""

    def __init__(self, title, rows, reference):
        self.title = title
        self.rows = list(rows)
        self.reference = reference

    def __iter__(self):
        return iter(self.rows)

    def __len__(self):
        return len(self.rows)

    @property
    def backends(self):
        return list(dict.fromkeys(r.backend for r in self.rows))

    @property
    def passed(self):
        return all(r.passed for r in self.rows)

    def max_diff(self, backend=None, name=None):
        """Largest relative difference over the rows of ``backend`` and/or item ``name`` (0.0 if none)."""
        return max((r.max_rel_diff for r in self.rows
                    if (backend is None or r.backend == backend) and (name is None or r.name == name)), default=0.0)

    def __str__(self):
        head = f"{self.title}: {'passed' if self.passed else 'FAILED'} (reference: {self.reference})"
        if not self.rows:
            return head + "\n  nothing to compare: no backend other than the reference is available"
        rows = [("backend", "", "name", "dtype", "max abs diff", "max rel diff", "rtol", "")]
        for r in self.rows:
            rows.append((r.backend, r.kind, r.name, r.dtype, f"{r.max_abs_diff:.2e}", f"{r.max_rel_diff:.2e}",
                         f"{r.rtol:g}", "ok" if r.passed else "FAILED"))
        return "\n".join([head, *_table(rows)])

    __repr__ = __str__


def _table(rows):
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]


def _indices(indices):
    return ", ".join(str(i) for i in indices)


# -- the finite-difference engine ---------------------------------------------------------------
@dataclass
class _Var:
    """One thing to perturb: an input or a parameter, at its base value, with its analytic gradient."""

    kind: str
    name: str
    value: np.ndarray  # float64, host
    grad: np.ndarray  # float64, host, value's shape


@dataclass
class _Probe:
    """The derivative of L along one direction."""

    numeric: float  # central difference (Richardson-extrapolated when the half step was taken)
    noise: float  # round-off bound of ``numeric``
    nondiff: bool = False
    right: float = 0.0  # one-sided derivatives, second order; set when nondiff
    left: float = 0.0
    side_noise: float = 0.0


class _FiniteDifferences:
    """Derivatives of ``L(values) = sum_k <run(values)_k, dy_k>`` by central differences.

    Parameters
    ----------
    run : callable
        ``run(values) -> list of host outputs`` for a list with one float64 array per variable.
    variables : list of _Var
    dys : list of (array or None)
        One per output; None outputs take no part in L.
    outputs : list of arrays
        ``run`` at the base point.
    """

    def __init__(self, run, variables, dys, eps, rtol, atol, outputs):
        self.run, self.vars, self.dys = run, variables, dys
        self.eps, self.rtol, self.atol = eps, rtol, atol
        self.f0 = self._loss(outputs)
        magnitude = sum(float(np.sum(np.abs(y * dy))) for y, dy in zip(outputs, dys) if dy is not None)
        # Round-off of one evaluation of L: its terms are summed in float64, after ops
        # whose own round-off is relative to the same magnitudes.
        self.fnoise = 16 * _EPS_MACH * max(magnitude, abs(self.f0))

    def _loss(self, outputs):
        return float(sum(np.sum(y * dy) for y, dy in zip(outputs, self.dys) if dy is not None))

    def loss(self, i, delta):
        values = [v.value for v in self.vars]
        values[i] = values[i] + delta
        return self._loss(self.run(values))

    def tolerance(self, a, n, scale, noise):
        return self.atol * scale + self.rtol * max(abs(a), abs(n)) + noise

    def probe(self, i, direction, scale):
        """Derivative of L along ``direction`` (an array of variable i's shape)."""
        h, f0 = self.eps, self.f0
        fp, fm = self.loss(i, h * direction), self.loss(i, -h * direction)
        central = (fp - fm) / (2 * h)
        fwd, bwd = (fp - f0) / h, (f0 - fm) / h
        floor = self.atol * scale + self.rtol * max(abs(fwd), abs(bwd))
        if abs(fwd - bwd) <= floor + 2 * self.fnoise / h:
            return _Probe(central, self.fnoise / h)
        # The one-sided slopes differ: smooth curvature (fwd - bwd = h f'' + O(h^3), so
        # it halves with the step) or a kink within h (the gap does not halve).
        fp2, fm2 = self.loss(i, 0.5 * h * direction), self.loss(i, -0.5 * h * direction)
        fwd2, bwd2 = (fp2 - f0) / (0.5 * h), (f0 - fm2) / (0.5 * h)
        if abs((fwd2 - bwd2) - 0.5 * (fwd - bwd)) <= floor + 10 * self.fnoise / h:
            central2 = (fp2 - fm2) / h
            return _Probe((4 * central2 - central) / 3, 3 * self.fnoise / h)
        right = (4 * fp2 - 3 * f0 - fp) / h
        left = (3 * f0 - 4 * fm2 + fm) / h
        return _Probe(central, self.fnoise / h, True, right, left, 8 * self.fnoise / h)

    def compare(self, a, probe, scale):
        """``(abs error, tolerance, numeric value)`` of the analytic derivative ``a``.

        At a non-differentiable point ``a`` must match one of the one-sided derivatives.
        """
        if not probe.nondiff:
            n = probe.numeric
            return abs(a - n), self.tolerance(a, n, scale, probe.noise), n
        n = min((probe.right, probe.left), key=lambda s: abs(a - s))
        return abs(a - n), self.tolerance(a, n, scale, probe.side_noise), n


class _Tally:
    """Accumulates the comparisons of one variable into a GradientCheck."""

    def __init__(self, var, mode, rtol):
        self.check = GradientCheck(var.name, var.kind, tuple(var.value.shape), mode)
        self.rtol = rtol
        self.ratio = -1.0

    def add(self, index, a, err, tol, n, nondiff):
        c = self.check
        # Below the level where the absolute part of the tolerance takes over, a
        # relative error means nothing: floor the denominator there, so that
        # rel_error <= rtol is (up to a factor 2) the pass condition.
        size = max(abs(a), abs(n))
        absolute = tol - self.rtol * size
        rel = err / max(size, absolute / self.rtol if self.rtol > 0 else absolute, 1e-300)
        c.n_checks += 1
        c.max_abs_error = max(c.max_abs_error, err)
        c.max_rel_error = max(c.max_rel_error, rel)
        if err > tol or not math.isfinite(err):
            c.n_failed += 1
        if nondiff:
            c.n_nondiff += 1
            if index is not None and len(c.nondiff_indices) < _MAX_LISTED:
                c.nondiff_indices.append(tuple(int(k) for k in index))
        if tol > 0:
            ratio = err / tol if math.isfinite(err) else math.inf
        else:
            ratio = math.inf if err > 0 else 0.0
        if ratio > self.ratio:
            self.ratio = ratio
            c.worst = dict(index=index, analytic=a, numeric=n, abs_error=err, rel_error=rel, tolerance=tol,
                           nondiff=nondiff)


def _check_full(fd, i, mode="full"):
    var = fd.vars[i]
    g = var.grad
    tally = _Tally(var, mode, fd.rtol)
    scale = max(1.0, float(np.max(np.abs(g)))) if g.size else 1.0
    e = np.zeros(g.shape)
    for k in range(g.size):
        e.flat[k] = 1.0
        probe = fd.probe(i, e, scale)
        e.flat[k] = 0.0
        a = float(g.flat[k])
        err, tol, n = fd.compare(a, probe, scale)
        tally.add(np.unravel_index(k, g.shape), a, err, tol, n, probe.nondiff)
    return tally.check


def _check_bisect(fd, i, direction, max_probes):
    """Split a non-smooth direction until every kink is isolated in one element.

    Smooth pieces are compared along their part of the direction; isolated
    elements one by one, one-sided where they are at a kink.
    """
    var = fd.vars[i]
    g, d = var.grad.ravel(), direction.ravel()
    tally = _Tally(var, "directional, then bisect (not smooth)", fd.rtol)
    stack = [np.arange(g.size)]
    probes = 0
    while stack:
        idx = stack.pop()
        probes += 1
        if probes > max_probes:
            raise GradcheckError(
                f"{var.kind} {var.name!r} {tuple(var.value.shape)}: too many non-differentiable points to isolate "
                f"({tally.check.n_nondiff} found in {max_probes} probes); move the input away from the kinks "
                f"(ReLU at 0, max-pool ties) or check a smaller input with mode='full'", [var.name])
        piece = np.zeros(g.size)
        if idx.size == 1:
            piece[idx] = 1.0
            a = float(g[idx[0]])
        else:
            piece[idx] = d[idx]
            a = float(np.sum(g[idx] * d[idx]))
        scale = max(1.0, float(np.sum(np.abs(g[idx] * piece[idx]))))
        probe = fd.probe(i, piece.reshape(var.grad.shape), scale)
        if probe.nondiff and idx.size > 1:
            half = idx.size // 2
            stack += [idx[half:], idx[:half]]
            continue
        err, tol, n = fd.compare(a, probe, scale)
        index = np.unravel_index(int(idx[0]), var.grad.shape) if idx.size == 1 else None
        tally.add(index, a, err, tol, n, probe.nondiff)
    return tally.check


def _check_directional(fd, i, rng, max_full):
    var = fd.vars[i]
    g = var.grad
    d = np.asarray(rng.standard_normal(g.shape))
    a = float(np.sum(g * d))
    scale = max(1.0, float(np.sum(np.abs(g * d))))
    probe = fd.probe(i, d, scale)
    if not probe.nondiff:
        err, tol, n = fd.compare(a, probe, scale)
        tally = _Tally(var, "directional", fd.rtol)
        tally.add(None, a, err, tol, n, False)
        if err <= tol or g.size > max_full:
            return tally.check
        # Localise: which elements are wrong?
        check = _check_full(fd, i, "directional, then full")
        check.notes.append(f"directional derivative: analytic {a:.10g}, numeric {n:.10g}, "
                           f"rel error {tally.check.max_rel_error:.2e}")
        if check.passed:
            check.notes.append("every element passed on its own although the direction did not")
        return check
    if g.size <= max_full:
        check, how = _check_full(fd, i, "directional, then full (not smooth)"), "checked element by element"
    else:
        check, how = _check_bisect(fd, i, d, max_probes=4 * max_full), "bisected until each kink was isolated"
    check.notes.append(f"the directional derivative is not smooth here (one-sided slopes {probe.right:.6g} "
                       f"and {probe.left:.6g}): {how}")
    return check


def _run_checks(caller, fd, mode, rng, max_full, outputs_used, dy_note):
    checks = []
    for i in range(len(fd.vars)):
        if mode == "full":
            checks.append(_check_full(fd, i))
        else:
            checks.append(_check_directional(fd, i, rng, max_full))
    settings = dict(mode=mode, eps=fd.eps, rtol=fd.rtol, atol=fd.atol)
    report = GradcheckReport(caller, checks, outputs_used, settings)
    failed = [c for c in checks if not c.passed]
    if failed:
        blocks = [_failure_message(c) for c in failed]
        used = ", ".join(outputs_used) or "none"
        raise GradcheckError(
            f"{caller}: the gradient of {_names(failed)} does not match finite differences\n"
            + "\n".join(blocks)
            + f"\n  outputs used: {used} ({dy_note}); eps {fd.eps:g}, rtol {fd.rtol:g}, atol {fd.atol:g}",
            [c.name for c in failed],
        )
    return report


def _names(checks):
    return ", ".join(f"{c.kind} {c.name!r}" for c in checks)


def _failure_message(c):
    w = c.worst
    if w["index"] is not None:
        where = f"worst element {c.name}[{', '.join(str(int(k)) for k in w['index'])}]" if w["index"] else c.name
    else:
        where = "along a random direction"
    kink = " (a non-differentiable point: compared with the nearer one-sided derivative)" if w["nondiff"] else ""
    lines = [
        f"  {c.kind} {c.name!r} {c.shape} ({c.mode}): {where}{kink}: analytic {w['analytic']:.10g}, "
        f"numeric {w['numeric']:.10g}, abs error {w['abs_error']:.3e}, rel error {w['rel_error']:.3e} "
        f"(tolerance {w['tolerance']:.3e})",
        f"    {c.n_failed} of {c.n_checks} comparisons beyond tolerance",
    ]
    lines += [f"    {note}" for note in c.notes]
    return "\n".join(lines)


# -- calling a (y, backprop) function -----------------------------------------------------------
def _input_names(fn, n):
    """The parameter names of ``fn`` for ``n`` positional inputs (``inputs[i]`` past them, for ``*args``).

    Also returns how many positional parameters ``fn`` has in all (0 when unknown).
    """
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return [f"inputs[{i}]" for i in range(n)], 0
    names = []
    for p in sig.parameters.values():
        if p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            break
        names.append(p.name)
    return [names[i] if i < len(names) else f"inputs[{i}]" for i in range(n)], len(names)


def _fn_name(fn):
    inner = getattr(fn, "func", fn)  # functools.partial
    return getattr(inner, "__name__", type(inner).__name__)


def _is_float(a):
    return a is not None and a.dtype.kind == "f"


def _host(a):
    """``a`` as a host NumPy array (None kept)."""
    if a is None:
        return None
    return np.asarray(to_numpy(a))


def _split_outputs(y):
    """``(list of outputs, is_tuple)``."""
    if isinstance(y, (tuple, list)):
        return list(y), True
    return [y], False


def _output_names(n, is_tuple):
    return [f"y[{k}]" for k in range(n)] if is_tuple else ["y"]


def _prepare_dy(caller, dy, outputs, names, is_tuple, rng):
    """One host float64 array (or None) per output; random normal by default."""
    if dy is None:
        return [np.asarray(rng.standard_normal(y.shape), np.float64) if _is_float(y) else None for y in outputs]
    if is_tuple:
        if not isinstance(dy, (tuple, list)) or len(dy) != len(outputs):
            got = f"{len(dy)} entries" if isinstance(dy, (tuple, list)) else type(dy).__name__
            raise ValueError(f"{caller}: fn returns {len(outputs)} outputs ({', '.join(names)}), so dy must be a "
                             f"tuple of {len(outputs)} arrays or None; got {got}")
        dys = list(dy)
    else:
        dys = [dy]
    out = []
    for name, y, d in zip(names, outputs, dys):
        if d is None:
            out.append(None)
            continue
        if not _is_float(y):
            raise ValueError(f"{caller}: output {name} is {y.dtype}, not float; its dy must be None")
        d = np.asarray(_host(d), np.float64)
        if d.shape != y.shape:
            raise ValueError(f"{caller}: dy for output {name} must have its shape {y.shape}, got {d.shape}")
        out.append(d)
    return out


def _call_backprop(backprop, dys, outputs_dev, is_tuple, xp, spread):
    """Call ``backprop`` with dy on the backend, in each output's dtype.

    ``spread``: ``backprop(*dy)`` for tuple outputs (the ops' convention) rather
    than ``backprop(list_of_dy)`` (the layers').
    """
    dev = [None if d is None else xp.asarray(d.astype(_host_dtype(y))) for d, y in zip(dys, outputs_dev)]
    if not is_tuple:
        return backprop(dev[0])
    return backprop(*dev) if spread else backprop(dev)


def _host_dtype(y):
    return np.dtype(getattr(y, "dtype", np.float64))


def _per_input(caller, raw, names, floats, n_positional=0):
    """Map what backprop returned to one gradient (or None) per input.

    ``n_positional``: the function's positional parameters; gradients past the
    inputs given, for parameters left at their defaults (``lstm``'s ``h0``,
    ``c0``), are dropped.
    """
    n, float_ix = len(names), [i for i, f in enumerate(floats) if f]
    if isinstance(raw, (tuple, list)):
        raw = list(raw)
        if len(raw) == n or n < len(raw) <= n_positional:
            return raw[:n]
        if len(raw) == len(float_ix):
            grads = [None] * n
            for i, g in zip(float_ix, raw):
                grads[i] = g
            return grads
        raise GradcheckError(
            f"{caller}: backprop returned {len(raw)} gradients for {n} inputs ({', '.join(names)}); return one per "
            f"input (None for those without a gradient)", [names[i] for i in float_ix])
    if n == 1:
        return [raw]
    if len(float_ix) == 1:
        grads = [None] * n
        grads[float_ix[0]] = raw
        return grads
    raise GradcheckError(
        f"{caller}: backprop returned one gradient for {len(float_ix)} float inputs "
        f"({', '.join(names[i] for i in float_ix)}); return one per input (None for those without a gradient), "
        f"or close over the constants", [names[i] for i in float_ix])


def _validate_grad(caller, kind, name, g, value):
    """The analytic gradient as a host float64 array of ``value``'s shape, or a GradcheckError."""
    if g is None:
        raise GradcheckError(f"{caller}: backprop returned no gradient (None) for float {kind} {name!r} "
                             f"{tuple(value.shape)}", [name])
    dtype = getattr(g, "dtype", None)
    if dtype is None or np.dtype(dtype).kind != "f":
        what = type(g).__name__ if dtype is None else f"an array of dtype {dtype}"
        raise GradcheckError(f"{caller}: the gradient for {kind} {name!r} is {what}, not a float array", [name])
    g = _host(g)
    if g.shape != value.shape:
        raise GradcheckError(f"{caller}: the gradient for {kind} {name!r} has shape {g.shape}, but the {kind} "
                             f"has shape {value.shape}", [name])
    if g.dtype != value.dtype:
        raise GradcheckError(f"{caller}: the gradient for {kind} {name!r} is {g.dtype}, but the {kind} is "
                             f"{value.dtype}", [name])
    return g.astype(np.float64)


def _check_float64_outputs(caller, outputs, names):
    for name, y in zip(names, outputs):
        if _is_float(y) and y.dtype != np.float64:
            raise GradcheckError(
                f"{caller}: output {name} is {y.dtype} although every float input is float64: the function "
                f"computes in {y.dtype} somewhere (a {y.dtype} constant or weight?); finite differences need "
                f"float64 throughout", [name])


def _defaults(eps, rtol, atol, mode):
    if mode not in ("directional", "full"):
        raise ValueError(f"gradcheck: mode must be 'directional' or 'full', got {mode!r}")
    eps = EPS if eps is None else float(eps)
    rtol = RTOL if rtol is None else float(rtol)
    atol = ATOL if atol is None else float(atol)
    if not eps > 0 or rtol < 0 or atol < 0:
        raise ValueError(f"gradcheck: eps must be > 0 and rtol, atol >= 0; got eps={eps}, rtol={rtol}, atol={atol}")
    return eps, rtol, atol


def _rng(seed, purpose):
    """A generator for ``purpose``, from ``seed``: a stream of its own, so that data drawn with
    ``default_rng(seed)`` by the caller is never the dy or the direction (``dy == x`` would
    make ``x.T @ dy`` symmetric and hide a transposed gradient)."""
    return np.random.default_rng([int(seed), sum(map(ord, purpose)), 0x9C4A])


class _Deterministic:
    """Runs a function from the same global-generator state every time, and notices non-determinism."""

    def __init__(self):
        self.state = _random.get_state()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _random.set_state(self.state)
        return False

    def call(self, f, *args, **kwargs):
        _random.set_state(self.state)
        return f(*args, **kwargs)


def _same_outputs(caller, first, again, names, hint):
    for name, a, b in zip(names, first, again):
        if a is None or b is None:
            continue
        if a.shape != b.shape or not np.array_equal(a, b, equal_nan=a.dtype.kind == "f"):
            diff = float(np.max(np.abs(a - b))) if a.shape == b.shape and a.size else float("nan")
            raise GradcheckError(
                f"{caller}: the function is not deterministic: output {name} changed between two evaluations "
                f"at the same point (max difference {diff:.3e}); {hint}", [name])


# -- the public checks --------------------------------------------------------------------------
def check_op(fn, *inputs, dy=None, eps=None, rtol=None, atol=None, mode="directional", seed=0,
             max_full=MAX_FULL):
    """Check the gradients ``backprop`` returns against finite differences.

    Parameters
    ----------
    fn : callable
        ``fn(*inputs) -> (y, backprop)``, as every ``sn.ops`` op. ``y`` is an
        array (a scalar for a loss) or a tuple of arrays (``sn.ops.lstm``:
        ``(ys, h, c)``); ``backprop(dy)``, or ``backprop(*dy)`` for a tuple,
        returns one gradient per input (a tuple; a single array when there is
        one float input; ``None`` for an input without a gradient, such as
        integer ids), each of its input's shape and dtype.
    *inputs : arrays (NumPy or the current backend's), or None
        Float inputs are checked (float32 is upcast to float64 with a
        :class:`GradcheckWarning`); integer and bool inputs are passed as they
        are and never perturbed. Each is converted with ``be.xp.asarray`` for
        the current backend.
    dy : array, or tuple of (array or None), optional
        Weights of the outputs: the checked scalar is ``sum_k <y_k, dy_k>``. A
        tuple for tuple outputs; a None entry leaves that output out.
        Default: random normal of each float output's shape (from ``seed``).
    eps, rtol, atol : float, optional
        Step and tolerances; defaults ``1e-6``, ``1e-5``, ``1e-8`` (module docstring).
    mode : {"directional", "full"}
        One random direction per input, or every element.
    seed : int
        Seed of the default dy and of the directions.
    max_full : int
        Largest input checked element by element after a failed or non-smooth directional check.

    Returns
    -------
    GradcheckReport
        One :class:`GradientCheck` per float input, by name (``report["w"]``).

    Raises
    ------
    GradcheckError
        A gradient is wrong (the message names the input, the worst element in
        full mode, the analytic and numeric values, the relative error and the
        outputs used), missing, of the wrong shape or dtype, or the function is
        not deterministic.
    """
    eps, rtol, atol = _defaults(eps, rtol, atol, mode)
    caller = f"check_op({_fn_name(fn)})"
    be = get_backend()
    xp = be.xp
    names, n_positional = _input_names(fn, len(inputs))
    host = [_host(a) for a in inputs]
    upcast = {}
    for k, (name, a) in enumerate(zip(names, host)):
        if a is None:
            continue
        if a.dtype.kind == "f" and a.dtype != np.float64:
            upcast[name] = a.dtype
            host[k] = a.astype(np.float64)
        elif a.dtype.kind not in "fiub":
            raise TypeError(f"{caller}: input {name!r} has dtype {a.dtype}; inputs must be float, integer or bool")
    if upcast:
        listed = ", ".join(f"{name} ({dtype})" for name, dtype in upcast.items())
        warnings.warn(f"{caller}: finite differences need float64; upcasting {listed}", GradcheckWarning,
                      stacklevel=2)
    floats = [_is_float(a) for a in host]
    float_ix = [k for k, f in enumerate(floats) if f]
    fixed = [None if a is None else xp.asarray(a) for a in host]

    def device_inputs(values):
        args = list(fixed)
        for k, v in zip(float_ix, values):
            args[k] = xp.asarray(v)
        return args

    with _Deterministic() as det:
        try:
            y, backprop = det.call(fn, *fixed)
        except Exception as e:
            if upcast:
                raise GradcheckError(
                    f"{caller}: the function failed on the float64 copies of its inputs ({type(e).__name__}: {e}); "
                    f"a function holding float32 constants or weights must use float64 ones for a gradient check",
                    list(upcast)) from e
            raise
        outputs_dev, is_tuple = _split_outputs(y)
        outputs = [_host(o) for o in outputs_dev]
        out_names = _output_names(len(outputs), is_tuple)
        _check_float64_outputs(caller, outputs, out_names)
        dys = _prepare_dy(caller, dy, outputs, out_names, is_tuple, _rng(seed, "dy"))
        raw = det.call(_call_backprop, backprop, dys, outputs_dev, is_tuple, xp, True)
        grads = _per_input(caller, raw, names, floats, n_positional)
        variables = [_Var("input", names[k], host[k], _validate_grad(caller, "input", names[k], grads[k], host[k]))
                     for k in float_ix]

        def run(values):
            y, _ = det.call(fn, *device_inputs(values))
            return [_host(o) for o in _split_outputs(y)[0]]

        again = run([v.value for v in variables])
        _same_outputs(caller, outputs, again, out_names, "seed its randomness (sn.ops.dropout(..., seed=...))")
        fd = _FiniteDifferences(run, variables, dys, eps, rtol, atol, again)
        used = [n for n, d in zip(out_names, dys) if d is not None]
        note = "dy given" if dy is not None else f"dy random normal, seed {seed}"
        return _run_checks(caller, fd, mode, _rng(seed, "directions"), max_full, used, note)


def check_layer(layer, x, dy=None, training=False, *, eps=None, rtol=None, atol=None, mode="directional", seed=0,
                max_full=MAX_FULL):
    """Check a layer's input gradient and the gradient it accumulates into each parameter.

    The layer is called as ``y, backprop = layer.forward(x, training=training)``
    and ``dx = backprop(dy)`` must return the gradient of ``x`` (when ``x`` is
    float) and add the gradient of every trainable parameter ``p`` to
    ``p.grad``. Parameters are perturbed in place in ``p.value`` and restored
    exactly; ``p.grad`` is zeroed for the check and restored afterwards.

    Parameters
    ----------
    layer : Layer
        Any object with ``forward(x, training)``, ``parameters()`` (Parameters
        with ``.name``, ``.value``, ``.grad``, ``.trainable``) and ``zero_grad()``:
        a layer or a model. It must compute in float64 (``dtype="float64"``);
        it is built by the first call if it is not yet.
    x : array
        The input. Float inputs are checked (float32 upcast with a warning);
        integer ids (Embedding) are not.
    dy : array or list of arrays, optional
        Gradient of the output (a list for a list of outputs, as an LSTM with
        ``return_state``); default random normal.
    training : bool
        Passed to ``forward``. Dropout draws from ``scratchnet.random``, whose
        state is restored before every call, so its mask is the same each time;
        other randomness is reported as non-determinism.
    eps, rtol, atol, mode, seed, max_full
        As for :func:`check_op`.

    Returns
    -------
    GradcheckReport
        ``report["x"]`` for the input, ``report["dense/kernel"]`` for a parameter.

    Raises
    ------
    GradcheckError
        Naming the input or the parameter (by its store name) whose gradient is
        wrong, missing or of the wrong shape or dtype.
    """
    eps, rtol, atol = _defaults(eps, rtol, atol, mode)
    caller = f"check_layer({getattr(layer, 'name', type(layer).__name__)})"
    xp = get_backend().xp
    xh = _host(x)
    if xh.dtype.kind == "f" and xh.dtype != np.float64:
        warnings.warn(f"{caller}: finite differences need float64; upcasting x ({xh.dtype})", GradcheckWarning,
                      stacklevel=2)
        xh = xh.astype(np.float64)
    x_float = xh.dtype.kind == "f"
    x_dev = xp.asarray(xh)
    layer.forward(x_dev, training=training)  # builds the layer, drawing its initial weights
    with _Deterministic() as det:
        params = [p for p in layer.parameters() if getattr(p, "trainable", True)]
        for p in params:
            if np.dtype(p.value.dtype) != np.float64:
                raise ValueError(f"{caller}: parameter {p.name!r} is {p.value.dtype}; finite differences need "
                                 f"float64: create the layer with dtype='float64'")
        saved_values = [p.value.copy() for p in params]
        saved_grads = [p.grad for p in params]
        try:
            layer.zero_grad()
            y, backprop = det.call(layer.forward, x_dev, training=training)
            outputs_dev, is_tuple = _split_outputs(y)
            outputs = [_host(o) for o in outputs_dev]
            out_names = _output_names(len(outputs), is_tuple)
            _check_float64_outputs(caller, outputs, out_names)
            dys = _prepare_dy(caller, dy, outputs, out_names, is_tuple, _rng(seed, "dy"))
            dx = det.call(_call_backprop, backprop, dys, outputs_dev, is_tuple, xp, False)
            variables = []
            if x_float:
                variables.append(_Var("input", "x", xh, _validate_grad(caller, "input", "x", dx, xh)))
            for p, value in zip(params, saved_values):
                vh = _host(value)
                if p.grad is None:
                    raise GradcheckError(f"{caller}: backprop accumulated no gradient into parameter {p.name!r} "
                                         f"{tuple(vh.shape)} (p.grad is None after zero_grad and one backprop)",
                                         [p.name])
                variables.append(_Var("parameter", p.name, vh, _validate_grad(caller, "parameter", p.name,
                                                                              p.grad, vh)))
            offset = 1 if x_float else 0

            def run(values):
                for p, v in zip(params, values[offset:]):
                    p.value[...] = xp.asarray(v)
                y, _ = det.call(layer.forward, xp.asarray(values[0]) if x_float else x_dev, training=training)
                return [_host(o) for o in _split_outputs(y)[0]]

            again = run([v.value for v in variables])
            _same_outputs(caller, outputs, again, out_names,
                          "a layer with randomness of its own (or a stateful one) cannot be checked this way")
            fd = _FiniteDifferences(run, variables, dys, eps, rtol, atol, again)
            used = [n for n, d in zip(out_names, dys) if d is not None]
            note = "dy given" if dy is not None else f"dy random normal, seed {seed}"
            return _run_checks(caller, fd, mode, _rng(seed, "directions"), max_full, used, note)
        finally:
            for p, value, grad in zip(params, saved_values, saved_grads):
                p.value[...] = value
                p.grad = grad


# -- comparing implementations ------------------------------------------------------------------
def _run_impl(fn, host_inputs, dys, det, spread=True):
    """``(outputs, per-input gradients)`` on the host, for ``fn`` on the current backend."""
    xp = get_backend().xp
    args = [None if a is None else xp.asarray(a) for a in host_inputs]
    y, backprop = det.call(fn, *args)
    outputs_dev, is_tuple = _split_outputs(y)
    outputs = [_host(o) for o in outputs_dev]
    if dys is None:
        return outputs, outputs_dev, is_tuple, None
    raw = det.call(_call_backprop, backprop, dys, outputs_dev, is_tuple, xp, spread)
    return outputs, outputs_dev, is_tuple, raw


def _tolerances(dtype, rtol, atol):
    r, a = COMPARE_TOLERANCES.get(np.dtype(dtype), (0.0, 0.0))
    return (r if rtol is None else float(rtol)), (a if atol is None else float(atol))


def _difference(label, kind, name, got, want, rtol, atol):
    if got is None or want is None:
        if got is None and want is None:
            return None
        which = "the reference" if want is None else label
        raise GradcheckError(f"{label}: {kind} {name!r} is None for {which} only", [name])
    if got.shape != want.shape:
        raise GradcheckError(f"{label}: {kind} {name!r} has shape {got.shape}, the reference's {want.shape}", [name])
    if got.dtype != want.dtype:
        raise GradcheckError(f"{label}: {kind} {name!r} is {got.dtype}, the reference's is {want.dtype}", [name])
    r, a = _tolerances(want.dtype, rtol, atol)
    g, w = got.astype(np.float64), want.astype(np.float64)
    if not g.size:
        return Difference(label, kind, name, str(want.dtype), 0.0, 0.0, r, a)
    scale = max(1.0, float(np.nanmax(np.abs(w)))) if np.isfinite(w).any() else 1.0
    both_nan = np.isnan(g) & np.isnan(w)
    diff = np.where(both_nan, 0.0, np.abs(g - w))
    diff = np.where(np.isnan(diff), np.inf, diff)
    tol = a * scale + r * np.abs(w)
    # As for finite differences: below where atol takes over, a relative difference means nothing.
    rel = diff / np.maximum(np.abs(w), max(a * scale / r if r > 0 else a * scale, 1e-300))
    worst = np.unravel_index(int(np.argmax(diff - tol)), w.shape)
    return Difference(label, kind, name, str(want.dtype), float(np.max(diff)), float(np.max(rel)), r, a,
                      tuple(int(k) for k in worst), float(g[worst]), float(w[worst]), bool(np.all(diff <= tol)))


def _compare(title, label, impl, ref, out_names, names, floats, rtol, atol):
    rows = []
    for name, got, want in zip(out_names, impl[0], ref[0]):
        rows.append(_difference(label, "output", name, got, want, rtol, atol))
    if impl[1] is not None:
        for k, (name, got, want) in enumerate(zip(names, impl[1], ref[1])):
            if floats[k]:
                rows.append(_difference(label, "gradient", name, _host(got), _host(want), rtol, atol))
    return [r for r in rows if r is not None]


def _comparison(caller, fn, reference, inputs, dy, rtol, atol, seed, backends):
    """Run ``reference`` on the numpy backend (or the current one), then ``fn`` on each backend; compare."""
    names, n_positional = _input_names(fn, len(inputs))
    host = [_host(a) for a in inputs]
    floats = [_is_float(a) for a in host]
    with _Deterministic() as det:
        ref_backend = "numpy" if backends is not None else get_backend().name
        with use_backend(ref_backend):
            outputs, outputs_dev, is_tuple, _ = _run_impl(reference, host, None, det)
            out_names = _output_names(len(outputs), is_tuple)
            dys = _prepare_dy(caller, dy, outputs, out_names, is_tuple, _rng(seed, "dy"))
            _, _, _, raw = _run_impl(reference, host, dys, det)
            ref = (outputs, _per_input(caller, raw, names, floats, n_positional))
        rows = []
        for name in backends if backends is not None else [ref_backend]:
            label = name if backends is not None else f"{_fn_name(fn)} on {name}"
            with use_backend(name):
                outs, _, tup, raw = _run_impl(fn, host, dys, det)
                if tup != is_tuple or len(outs) != len(outputs):
                    raise GradcheckError(f"{caller}: {label} returns {len(outs)} outputs, the reference {len(outputs)}",
                                         out_names)
                impl = (outs, _per_input(caller, raw, names, floats, n_positional))
            rows += _compare(caller, label, impl, ref, out_names, names, floats, rtol, atol)
    ref_label = f"{_fn_name(reference)} on {ref_backend}"
    report = ComparisonReport(caller, rows, ref_label)
    failed = [r for r in rows if not r.passed]
    if failed:
        lines = [f"{caller}: {len(failed)} of {len(rows)} results differ from the reference ({ref_label})"]
        for r in failed:
            idx = ", ".join(map(str, r.worst_index))
            lines.append(f"  {r.backend}: {r.kind} {r.name!r} ({r.dtype}) differs at {r.name}[{idx}]: "
                         f"got {r.got:.10g}, want {r.want:.10g}; max abs diff {r.max_abs_diff:.3e}, "
                         f"max rel diff {r.max_rel_diff:.3e} (rtol {r.rtol:g}, atol {r.atol:g})")
        raise GradcheckError("\n".join(lines), list(dict.fromkeys(r.name for r in failed)))
    return report


def check_backends(fn, *inputs, dy=None, rtol=None, atol=None, seed=0, backends=None):
    """Run ``fn`` and its backprop on every available backend and compare with the NumPy reference.

    Parameters
    ----------
    fn : callable
        ``fn(*inputs) -> (y, backprop)``, as for :func:`check_op`.
    *inputs : arrays (host NumPy arrays), or None
        Passed to every backend in their own dtype (float32 is compared in float32).
    dy : array or tuple of (array or None), optional
        Default: random normal (from ``seed``), cast to each output's dtype.
    rtol, atol : float, optional
        Default by dtype: float64 ``1e-9``, ``1e-11``; float32 ``1e-4``, ``1e-5``;
        integers exactly. ``|got - want| <= atol * max(1, max |want|) + rtol * |want|``.
    backends : list of str, optional
        Default ``sn.available_backends()`` other than ``"numpy"``.

    Returns
    -------
    ComparisonReport
        One :class:`Difference` per backend, per output and per float input's
        gradient: the largest absolute and relative differences.

    Raises
    ------
    GradcheckError
        A backend's output or gradient differs beyond tolerance (the message
        names the backend, the output or input, and the worst index), or has
        another shape or dtype.

    Notes
    -----
    Every run starts from the same state of ``scratchnet.random``, so unseeded
    dropout draws the same mask on the CPU backends; the CuPy backend draws its
    masks on the device, so dropout differs there by design.
    """
    names = [b for b in (available_backends() if backends is None else backends) if b != "numpy"]
    return _comparison(f"check_backends({_fn_name(fn)})", fn, fn, inputs, dy, rtol, atol, seed, names)


def check_against(fn, reference, *inputs, dy=None, rtol=None, atol=None, seed=0):
    """Compare ``fn`` with a reference implementation on the current backend: outputs and gradients.

    Finite differences accept either side at a non-differentiable point; this
    pins down the convention (a max-pool tie routed to the first maximum, as
    TensorFlow does).

    Parameters
    ----------
    fn, reference : callable
        Both ``f(*inputs) -> (y, backprop)``, with the same outputs and gradients.
    *inputs, dy, rtol, atol, seed
        As for :func:`check_backends`.

    Returns
    -------
    ComparisonReport

    Raises
    ------
    GradcheckError
        Naming the output or input whose result differs, and the worst index.
    """
    caller = f"check_against({_fn_name(fn)}, {_fn_name(reference)})"
    return _comparison(caller, fn, reference, inputs, dy, rtol, atol, seed, None)
