"""The grader: a learner's backward against finite differences and against the reference op.

For each case of the exercise (:mod:`scratchnet.exercises.problems`), in float64
on the NumPy backend:

1. the backward is called once: it must return one gradient per input, each
   an array of its input's shape (a transposed gradient is caught here);
2. :func:`scratchnet.gradcheck.check_op` checks every gradient against
   central finite differences, each input on its own, so that the gradients
   it names are wrong whatever the reference says; for a step with several
   outputs (the LSTM's ``h`` and ``c``) a failure is re-checked with one
   incoming gradient at a time, to say which path is broken;
3. :func:`scratchnet.gradcheck.check_against` compares outputs and gradients
   with the reference op, which pins down what finite differences cannot: the
   maximum a tied max-pool window sends its gradient to.

Every wrong gradient is reported with its worst element: yours, the right
value (the reference op's, which finite differences confirm) and a pattern
when one fits (the opposite sign, zero, a constant factor).
"""
from __future__ import annotations

import traceback
from dataclasses import dataclass, field

import numpy as np

from ..backend import use_backend
from ..gradcheck import GradcheckError, check_against, check_op
from .problems import ALIASES, EXERCISES, UPSTREAM_HINTS


class ExerciseError(AssertionError):
    """A graded backward is wrong (raised by ``grade(..., strict=True)``); the message is the report."""

    def __init__(self, report):
        super().__init__(str(report))
        self.report = report


@dataclass
class Finding:
    """One thing wrong with a backward, on one case.

    Attributes
    ----------
    case : str
        The case's description.
    check : {"call", "shape", "finite differences", "reference"}
        What found it.
    gradients : list of str
        The gradients it concerns (``["dw"]``).
    message : str
        What is wrong, for a person.
    upstream : str or None
        For a step with several outputs: the incoming gradient (``"dc"``) whose path is wrong.
    details : str
        The raw message of the check (``GradcheckError``), when there is one.
    """

    case: str
    check: str
    gradients: list
    message: str
    upstream: str | None = None
    details: str = ""


@dataclass
class GradeReport:
    """What :func:`grade` returns: ``passed``, the wrong gradients, and a readable account (``print(report)``).

    Attributes
    ----------
    exercise : str
    status : {"passed", "failed", "not implemented", "error"}
    cases : list of (str, bool)
        Each case and whether it passed.
    findings : list of Finding
    """

    exercise: str
    signature: str
    status: str = "passed"
    cases: list = field(default_factory=list)
    findings: list = field(default_factory=list)

    @property
    def passed(self):
        return self.status == "passed"

    @property
    def wrong(self):
        """The wrong gradients, in the order of the inputs (``["dw"]``)."""
        names = [g for f in self.findings for g in f.gradients]
        return list(dict.fromkeys(names))

    @property
    def upstream(self):
        """The incoming gradients whose path is wrong (``["dc"]``), for a step with several outputs."""
        return list(dict.fromkeys(f.upstream for f in self.findings if f.upstream))

    def raise_if_failed(self):
        """Raise :class:`ExerciseError` unless the backward passed."""
        if not self.passed:
            raise ExerciseError(self)
        return self

    def __str__(self):
        if self.status == "passed":
            head = f"{self.exercise}: passed: every gradient matches finite differences and the reference op"
        elif self.status == "not implemented":
            head = f"{self.exercise}: not implemented yet: fill in {self.signature}"
        elif self.status == "error":
            head = f"{self.exercise}: your backward raised an error"
        else:
            head = f"{self.exercise}: FAILED: {_are(self.wrong) if self.wrong else 'see below: something is'} wrong"
        lines = [head]
        lines += [f"  [{'ok' if ok else 'FAILED'}] {name}" for name, ok in self.cases]
        shown = []
        for f in self.findings:
            key = (f.check, tuple(f.gradients), f.upstream)
            if key in shown:  # the same fault on another case: one line
                lines.append(f"  {f.case} ({f.check}): the same {', '.join(f.gradients)} wrong, as above")
                continue
            shown.append(key)
            lines.append(f"  {f.case} ({f.check}):")
            lines += [f"    {line}" for line in f.message.splitlines()]
        return "\n".join(lines)

    __repr__ = __str__


def get_exercise(name):
    """The :class:`~scratchnet.exercises.problems.Exercise` called ``name`` (or one of its aliases)."""
    key = ALIASES.get(name, name)
    if key not in EXERCISES:
        raise ValueError(f"grade: unknown exercise {name!r}; choose one of {', '.join(EXERCISES)}")
    return EXERCISES[key]


