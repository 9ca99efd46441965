"""What a gradient check returns and raises: the reports, their tables, and the failure messages.

:class:`GradcheckReport` (of :class:`GradientCheck` rows) is the result of a
finite-difference check (``check_op``, ``check_layer``);
:class:`ComparisonReport` (of :class:`Difference` rows) the result of
comparing implementations (``check_backends``, ``check_against``). A failed
check raises :class:`GradcheckError` with the message built here.
"""
from __future__ import annotations

from dataclasses import dataclass, field

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


# -- failure messages -----------------------------------------------------------------------------
def gradient_error(report, dy_note):
    """The :class:`GradcheckError` of a failed :class:`GradcheckReport`: each failed check at its worst comparison."""
    failed = [c for c in report.checks if not c.passed]
    s = report.settings
    used = ", ".join(report.outputs) or "none"
    return GradcheckError(
        f"{report.title}: the gradient of {_names(failed)} does not match finite differences\n"
        + "\n".join(_failure_message(c) for c in failed)
        + f"\n  outputs used: {used} ({dy_note}); eps {s['eps']:g}, rtol {s['rtol']:g}, atol {s['atol']:g}",
        [c.name for c in failed],
    )


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


def comparison_error(report):
    """The :class:`GradcheckError` of a failed :class:`ComparisonReport`: each differing result at its worst index."""
    failed = [r for r in report.rows if not r.passed]
    lines = [f"{report.title}: {len(failed)} of {len(report.rows)} results differ from the reference ({report.reference})"]
    for r in failed:
        idx = ", ".join(map(str, r.worst_index))
        lines.append(f"  {r.backend}: {r.kind} {r.name!r} ({r.dtype}) differs at {r.name}[{idx}]: "
                     f"got {r.got:.10g}, want {r.want:.10g}; max abs diff {r.max_abs_diff:.3e}, "
                     f"max rel diff {r.max_rel_diff:.3e} (rtol {r.rtol:g}, atol {r.atol:g})")
    return GradcheckError("\n".join(lines), list(dict.fromkeys(r.name for r in failed)))
