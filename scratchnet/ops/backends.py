"""The three backends and how each is built: the factories of ``scratchnet.backend.FACTORIES``::

    name    class           file                            built when
    numpy   ReferenceOps    scratchnet/ops/reference.py     always possible
    numba   NumbaOps        kernels/numba/backend.py        Numba imports
    cupy    CupyOps         kernels/cuda/backend.py         CuPy imports and a GPU is present

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
                              kernels/numba/backend.py, kernels/cuda/backend.py -> ops/reference.py

The fast backends are imported inside their factories, so ``import
scratchnet`` imports neither Numba nor CuPy. ``kernels/`` sits at the top of
the repository and is installed as the package ``scratchnet.kernels``
(``pyproject.toml`` maps the one onto the other); a plain checkout finds it
through ``scratchnet.__path__`` (``scratchnet/__init__.py``), so the imports
below are plain imports in both cases.
"""
from __future__ import annotations

from ..backend import BackendUnavailable, cupy_unavailable_reason, numba_unavailable_reason, register_backend
from .reference import ReferenceOps


def build_reference():
    """The ``numpy`` backend: the reference kernels."""
    return ReferenceOps()


def build_numba():
    """The ``numba`` backend. Its kernels compile on their first call, not here."""
    reason = numba_unavailable_reason()
    if reason:
        raise BackendUnavailable(f"backend 'numba' cannot run here: {reason}")
    from scratchnet.kernels.numba.backend import NumbaOps

    return NumbaOps()


def build_cupy():
    """The ``cupy`` backend. Its CUDA sources compile on first use, not here."""
    reason = cupy_unavailable_reason()
    if reason:
        raise BackendUnavailable(f"backend 'cupy' cannot run here: {reason}")
    from scratchnet.kernels.cuda.backend import CupyOps

    return CupyOps()


register_backend("numpy", build_reference)
register_backend("numba", build_numba)
register_backend("cupy", build_cupy)