def _as_tuple(grads, n):
    if n == 1 and not isinstance(grads, (tuple, list)):
        return (grads,)
    return tuple(grads) if isinstance(grads, (tuple, list)) else (grads,)


def _call_once(ex, case, op, inputs, rng):
    """Run the backward once; a :class:`Finding` when it returns the wrong number, type or shape of gradients."""
    outputs, backprop = op(*inputs)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    dys = [rng.normal(size=np.shape(o)) for o in outputs]
    grads = _as_tuple(backprop(*dys), len(ex.inputs))
    if len(grads) != len(ex.inputs):
        return Finding(case.name, "call", list(ex.gradients),
                       f"{ex.name}_backward returned {len(grads)} value(s); it must return {len(ex.inputs)}: "
                       f"({', '.join(ex.gradients)})")
    for gname, g, x in zip(ex.gradients, grads, inputs):
        if g is None or not hasattr(g, "shape"):
            return Finding(case.name, "shape", [gname], f"{gname} is {type(g).__name__}, not an array")
        if tuple(g.shape) != tuple(x.shape):
            extra = ""
            if tuple(g.shape) == tuple(x.shape)[::-1] and len(x.shape) > 1:
                extra = ": it looks transposed"
            elif g.size == x.size:
                extra = ": the right number of elements in the wrong layout"
            return Finding(case.name, "shape", [gname],
                           f"{gname} has shape {tuple(g.shape)} but {gname[1:]} has shape {tuple(x.shape)}{extra}")
    return None


def _pattern(got, want):
    if np.allclose(got, 0, atol=1e-12) and not np.allclose(want, 0, atol=1e-12):
        return "yours is zero everywhere"
    if np.allclose(got, -want, rtol=1e-7, atol=1e-10):
        return "yours is the negative of the right one everywhere: a sign is flipped"
    big = np.abs(want) > 1e-8 * max(1.0, float(np.abs(want).max()))
    if big.any():
        ratio = got[big] / want[big]
        if np.allclose(ratio, ratio.flat[0], rtol=1e-6) and np.allclose(got, ratio.flat[0] * want, atol=1e-10):
            return f"yours is the right one times {ratio.flat[0]:.6g} everywhere"
    return None


def _diagnose(ex, case, op, reference, inputs, names, dy, rng):
    """One line per wrong gradient: its worst element, yours against the reference op's."""
    dy = dy or tuple(rng.normal(size=np.shape(o)) for o in _outputs(reference, inputs))
    dy = tuple(np.zeros(np.shape(o)) if d is None else d for d, o in zip(dy, _outputs(reference, inputs)))
    yours = _as_tuple(op(*inputs)[1](*dy), len(ex.inputs))
    right = _as_tuple(reference(*inputs)[1](*dy), len(ex.inputs))
    lines = []
    for gname, got, want in zip(ex.gradients, yours, right):
        if gname not in names:
            continue
        got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
        diff = np.abs(got - want)
        worst = np.unravel_index(int(np.argmax(diff)), want.shape) if want.ndim else ()
        tol = 1e-9 * np.abs(want) + 1e-11 * max(1.0, float(np.abs(want).max()))
        n_bad = int((diff > tol).sum())
        where = f"{gname}[{', '.join(str(int(k)) for k in worst)}]" if worst else gname
        line = (f"{gname} is wrong at {n_bad} of {want.size} elements; worst {where}: yours {float(got[worst]):.6g}, "
                f"right {float(want[worst]):.6g}")
        pattern = _pattern(got, want)
        if pattern:
            line += f" ({pattern})"
        lines.append(line)
        if ex.hints.get(gname):
            lines.append(f"  hint: {ex.hints[gname]}")
    return lines


def _are(names):
    return f"{', '.join(names)} {'is' if len(names) == 1 else 'are'}"


def _outputs(fn, inputs):
    y = fn(*inputs)[0]
    return y if isinstance(y, tuple) else (y,)


