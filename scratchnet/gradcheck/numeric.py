"""The finite-difference engine: derivatives along directions, element by element, and at kinks.

:class:`FiniteDifferences` differentiates the scalar
``L(values) = sum_k <y_k, dy_k>`` of a function's outputs along a direction
of one variable (an input or a parameter, a :class:`Variable`);
:func:`run_checks` compares every variable's analytic gradient with it, in
``"directional"`` or ``"full"`` mode, and tells a non-differentiable point
(ReLU at 0, a max-pool tie) from a wrong gradient. The method, the step and
the tolerances are described in :mod:`scratchnet.gradcheck`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .report import GradcheckError, GradcheckReport, GradientCheck, gradient_error

EPS = 1e-6
RTOL = 1e-5
ATOL = 1e-8
MAX_FULL = 4096

_EPS_MACH = float(np.finfo(np.float64).eps)
_MAX_LISTED = 100  # non-differentiable indices kept in a report


def check_settings(eps, rtol, atol, mode):
    """``(eps, rtol, atol)``, the defaults filled in; a ValueError for a bad value or mode."""
    if mode not in ("directional", "full"):
        raise ValueError(f"gradcheck: mode must be 'directional' or 'full', got {mode!r}")
    eps = EPS if eps is None else float(eps)
    rtol = RTOL if rtol is None else float(rtol)
    atol = ATOL if atol is None else float(atol)
    if not eps > 0 or rtol < 0 or atol < 0:
        raise ValueError(f"gradcheck: eps must be > 0 and rtol, atol >= 0; got eps={eps}, rtol={rtol}, atol={atol}")
    return eps, rtol, atol




@dataclass
class Variable:
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


class FiniteDifferences:
    """Derivatives of ``L(values) = sum_k <run(values)_k, dy_k>`` by central differences.

    Parameters
    ----------
    run : callable
        ``run(values) -> list of host outputs`` for a list with one float64 array per variable.
    variables : list of Variable
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


def run_checks(caller, fd, mode, rng, max_full, outputs_used, dy_note):
    """Check every variable of ``fd``; the :class:`GradcheckReport`, or its :class:`GradcheckError` on a failure."""
    checks = []
    for i in range(len(fd.vars)):
        if mode == "full":
            checks.append(_check_full(fd, i))
        else:
            checks.append(_check_directional(fd, i, rng, max_full))
    settings = dict(mode=mode, eps=fd.eps, rtol=fd.rtol, atol=fd.atol)
    report = GradcheckReport(caller, checks, outputs_used, settings)
    if not report.passed:
        raise gradient_error(report, dy_note)
    return report
