"""Hand-written low-level kernels, importable as ``scratchnet.kernels``.

- ``numba_ops.NumbaOps``: the CPU backend. Each ``*_numba.py`` file holds the
  Numba kernels for one op family as a class (``ConvNumba``, ...) that
  overrides the reference kernels of ``scratchnet/ops/<family>.py``.
- ``cupy_ops.CupyOps``: the GPU backend. The CUDA C sources (``*.cu``) sit in
  this folder and are compiled lazily by ``cuda.py`` through ``cupy.RawModule``.

Both keep the contract of ``scratchnet/ops/contract.py`` (the same methods,
with the same signatures). This folder sits at the top of the repository; a
wheel installs it as ``scratchnet/kernels/``, and in a plain checkout
``scratchnet/ops/backends.py`` loads it under that name.

Nothing here is imported or compiled by ``import scratchnet``.
"""
