"""The Numba CPU backend: NumPy arrays, hot kernels compiled by ``@njit``.

Kernels compile on first call (``cache=True`` keeps them on disk between
runs). Each family's class overrides reference kernels of ``ReferenceOps``
with the contract's signatures (``scratchnet/ops/contract.py``).

Building the backend also tells glibc to keep freed blocks for reuse
(``kernels/memory.py``): otherwise every step pays thousands of page faults
for arrays it has already had.
"""
from __future__ import annotations

from scratchnet.ops.reference import ReferenceOps

from .conv_numba import ConvNumba
from .dense_numba import DenseNumba
from .dropout_numba import DropoutNumba
from .embedding_numba import EmbeddingNumba
from .losses_numba import LossNumba
from .lstm_numba import LSTMNumba
from .memory import keep_freed_memory
from .pooling_numba import PoolingNumba
from .updates_numba import UpdateNumba


class NumbaOps(DenseNumba, ConvNumba, PoolingNumba, LSTMNumba, EmbeddingNumba, DropoutNumba, LossNumba, UpdateNumba,
               ReferenceOps):
    """CPU backend: the reference kernels, with the hot ones compiled by Numba."""

    name = "numba"

    def __init__(self):
        keep_freed_memory()
