"""The machine under the Numba backend: one module per concern.

- ``blas.py``: which BLAS multiplies (MKL or NumPy's OpenBLAS), and how many
  threads it runs (one per call): the one module that controls a BLAS;
- ``threads.py``: an op split into one part per core, each on its own thread;
- ``memory.py``: glibc told to keep freed blocks for the next step;
- ``gemm.py``: a packed, register-blocked GEMM for the LSTM's few-row products.
"""
