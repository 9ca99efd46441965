"""The reference backend: every kernel in plain, readable NumPy-style code.

``ReferenceOps`` is assembled from one kernel mixin per op family; each mixin
lives next to the op it serves (``conv.py`` holds ``ConvKernels``, and so on).
The kernels are written against ``self.xp``, so the CuPy backend inherits any
kernel it does not override. The Numba and CuPy backends subclass this and
override only hot kernels, with identical signatures
(``tests/test_backend.py`` checks that).
"""
from __future__ import annotations

import numpy

from .activations import ActivationKernels
from .conv import ConvKernels
from .dense import DenseKernels
from .dropout import DropoutKernels
from .embedding import EmbeddingKernels
from .losses import LossKernels
from .lstm import LSTMKernels
from .pooling import PoolKernels


class ReferenceOps(
    DenseKernels,
    ActivationKernels,
    ConvKernels,
    PoolKernels,
    LSTMKernels,
    EmbeddingKernels,
    DropoutKernels,
    LossKernels,
):
    """Plain NumPy: the readable version of every kernel, and the test oracle."""

    name = "numpy"
    xp = numpy

    def native(self, op, name, a):
        """``a`` as this backend's array type.

        Another backend's array is an error, never a silent copy
        (:meth:`_refuse_foreign`). Lists and Python scalars are converted.
        """
        if isinstance(a, self.xp.ndarray):
            return a
        self._refuse_foreign(op, name, a)
        a = numpy.asarray(a)
        if a.dtype == numpy.float64:
            # Python floats and lists default to float32, as in TensorFlow.
            a = a.astype(numpy.float32)
        return self.xp.asarray(a)

    def _refuse_foreign(self, op, name, a):
        """Raise when ``a`` is an array of another backend (here: a GPU array)."""
        if type(a).__module__.startswith("cupy"):
            raise ValueError(
                f"{op}: {name} is a CuPy array but the backend is {self.name!r}; "
                f"use sn.to_numpy({name}) or sn.use_backend('cupy')"
            )

    def __repr__(self):
        return f"<scratchnet backend {self.name!r}>"
