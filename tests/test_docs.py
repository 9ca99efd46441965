"""The documentation's sources stay in step with the code (the site itself is built by ``make docs``).

These checks need no Sphinx: they catch, in the test run, what would
otherwise fail only in the docs build, such as a derivation page that pulls
a function from the source by a name that no longer exists.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
LITERALINCLUDE = re.compile(r"```\{literalinclude\} (?P<path>\S+)\n(?P<options>(?::[\w-]+:.*\n)*)")
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)
TUTORIALS = sorted((DOCS / "tutorials").glob("*.py"))


def _defined_names(path):
    """Every ``function``, ``Class`` and ``Class.method`` defined at the top of a Python file."""
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            names |= {f"{node.name}.{n.name}" for n in node.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    return names


def _includes():
    for page in PAGES:
        for m in LITERALINCLUDE.finditer(page.read_text(encoding="utf-8")):
            options = dict(re.findall(r":([\w-]+):\s*(.*)", m.group("options")))
            yield pytest.param(page, m.group("path"), options, id=f"{page.relative_to(DOCS)}:{options.get('pyobject', '')}")


@pytest.mark.parametrize("page, target, options", list(_includes()))
def test_every_literalinclude_names_a_file_and_object_that_exist(page, target, options):
    path = (page.parent / target).resolve()
    assert path.is_file(), f"{page.relative_to(ROOT)} includes {target}, which does not exist"
    if "pyobject" in options:
        assert options["pyobject"] in _defined_names(path), (
            f"{page.relative_to(ROOT)} includes {options['pyobject']!r} from {target}, which no longer defines it")
    text = path.read_text(encoding="utf-8")
    for key in ("start-at", "end-before"):
        if key in options:
            assert options[key] in text, f"{page.relative_to(ROOT)}: {key} {options[key]!r} is not in {target}"


def test_the_docs_have_the_derivation_pages_of_every_op_family():
    pages = {p.stem for p in (DOCS / "derivations").glob("*.md")}
    assert {"dense", "activations", "softmax", "softmax_cross_entropy", "conv2d", "max_pool", "lstm", "embedding",
            "dropout"} <= pages


@pytest.mark.parametrize("tutorial", TUTORIALS, ids=lambda p: p.stem)
def test_each_tutorial_is_a_percent_script_listed_and_offered_as_a_notebook(tutorial):
    text = tutorial.read_text(encoding="utf-8")
    assert "# %%" in text and "kernelspec" in text, f"{tutorial.name} is not a jupytext percent-format notebook"
    ast.parse(text)  # the cells are plain Python (no magics), so ruff and python read the file
    assert f"/_build/notebooks/{tutorial.stem}.ipynb" in text, f"{tutorial.name} lacks its .ipynb download link"
    assert tutorial.stem in (DOCS / "tutorials" / "index.md").read_text(encoding="utf-8")


def test_five_tutorials_one_per_seed_lesson():
    assert [p.stem for p in TUTORIALS] == ["01_mlp", "02_lenet", "03_lstm_rows", "04_char_lm", "05_sharing_checkpoints"]
