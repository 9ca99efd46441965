"""The documentation's sources stay in step with the code (the site itself is built by ``make docs``).

These checks need no Sphinx: they catch, in the test run, what would
otherwise fail only in the docs build, such as a derivation page that pulls
a function from the source by a name that no longer exists.
"""
from __future__ import annotations

import importlib.util

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
    assert {"dense", "activations", "softmax", "softmax_cross_entropy", "conv2d", "max_pool", "avg_pool", "lstm", "embedding",
            "dropout", "attention", "normalization", "gru"} <= pages


@pytest.mark.parametrize("tutorial", TUTORIALS, ids=lambda p: p.stem)
def test_each_tutorial_is_a_percent_script_listed_and_offered_as_a_notebook(tutorial):
    text = tutorial.read_text(encoding="utf-8")
    assert "# %%" in text and "kernelspec" in text, f"{tutorial.name} is not a jupytext percent-format notebook"
    ast.parse(text)  # the cells are plain Python (no magics), so ruff and python read the file
    assert f"/_build/notebooks/{tutorial.stem}.ipynb" in text, f"{tutorial.name} lacks its .ipynb download link"
    assert tutorial.stem in (DOCS / "tutorials" / "index.md").read_text(encoding="utf-8")


def test_seven_tutorials_one_per_lesson():
    assert [p.stem for p in TUTORIALS] == ["01_mlp", "02_lenet", "03_lstm_rows", "04_char_lm", "05_sharing_checkpoints",
                                           "06_transformer_lm", "07_resnet"]


# -- the learner's way in: the README, Start here, the lessons ----------------------------------------
README = ROOT / "README.md"
MARKDOWN_LINK = re.compile(r"\]\(((?!https?://|#)[^)\s]+)\)")


def _section(text, heading):
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def test_the_readme_opens_with_what_scratchnet_is_for_the_two_commands_and_where_to_go_next():
    text = README.read_text(encoding="utf-8")
    headings = re.findall(r"^## (.+)$", text, re.M)
    assert headings[:2] == ["Two commands", "Where to go next"], headings
    assert "for students who learn how a network computes its gradients" in text[:text.index("\n## ")]
    commands = _section(text, "Two commands")
    assert "make demo" in commands and "make test" in commands
    path = MARKDOWN_LINK.findall(_section(text, "Where to go next"))
    assert path == ["docs/start_here.md", "docs/backprop.md", "docs/derivations/index.md", "docs/exercises/index.md",
                    "docs/tutorials/index.md"]


def test_every_link_of_the_readme_names_a_file_that_exists():
    for target in MARKDOWN_LINK.findall(README.read_text(encoding="utf-8")):
        assert (ROOT / target).is_file(), f"README.md links to {target}, which does not exist"


def test_the_readme_keeps_the_engineering_material_in_the_documentation():
    text = README.read_text(encoding="utf-8")
    for moved in ("## Safety", "## Backends", "## Benchmarks", "## Training on several machines", "## Profiling"):
        assert moved not in text, f"README.md still holds {moved!r}; it lives in docs/engineering/"
    for page in ("backends", "layout", "safety", "distributed", "benchmarks"):
        assert f"docs/engineering/{page}.md" in text
        assert (DOCS / "engineering" / f"{page}.md").is_file()


def test_the_seven_lessons_are_named_alike_in_the_readme_and_on_start_here():
    intro = README.read_text(encoding="utf-8").split("\n## ")[0]
    lessons = re.findall(r"^\d\. (.+)$", intro, re.M)
    assert len(lessons) == 7 and "seven **lessons**" in intro
    table = re.findall(r"^\| (\d) \| \{doc\}`tutorials/(\w+)` \| `(\w+)` \|", (DOCS / "start_here.md").read_text(), re.M)
    assert [(int(n), page) for n, page, _ in table] == list(enumerate((p.stem for p in TUTORIALS), start=1))
    assert [model for _, _, model in table] == ["mlp", "lenet", "lstm", "charlm", "mlp", "transformer_lm", "resnet"]


def test_the_words_of_the_learners_pages_keep_seed_for_randomness():
    for path in (README, DOCS / "index.md", DOCS / "start_here.md"):
        for line in path.read_text(encoding="utf-8").splitlines():
            if re.search(r"\bseed (lesson|model|\d{3})\b|\bthe seeds?'", line):
                assert "Some comments in the source" in line or "`seed 000`" in line, f"{path.name}: {line}"


def test_every_test_the_safety_page_names_exists():
    names = set(re.findall(r"`(test_\w+\*?)`", (DOCS / "engineering" / "safety.md").read_text(encoding="utf-8")))
    defined = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "tests").glob("*.py"))
    assert names
    for name in sorted(names):
        pattern = rf"def {re.escape(name.rstrip('*'))}" + (r"\w*" if name.endswith("*") else r"\b")
        assert re.search(pattern, defined), f"docs/engineering/safety.md names {name}, which no test defines"


def _build_paths():
    spec = importlib.util.spec_from_file_location("build_paths", DOCS / "_ext" / "build_paths.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_docs_build_fails_on_a_page_showing_the_build_machines_paths(tmp_path):
    # make docs runs this check on the real site when the build finishes (docs/conf.py: refuse_build_paths).
    site = tmp_path / "html"
    (site / "tutorials").mkdir(parents=True)
    (site / "_modules").mkdir()
    (site / "index.html").write_text("<p>data from ../shared/datasets/mnist-test</p>")
    (site / "_modules" / "x.html").write_text(f"<p>{ROOT.parent}/main/scratchnet/x.py</p>")  # the package's own
    assert _build_paths().leaks(site, ROOT) == []
    (site / "tutorials" / "02_lenet.html").write_text(f"<pre>data: {ROOT.parent}/shared/mnist</pre>")
    (site / "api.html").write_text("<pre>&lt;module 'numpy' from '/x/lib/python3.11/site-packages/numpy'&gt;</pre>")
    assert _build_paths().leaks(site, ROOT) == [("api.html", "site-packages/"),
                                              ("tutorials/02_lenet.html", str(ROOT.parent) + "/")]


def test_the_docs_build_runs_the_build_path_check():
    conf = (DOCS / "conf.py").read_text(encoding="utf-8")
    assert 'app.connect("build-finished", refuse_build_paths)' in conf
