"""The checks the grader runs on each case, and the diagnosis of a wrong gradient.

In the order :func:`~scratchnet.exercises.grade` runs them: the call (the
number, type and shape of the gradients), the learner's forward against
``sn.ops`` (when they wrote one), finite differences (each input on its own,
then one incoming gradient at a time for a step with several outputs), and
the reference op. Each returns a list of
:class:`~scratchnet.exercises.Finding` (empty when the case passes);
``_diagnose`` writes the lines that show a wrong gradient's worst
element, the pattern it fits (``_pattern``), the hint at the level asked
for (``_hint``) and the exercise's known mistakes that fit
(``_mistakes``).
"""
from __future__ import annotations

import numpy as np

from ..gradcheck import GradcheckError, check_against, check_op
from .problems import UPSTREAM_HINTS, Evidence
from .report import Finding, _are


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

