"""The CuPy GPU backend: ``backend.CupyOps``, and the CUDA C kernels it launches.

One ``.cu`` file per op family, written once against a ``REAL`` type macro,
with ``common.cuh`` shared; ``compiler.py`` finds them, compiles them on first
use (NVRTC, through ``cupy.RawModule``, or nvcc for the checks) and caches
them. Importing this package imports nothing, CuPy included.
"""
