"""Hand-written low-level kernels, importable as ``scratchnet.kernels``.

- ``numba_ops.NumbaOps``: the CPU backend. Each ``*_numba.py`` file holds the
  Numba kernels for one op family as a mixin that overrides the reference
  kernels in ``scratchnet/ops/``.
- ``cupy_ops.CupyOps``: the GPU backend. The CUDA C sources (``*.cu``) sit in
  this folder and are compiled lazily by ``cuda.py`` through ``cupy.RawModule``.

Nothing here is imported or compiled by ``import scratchnet``.
"""
