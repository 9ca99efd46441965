"""The grader's report: a :class:`GradeReport`, made of :class:`Finding` objects, and where the learner's code failed.

:func:`~scratchnet.exercises.grade` fills a :class:`GradeReport` with one
:class:`Finding` per thing wrong on a case (the checks that find them are in
:mod:`scratchnet.exercises.checks`); ``print(report)`` reads it to a person:
the wrong gradients, or the broken path first, each fault once, and how to
get more help.
"""
from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from pathlib import Path


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


def _are(names):
    return f"{', '.join(names)} {'is' if len(names) == 1 else 'are'}"