def _finite_differences(ex, case, op, reference, inputs, rng):
    """``check_op``; on a failure, the wrong gradients (and, for several outputs, the broken incoming path)."""
    try:
        check_op(op, *inputs)
        return []
    except GradcheckError as e:
        wrong = [f"d{n}" for n in e.names]
        first_error = str(e)
    findings = []
    if len(ex.outputs) > 1:
        for k, out in enumerate(ex.outputs):
            dy = tuple(rng.normal(size=np.shape(o)) if j == k else None for j, o in enumerate(_outputs(reference, inputs)))
            try:
                check_op(op, *inputs, dy=dy)
            except GradcheckError as e:
                names = [f"d{n}" for n in e.names]
                others = ", ".join(f"d{o}" for o in ex.outputs if o != out)
                msg = [f"with only d{out} coming in ({others} = 0), {_are(names)} wrong (finite differences): "
                       f"the path from the incoming d{out} is broken"]
                hint = UPSTREAM_HINTS.get((ex.name, f"d{out}"))
                if hint:
                    msg.append(f"  hint: {hint}")
                msg += _diagnose(ex, case, op, reference, inputs, names, dy, rng)
                findings.append(Finding(case.name, "finite differences", names, "\n".join(msg), f"d{out}", str(e)))
        if findings:
            return findings
    msg = [f"{_are(wrong)} wrong: finite differences (sn.gradcheck.check_op) disagree"]
    msg += _diagnose(ex, case, op, reference, inputs, wrong, None, rng)
    return [Finding(case.name, "finite differences", wrong, "\n".join(msg), None, first_error)]


def _against_reference(ex, case, op, reference, inputs, rng):
    try:
        check_against(op, reference, *inputs)
        return []
    except GradcheckError as e:
        wrong = [f"d{n}" if n in ex.inputs else n for n in e.names]
        details = str(e)
    one = len(wrong) == 1
    if case.finite_differences:
        msg = [f"{', '.join(wrong)} {'passes' if one else 'pass'} finite differences but {'differs' if one else 'differ'} "
               f"from sn.ops (sn.gradcheck.check_against)"]
    else:
        msg = [f"{', '.join(wrong)} {'differs' if one else 'differ'} from sn.ops (sn.gradcheck.check_against)"]
    if case.ties and case.finite_differences:
        msg.append("this case has tied windows, where finite differences accept any of the tied maxima: "
                   "the convention decides")
    elif case.ties:
        msg.append("finite differences cannot judge this case (a maximum tied in two overlapping windows): "
                   "the reference decides")
    msg += _diagnose(ex, case, op, reference, inputs, [w for w in wrong if w in ex.gradients], None, rng)
    if case.hint:
        msg.append(f"  hint: {case.hint}")
    return [Finding(case.name, "reference", wrong, "\n".join(msg), None, details)]


def grade(name, backward, strict=False, seed=0):
    """Grade your backward pass for exercise ``name``.

    Parameters
    ----------
    name : {"dense", "conv2d", "max_pool", "lstm_step"}
        The exercise (``"max_pool2d"`` and ``"lstm"`` are accepted too).
    backward : callable
        Your ``<name>_backward``, with the stub's signature
        (:mod:`scratchnet.exercises.stubs`): ``backward(dy, cache)``, or
        ``backward(dh, dc, cache)`` for the LSTM step.
    strict : bool
        Raise :class:`ExerciseError` (an ``AssertionError``) when it fails,
        instead of returning the report.
    seed : int
        Seeds the inputs and the incoming gradients.

    Returns
    -------
    GradeReport
        ``report.passed``; ``report.wrong``, the wrong gradients
        (``["dw"]``); ``print(report)`` says what is wrong and where.

    Examples
    --------
    >>> import scratchnet as sn
    >>> sn.exercises.grade("dense", sn.exercises.solutions.dense_backward).passed
    True
    """
    ex = get_exercise(name)
    report = GradeReport(ex.name, ex.signature)
    with use_backend("numpy"):
        for k, case in enumerate(ex.cases):
            rng = np.random.default_rng([seed, k])
            inputs = case.make(rng)
            op, reference = ex.make_op(backward, **case.settings), ex.make_reference(**case.settings)
            try:
                found = _call_once(ex, case, op, inputs, rng)
                found = [found] if found else []
                if not found and case.finite_differences:
                    found = _finite_differences(ex, case, op, reference, inputs, rng)
                if not found:
                    found = _against_reference(ex, case, op, reference, inputs, rng)
            except NotImplementedError:
                report.status = "not implemented"
                report.cases, report.findings = [], []
                break
            except Exception as e:  # the learner's code failed: show where, and stop
                where = traceback.extract_tb(e.__traceback__)[-1]
                report.status = "error"
                report.findings.append(Finding(case.name, "call", [], f"{type(e).__name__}: {e}\n"
                                               f"  at {where.filename}, line {where.lineno}: {where.line}"))
                report.cases.append((case.name, False))
                break
            report.cases.append((case.name, not found))
            report.findings += found
            if found:
                report.status = "failed"
    if strict:
        report.raise_if_failed()
    return report
