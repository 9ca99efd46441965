"""Sphinx configuration of the scratchnet documentation (``make docs`` builds it into docs/_build/html).

Pages are MyST Markdown (``*.md``); pages with code cells are MyST-NB text
notebooks, executed at every build. The tutorials are jupytext percent-format
scripts (``tutorials/*.py``), executed too, and offered as ``.ipynb``
downloads generated from them (:func:`write_notebooks`). The math renders
offline: MathJax is copied from the ``sphinx-mathjax-offline`` wheel into
``_static/mathjax`` (:func:`copy_mathjax`), never loaded from a CDN.

Environment:

- ``SCRATCHNET_DOCS_EXECUTE``: ``force`` (default: every page that is read
  runs; a fresh build reads them all) or ``off`` (nothing runs: to check the
  layout quickly). Any other myst-nb execution mode is passed through.
- ``MNIST_TEST``: the real MNIST test set (two IDX files) the tutorials test
  on; default ``../shared/datasets/mnist-test`` beside the checkout, when it
  is there, written relative to the folder of a page two levels down
  (``docs/tutorials/``, ``docs/exercises/``), where its kernel runs: the
  pages print where their data came from, and never the build machine's
  absolute paths.
"""
from __future__ import annotations

import importlib.util
import inspect
import os
import re
import shutil
from pathlib import Path

import jupytext

import scratchnet

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
_spec = importlib.util.spec_from_file_location("build_paths", DOCS / "_ext" / "build_paths.py")
build_paths = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_paths)

# -- what the executed pages see (the kernels inherit this environment) ------------------------------
_mnist_test = ROOT.parent / "shared" / "datasets" / "mnist-test"
if "MNIST_TEST" not in os.environ and _mnist_test.is_dir():
    os.environ["MNIST_TEST"] = os.path.relpath(_mnist_test, DOCS / "tutorials")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up lines are not part of any page
os.environ["SCRATCHNET_DOCS_ROOT"] = str(ROOT)

# -- project ----------------------------------------------------------------------------------------
project = "scratchnet"
author = "the scratchnet authors"
copyright = "the scratchnet authors"
release = version = scratchnet.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

# The tutorials are .py files: every .py under docs/ is a page, except these.
exclude_patterns = ["_build", "conf.py", "_ext", "**/.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]
source_suffix = {".md": "myst-nb", ".rst": "restructuredtext"}

# -- MyST and MyST-NB -------------------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist", "attrs_inline"]
myst_heading_anchors = 3
nb_custom_formats = {".py": ["jupytext.reads", {"fmt": "py:percent"}]}
nb_execution_mode = os.environ.get("SCRATCHNET_DOCS_EXECUTE", "force")
nb_execution_timeout = 600
nb_execution_raise_on_error = True  # a failing cell fails the build
nb_execution_show_tb = True
nb_merge_streams = True
nb_execution_cache_path = str(DOCS / "_build" / ".jupyter_cache")

# -- autodoc ----------------------------------------------------------------------------------------
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": False}
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # the numpydoc sections say the types; signatures stay as written
autosummary_generate = False
napoleon_google_docstring = False
napoleon_numpy_docstring = True
# Parameters and return values as prose, not as :type: fields: the docstrings' types read like
# "array of shape (N, C)" or "int or (sh, sw)", and Sphinx would cross-reference every word of a
# :type: field as a Python name ("shape" matching Parameter.shape and GradientCheck.shape).
napoleon_use_param = False
napoleon_use_keyword = False
napoleon_use_rtype = False
napoleon_use_ivar = True
nitpicky = False  # unresolved references in docstrings (numpy, TensorFlow names) stay plain text
# "more than one target found for cross-reference": an attribute type such as ``name : str`` is
# still resolved as a Python name, and many classes have a ``name``; the first target is taken.
suppress_warnings = ["ref.python"]

# -- HTML -------------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"scratchnet {release}"
html_static_path = ["_static"]
html_css_files = ["scratchnet.css"]
html_theme_options = {"navigation_with_keys": True}

# MathJax 3 from the sphinx-mathjax-offline wheel, copied into _static/mathjax by copy_mathjax().
mathjax_path = "mathjax/tex-chtml.js"


def _mathjax_source():
    spec = importlib.util.find_spec("sphinx-mathjax-offline")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("docs: the math needs the sphinx-mathjax-offline package (pip install -e '.[docs]')")
    return Path(list(spec.submodule_search_locations)[0]) / "static" / "mathjax"


def copy_mathjax(app, exc):
    """The MathJax component the pages load (tex-chtml.js) and its fonts, into the site's _static."""
    if exc is not None or app.builder.format != "html":
        return
    src, dst = _mathjax_source(), Path(app.outdir) / "_static" / "mathjax"
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src / "tex-chtml.js", dst / "tex-chtml.js")
    fonts = src / "output" / "chtml" / "fonts" / "woff-v2"
    shutil.copytree(fonts, dst / "output" / "chtml" / "fonts" / "woff-v2", dirs_exist_ok=True)


