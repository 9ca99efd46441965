"""The reference backend: every kernel of the contract in plain, readable NumPy-style code.

``ReferenceOps`` implements :class:`scratchnet.ops.contract.Ops` (the kernels
and their shapes, in one class). Its code is assembled from one class per op
family, each beside the op it serves: ``conv.py`` holds ``ConvReference``,
``pooling.py`` holds ``PoolingReference``, and so on. The kernels are
written against ``self.xp``, so they run on CuPy arrays as they are. The
Numba and CuPy backends (``kernels/numba/backend.py``, ``kernels/cuda/backend.py``)
name these functions for every kernel they have no fast version of
(``sigmoid = ReferenceOps.sigmoid``): run on those backends, a reference
kernel's calls (``self.gemm``, ``self.im2col``) reach their fast kernels.
"""
from __future__ import annotations

import numpy

from .activations import ActivationReference
from .contract import Ops
from .conv import ConvReference
from .dense import DenseReference
from .dropout import DropoutReference
from .embedding import EmbeddingReference
from .gru import GRUReference
from .losses import LossReference
from .lstm import LSTMReference
from .normalization import NormalizationReference
from .pooling import PoolingReference
from .updates import UpdateReference


class ReferenceOps(
    DenseReference,
    ActivationReference,
    ConvReference,
    PoolingReference,
    LSTMReference,
    GRUReference,
    EmbeddingReference,
    DropoutReference,
    LossReference,
    NormalizationReference,
    UpdateReference,
    Ops,
):
    """Plain NumPy: the readable version of every kernel, and the test oracle."""

    name = "numpy"
    xp = numpy

    def native(self, op, name, a):
        """``a`` as an array of ``self.xp``; another backend's array is an error (:meth:`_refuse_foreign`)."""
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
