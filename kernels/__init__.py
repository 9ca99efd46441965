"""Hand-written low-level kernels, importable as ``scratchnet.kernels``, one sub-package per trade.

- ``numba/``: the CPU backend, ``numba.backend.NumbaOps``, and its
  ``@njit`` kernels, one module per op family;
- ``cuda/``: the GPU backend, ``cuda.backend.CupyOps``, its CUDA C sources
  (``*.cu``, ``common.cuh``) and their compiler (``cuda/compiler.py``);
- ``runtime/``: the machine under the CPU kernels: the BLAS and its threads
  (``blas.py``), the split of an op between the cores (``threads.py``),
  memory (``memory.py``) and the packed GEMM of the LSTM (``gemm.py``).

Both backends keep the contract of ``scratchnet/ops/contract.py`` (the same
methods, with the same signatures). This folder sits at the top of the
repository; a wheel installs it as ``scratchnet/kernels/``, and in a plain
checkout ``scratchnet/__init__.py`` adds the checkout to the package's search
path, so that ``import scratchnet.kernels`` finds it there.

Nothing here is imported or compiled by ``import scratchnet``.
"""
