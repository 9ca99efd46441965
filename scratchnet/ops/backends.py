"""The three backends and how each is built: the factories of ``scratchnet.backend.FACTORIES``::

    name    class           file                            built when
    numpy   ReferenceOps    scratchnet/ops/reference.py     always possible
    numba   NumbaOps        kernels/numba_ops.py            Numba imports
    cupy    CupyOps         kernels/cupy_ops.py             CuPy imports and a GPU is present

Why this module, and not ``scratchnet/backend.py``, knows the backends: the
op modules import ``get_backend`` from ``backend.py``, and ``ReferenceOps`` is
assembled from the op modules, so ``backend.py`` cannot import it without an
import circle. This module sits above both: it imports ``ReferenceOps`` and
registers one factory per backend in ``backend.py``'s table, and
``scratchnet/__init__.py`` imports it, so the table is full as soon as
scratchnet is imported. The imports point one way only::

    scratchnet/__init__.py -> ops/backends.py -> ops/reference.py -> ops/<family>.py -> backend.py
                                     |  (on first use of numba / cupy)
                                     v
                              kernels/numba_ops.py, kernels/cupy_ops.py -> ops/reference.py

The fast backends are loaded by module name only when they are first built,
so ``import scratchnet`` imports neither Numba nor CuPy.

``kernels/`` sits at the top of the repository and is installed as the
package ``scratchnet.kernels`` (``pyproject.toml`` maps the one onto the
other). A plain checkout on ``PYTHONPATH`` has no such package, so when it is
not installed, :func:`find_kernels` registers the checkout's ``kernels/``
folder under that name. This happens at import, so ``scratchnet.kernels.cuda``
and the others import from a checkout as they do from an install.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from ..backend import BackendUnavailable, cupy_unavailable_reason, numba_unavailable_reason, register_backend
from .reference import ReferenceOps

KERNELS_PACKAGE = "scratchnet.kernels"
# In a checkout: <repo>/kernels, beside <repo>/scratchnet.
CHECKOUT_KERNELS = Path(__file__).resolve().parents[2] / "kernels"


def find_kernels():
    """Make ``scratchnet.kernels`` importable; return whether it is.

    An installed package (a wheel, or an editable install) wins. Otherwise,
    in a plain checkout, the top-level ``kernels/`` folder is loaded as the
    package ``scratchnet.kernels``: its ``__init__.py`` runs under that name
    and its folder becomes the package's search path, so
    ``import scratchnet.kernels.numba_ops`` finds ``kernels/numba_ops.py``.
    """
    if KERNELS_PACKAGE in sys.modules or importlib.util.find_spec(KERNELS_PACKAGE) is not None:
        return True
    init = CHECKOUT_KERNELS / "__init__.py"
    # numba_ops.py makes sure the folder is ours, not another package named "kernels".
    if not (init.is_file() and (CHECKOUT_KERNELS / "numba_ops.py").is_file()):
        return False
    spec = importlib.util.spec_from_file_location(
        KERNELS_PACKAGE, init, submodule_search_locations=[str(CHECKOUT_KERNELS)]
    )
    package = importlib.util.module_from_spec(spec)
    sys.modules[KERNELS_PACKAGE] = package
    try:
        spec.loader.exec_module(package)
    except BaseException:
        del sys.modules[KERNELS_PACKAGE]
        raise
    # What the import system does for any subpackage: make it an attribute of its parent.
    sys.modules["scratchnet"].kernels = package
    return True


def kernels_module(backend, name):
    """``scratchnet.kernels.<name>``, imported for ``backend`` (the name quoted in errors)."""
    if not find_kernels():
        raise BackendUnavailable(
            f"backend {backend!r} cannot run here: scratchnet.kernels is not installed "
            f"and the checkout has no {CHECKOUT_KERNELS}"
        )
    return importlib.import_module(f"{KERNELS_PACKAGE}.{name}")


def build_reference():
    """The ``numpy`` backend: the reference kernels."""
    return ReferenceOps()


def build_numba():
    """The ``numba`` backend. Its kernels compile on their first call, not here."""
    reason = numba_unavailable_reason()
    if reason:
        raise BackendUnavailable(f"backend 'numba' cannot run here: {reason}")
    return kernels_module("numba", "numba_ops").NumbaOps()


def build_cupy():
    """The ``cupy`` backend. Its CUDA sources compile on first use, not here."""
    reason = cupy_unavailable_reason()
    if reason:
        raise BackendUnavailable(f"backend 'cupy' cannot run here: {reason}")
    return kernels_module("cupy", "cupy_ops").CupyOps()


register_backend("numpy", build_reference)
register_backend("numba", build_numba)
register_backend("cupy", build_cupy)
find_kernels()
