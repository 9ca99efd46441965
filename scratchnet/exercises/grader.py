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
when one fits (the opposite sign, zero, a constant factor), and the known
mistake it looks like, when the exercise lists one that fits (the GRU's
forgotten direct path, attention's missing scale). Hints come in
three levels: ``hint=0`` (the default) a nudge, ``hint=1`` closer, ``hint=2``
the formula.
"""
from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..backend import use_backend
from ..gradcheck import GradcheckError, check_against, check_op
from .problems import ALIASES, EXERCISES, UPSTREAM_HINTS, Evidence


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
    all_gradients: bool = False  # every gradient of the step is wrong along ``upstream``


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
    hint: int = 0

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
        if self.status == "passed" and self.signature.startswith("class "):  # a layer: no reference op
            head = (f"{self.exercise}: passed: the output matches the formula, every gradient matches finite "
                    f"differences, and the gradients add up")
        elif self.status == "passed":
            head = f"{self.exercise}: passed: every gradient matches finite differences and the reference op"
        elif self.status == "not implemented":
            head = f"{self.exercise}: not implemented yet: fill in {self.signature}"
        elif self.status == "error":
            what = "layer" if self.signature.startswith("class ") else "backward"
            head = f"{self.exercise}: your {what} raised an error"
        elif any(f.check == "call" for f in self.findings):
            call = next(f for f in self.findings if f.check == "call")
            head = f"{self.exercise}: FAILED: {call.message.splitlines()[0].split(': ')[0]}"
        elif self.broken_path:
            head = f"{self.exercise}: FAILED: the path from the incoming {self.broken_path} is broken"
        else:
            head = f"{self.exercise}: FAILED: {_are(self.wrong) if self.wrong else 'see below: something is'} wrong"
        lines = [head]
        lines += [f"  [{'ok' if ok else 'FAILED'}] {name}" for name, ok in self.cases]
        shown = []
        for f in self.findings:
            key = (f.check, tuple(f.gradients), f.upstream)
            if key in shown:  # the same fault on another case: one line
                what = (f"broken {f.upstream} path" if f.all_gradients else "mistake" if f.check == "call"
                        else f"{', '.join(f.gradients)} wrong")
                lines.append(f"  {f.case} ({f.check}): the same {what}, as above")
                continue
            shown.append(key)
            lines.append(f"  {f.case} ({f.check}):")
            lines += [f"    {line}" for line in f.message.splitlines()]
        if self.status == "failed" and self.hint < 2:
            lines.append(f"  (more help: grade(..., hint={self.hint + 1}){'; the formula: hint=2' if self.hint == 0 else ''})")
        return "\n".join(lines)

    @property
    def broken_path(self):
        """The one incoming gradient (``"dc"``) along which EVERY gradient is wrong, or None.

        Then the mistake is on that path, not in any one gradient: the report
        says so first, instead of listing every gradient as wrong.
        """
        every = {f.upstream for f in self.findings if f.upstream and f.all_gradients}
        return every.pop() if len(every) == 1 else None

    __repr__ = __str__


_PACKAGE = Path(__file__).resolve().parents[1]  # scratchnet/


def where(error):
    """``  at FILE, line N: CODE`` for the learner's line that failed (the last one outside scratchnet, if any).

    A file inside scratchnet is named from the package (``scratchnet/layers/base.py``), any
    other by its name alone: a report never shows the machine's folders.
    """
    frames = traceback.extract_tb(error.__traceback__)
    theirs = [f for f in frames if not Path(f.filename).resolve().is_relative_to(_PACKAGE)]
    frame = (theirs or frames)[-1]
    path = Path(frame.filename).resolve()
    name = path.relative_to(_PACKAGE.parent) if path.is_relative_to(_PACKAGE) else path.name
    return f"  at {name}, line {frame.lineno}: {frame.line}"


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
    raw = backprop(*dys)
    if raw is None:
        grads = ex.gradients[0] if len(ex.gradients) == 1 else ", ".join(ex.gradients)
        return Finding(case.name, "call", list(ex.gradients),
                       f"{ex.name}_backward returned None: its `return` line is missing (a function without one "
                       f"returns None); end it with `return {grads}`")
    grads = _as_tuple(raw, len(ex.inputs))
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


def _hint(levels, hint):
    """The hint at level ``hint`` (0 a nudge, 1 closer, 2 the formula), or the last one there is."""
    if isinstance(levels, str):
        levels = (levels,)
    return levels[min(hint, len(levels) - 1)] if levels else ""


def _diagnose(ex, case, op, reference, inputs, names, dy, rng, hint=0):
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
        if hint >= 0 and ex.hints.get(gname):
            lines.append(f"  hint: {_hint(ex.hints[gname], hint)}")
    if hint >= 0:  # the known mistake, when one fits, first: it says more than any one gradient
        lines = _mistakes(ex, case, inputs, dy, yours, right, hint) + lines
    return lines


def _mistakes(ex, case, inputs, dy, yours, right, hint):
    """A line for each of the exercise's known mistakes that yours fit (``problems.Mistake``)."""
    if not ex.mistakes:
        return []
    evidence = Evidence(dict(zip(ex.inputs, inputs)), dict(case.settings), ex.forward(*inputs, **case.settings)[1],
                        dict(zip(ex.outputs, dy)), dict(zip(ex.gradients, yours)), dict(zip(ex.gradients, right)))
    found = []
    for mistake in ex.mistakes:
        try:
            fits = mistake.fits(evidence)
        except (ValueError, IndexError, TypeError):  # gradients too far off to compare: not this mistake
            fits = False
        if fits:
            found += [f"the likely mistake: {mistake.name}", f"  hint: {_hint(mistake.hints, hint)}"]
    return found


def _are(names):
    return f"{', '.join(names)} {'is' if len(names) == 1 else 'are'}"


def _outputs(fn, inputs):
    y = fn(*inputs)[0]
    return y if isinstance(y, tuple) else (y,)


def _finite_differences(ex, case, op, reference, inputs, rng, hint=0):
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
                every = set(names) == set(ex.gradients)
                if every:
                    # Every gradient wrong along one path: the mistake is where that path enters the
                    # step, not in dx (or any one gradient); say so, and show one gradient as the evidence.
                    msg = [f"the path from the incoming d{out} is broken: with only d{out} coming in ({others} = 0), "
                           f"every gradient is wrong (finite differences), so the mistake is where d{out} enters "
                           f"the step, not in any one gradient"]
                    shown = [g for g in names if g == f"d{out}_prev"] or names[:1]
                else:
                    msg = [f"with only d{out} coming in ({others} = 0), {_are(names)} wrong (finite differences)"]
                    shown = names
                upstream_hint = UPSTREAM_HINTS.get((ex.name, f"d{out}"))
                if upstream_hint and every:
                    msg.append(f"  hint: {_hint(upstream_hint, hint)}")
                evidence = _diagnose(ex, case, op, reference, inputs, shown, dy, rng, hint if not every else -1)
                msg += [f"for example, {line}" for line in evidence] if every else evidence
                findings.append(Finding(case.name, "finite differences", names, "\n".join(msg), f"d{out}", str(e),
                                        every))
        if findings:
            return findings
    msg = [f"{_are(wrong)} wrong: finite differences (sn.gradcheck.check_op) disagree"]
    msg += _diagnose(ex, case, op, reference, inputs, wrong, None, rng, hint)
    return [Finding(case.name, "finite differences", wrong, "\n".join(msg), None, first_error)]


def _forward_outputs(ex, case, op, reference, inputs):
    """Your forward's outputs against the reference op's (before any gradient: they depend on them)."""
    lines = []
    for name, got, want in zip(ex.outputs, _outputs(op, inputs), _outputs(reference, inputs)):
        got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
        if got.shape != want.shape:
            lines.append(f"{name} has shape {got.shape}; sn.ops gives {want.shape}")
        elif not np.allclose(got, want, rtol=1e-9, atol=1e-12):
            worst = np.unravel_index(int(np.argmax(np.abs(got - want))), want.shape)
            where = f"{name}[{', '.join(str(int(k)) for k in worst)}]"
            lines.append(f"{name} differs from sn.ops at {int((~np.isclose(got, want, 1e-9, 1e-12)).sum())} of "
                         f"{want.size} elements; worst {where}: yours {float(got[worst]):.6g}, right {float(want[worst]):.6g}")
    if not lines:
        return []
    wrong = [line.split(" ")[0] for line in lines]
    return [Finding(case.name, "forward", wrong, "your forward is wrong: its outputs differ from sn.ops\n"
                    + "\n".join(lines))]


def _against_reference(ex, case, op, reference, inputs, rng, hint=0):
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
    msg += _diagnose(ex, case, op, reference, inputs, [w for w in wrong if w in ex.gradients], None, rng, hint)
    if case.hint:
        msg.append(f"  hint: {_hint(case.hint, hint)}")
    return [Finding(case.name, "reference", wrong, "\n".join(msg), None, details)]


def grade(name, backward, forward=None, *, hint=0, strict=False, seed=0):
    """Grade your backward pass (and, if you wrote one, your forward) for exercise ``name``.

    Parameters
    ----------
    name : {"dense", "conv2d", "max_pool", "lstm_step", "gru_step", "attention", "rms_norm"}
        The exercise (``"max_pool2d"``, ``"lstm"`` and ``"gru"`` are accepted too).
    backward : callable
        Your ``<name>_backward``, with the stub's signature
        (:mod:`scratchnet.exercises.stubs`): ``backward(dy, cache)``, or
        ``backward(dh, dc, cache)`` for the LSTM step (``backward(dh, cache)``
        for the GRU step, ``backward(dy, cache)`` for attention). For the layer exercise
        ``"rms_norm"``, your layer class
        (:func:`~scratchnet.exercises.layer.grade_layer`).
    forward : callable, optional
        Your ``<name>_forward``, with the signature of the given one
        (:mod:`scratchnet.exercises.forward`); its outputs are graded against
        ``sn.ops``. Default: the given forward.
    hint : {0, 1, 2}
        How much help a failure report gives: 0 a nudge (the default), 1
        closer, 2 the formula.
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
    >>> print(sn.exercises.grade("dense", sn.exercises.stub("dense")))
    dense: not implemented yet: fill in dense_backward(dy, cache) -> (dx, dw, db)
    """
    from .layer import LAYER_EXERCISES, grade_layer  # the layer exercise grades a class, not a function

    if name in LAYER_EXERCISES:
        return grade_layer(name, backward, hint=hint, strict=strict, seed=seed)
    ex = get_exercise(name)
    if hint not in (0, 1, 2):
        raise ValueError(f"grade: hint must be 0 (a nudge), 1 (closer) or 2 (the formula), got {hint!r}")
    report = GradeReport(ex.name, ex.signature, hint=hint)
    with use_backend("numpy"):
        for k, case in enumerate(ex.cases):
            rng = np.random.default_rng([seed, k])
            inputs = case.make(rng)
            op = ex.make_op(backward, **case.settings, **({} if forward is None else {"forward_pass": forward}))
            reference = ex.make_reference(**case.settings)
            try:
                found = _call_once(ex, case, op, inputs, rng)
                found = [found] if found else []
                if not found and forward is not None:
                    found = _forward_outputs(ex, case, op, reference, inputs)
                if not found and case.finite_differences:
                    found = _finite_differences(ex, case, op, reference, inputs, rng, hint)
                if not found:
                    found = _against_reference(ex, case, op, reference, inputs, rng, hint)
            except NotImplementedError:
                report.status = "not implemented"
                report.cases, report.findings = [], []
                break
            except Exception as e:  # the learner's code failed: show where, and stop
                report.status = "error"
                report.findings.append(Finding(case.name, "call", [], f"{type(e).__name__}: {e}\n{where(e)}"))
                report.cases.append((case.name, False))
                break
            report.cases.append((case.name, not found))
            report.findings += found
            if found:
                report.status = "failed"
    if strict:
        report.raise_if_failed()
    return report
