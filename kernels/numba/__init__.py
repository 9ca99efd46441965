"""The Numba CPU backend: ``backend.NumbaOps``, and one module of ``@njit`` kernels per op family.

``conv.py`` (im2col + GEMM), ``winograd.py`` and ``winograd_transforms.py``
(Winograd F(4x4, 5x5)), ``dense.py``, ``pooling.py``, ``lstm.py``,
``gru.py`` (the GRU's and SimpleRNN's loops), ``embedding.py``, ``dropout.py``,
``losses.py``, ``updates.py``, ``normalization.py`` (layer and batch norm),
``special.py`` (``erf``). Each
module's functions take and return NumPy arrays with the contract's
arguments (``scratchnet/ops/contract.py``); ``backend.py`` is the one class
that calls them. The machine plumbing they share (threads, BLAS, memory, the
packed GEMM) is in ``kernels/runtime/``.

Importing this package imports nothing: the backend loads on first use.
"""
