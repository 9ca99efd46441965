"""``scratchnet exercises [NAME]``: copy an exercise notebook into the current folder and open it with Jupyter.

::

    scratchnet exercises              # the exercises, and how to open one
    scratchnet exercises max_pool     # ./max_pool.ipynb, opened in JupyterLab (or the classic notebook)

An existing notebook is never overwritten: it holds the student's work, and
is opened as it is. Without Jupyter the command says how to install it (the
``learn`` extra) and how to open the notebook afterwards.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .checks import UsageError

INSTALL = "pip install 'scratchnet[learn]' (in a clone of the repository: pip install -e '.[learn]', or make exercises)"


def add_parser(sub):
    """The ``exercises`` subcommand, on the subparsers of ``scratchnet``."""
    p = sub.add_parser("exercises", help="copy an exercise notebook into this folder and open it with Jupyter")
    p.add_argument("name", nargs="?", help="the exercise (default: list them)")
    p.add_argument("--no-open", action="store_true", help="copy the notebook, do not start Jupyter")
    p.set_defaults(func=exercises)
    return p


def jupyter_command():
    """``[jupyter, "lab"]`` (or ``"notebook"``) when Jupyter is installed beside this Python, else None."""
    app = "lab" if importlib.util.find_spec("jupyterlab") else "notebook" if importlib.util.find_spec("notebook") else None
    if app is None:
        return None
    beside = Path(sys.executable).parent / "jupyter"
    jupyter = str(beside) if beside.exists() else shutil.which("jupyter")
    return [jupyter, app] if jupyter else None


def exercises(args):
    from ..exercises import notebook

    if args.name is None:
        print("The exercises (scratchnet exercises NAME copies one into this folder and opens it):")
        for name in notebook.NAMES:
            print(f"  {name:<11} {notebook.NOTEBOOKS[name][0]}: {notebook.NOTEBOOKS[name][1]}")
        return 0
    if args.name not in notebook.NOTEBOOKS:
        raise UsageError(f"unknown exercise {args.name!r}; choose one of {', '.join(notebook.NAMES)}")
    path, written = notebook.write(args.name, os.getcwd())
    if written:
        print(f"wrote {path.name}: fill in the stub, then run its cells")
    else:
        print(f"{path.name} is here already: opened as it is (your work is kept; delete it to start over)")
    command = jupyter_command()
    if command is None:
        print(f"Jupyter is not installed here: {INSTALL}; then: jupyter lab {path.name}")
        return 0
    if args.no_open:
        print(f"open it with: {' '.join(command)} {path.name}")
        return 0
    return subprocess.call([*command, path.name])