NOTEBOOKS = DOCS / "_build" / "notebooks"


def write_notebooks(app):
    """Each tutorial as an .ipynb (no outputs: run it yourself), for the pages' download links.

    Written before the pages are read, so that the ``{download}`` role in each
    tutorial finds its file (``/_build/notebooks/NAME.ipynb``).
    """
    NOTEBOOKS.mkdir(parents=True, exist_ok=True)
    for py in sorted((DOCS / "tutorials").glob("*.py")):
        notebook = jupytext.read(py, fmt="py:percent")
        notebook.metadata.pop("jupytext", None)
        jupytext.write(notebook, NOTEBOOKS / f"{py.stem}.ipynb", fmt="ipynb")


SHAPE_LINE = re.compile(r"^(returns\b|[A-Za-z_]\w*(, ?[A-Za-z_]\w*)* : )")


def shape_notes_as_literal(app, what, name, obj, options, lines):
    """Show the backend contract's shape notes (``x : (N, C);  w : (C, K)`` lines) as written.

    The kernels of :class:`scratchnet.ops.contract.Ops` document their shapes
    in compact plain-text lines with hanging indents, not numpydoc sections;
    as reStructuredText those indents are errors. Each such run of lines is
    turned into a literal block, so it renders exactly as it reads in the
    source (and the docstrings stay as they are).
    """
    if not name.startswith("scratchnet.ops.contract.Ops."):
        return
    out, i = [], 0
    while i < len(lines):
        if i > 0 and SHAPE_LINE.match(lines[i]) and not (out and out[-1].startswith("    ")):
            out += ["::", ""] if not out or out[-1] == "" else ["", "::", ""]
            while i < len(lines) and (lines[i].strip() == "" or SHAPE_LINE.match(lines[i]) or lines[i].startswith(" ")):
                if lines[i].strip() == "" and (i + 1 >= len(lines) or not (SHAPE_LINE.match(lines[i + 1])
                                                                          or lines[i + 1].startswith(" "))):
                    break
                out.append("    " + lines[i] if lines[i].strip() else "")
                i += 1
            out.append("")
            continue
        out.append(lines[i])
        i += 1
    lines[:] = out


def skip_modules(app, what, name, obj, skip, options):
    """Leave out a class attribute that holds a module (``ReferenceOps.xp = numpy``).

    autodoc would show its value, the module's repr, which is the build
    machine's absolute path to it (``<module 'numpy' from '/.../site-packages/...'>``).
    """
    return True if inspect.ismodule(obj) else None


def refuse_build_paths(app, exception):
    """Fail the build when a page shows the build machine's paths (:func:`build_paths.leaks`)."""
    if exception is not None or app.builder.format != "html":
        return
    found = build_paths.leaks(app.outdir, ROOT)
    if found:
        from sphinx.errors import ExtensionError

        raise ExtensionError("pages show the build machine's paths: "
                             + "; ".join(f"{page} shows {text!r}" for page, text in found))


def setup(app):
    _mathjax_source()  # fail at once, not after the pages have run
    app.connect("autodoc-process-docstring", shape_notes_as_literal)
    app.connect("autodoc-skip-member", skip_modules)
    app.connect("builder-inited", write_notebooks)
    app.connect("build-finished", copy_mathjax)
    app.connect("build-finished", refuse_build_paths)
    return {"parallel_read_safe": True}
