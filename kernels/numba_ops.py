"""The Numba CPU backend: NumPy arrays, hot kernels compiled by ``@njit``.

Kernels compile on first call (``cache=True`` keeps them on disk between
runs). Each family's class overrides reference kernels of ``ReferenceOps``
with the contract's signatures (``scratchnet/ops/contract.py``).
"""
from __future__ import annotations

from scratchnet.ops.reference import ReferenceOps

from .conv_numba import ConvNumba
from .embedding_numba import EmbeddingNumba
from .losses_numba import LossNumba
from .lstm_numba import LSTMNumba
from .pooling_numba import PoolingNumba


class NumbaOps(ConvNumba, PoolingNumba, LSTMNumba, EmbeddingNumba, LossNumba, ReferenceOps):
    """CPU backend: the reference kernels, with the hot ones compiled by Numba."""

    name = "numba"
