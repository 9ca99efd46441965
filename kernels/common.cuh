// Shared by every CUDA source in scratchnet.kernels.
//
// Each .cu file is compiled twice, with -DREAL=float and -DREAL=double, so one
// source serves both dtypes; the loader (kernels/cuda.py) keeps the two
// modules apart. Kernels are extern "C" so their names are not mangled and
// cupy.RawModule.get_function finds them by the plain name.
#pragma once

#ifndef REAL
#define REAL float
#endif
typedef REAL real;

// Sizes are 64-bit: N*H*W*C of a large batch overflows a 32-bit int.
typedef long long index_t;

// Grid-stride loop: any grid size covers any n, so the launcher may cap the
// grid, and a grid of one thread runs the whole loop serially.
#define GRID_STRIDE_LOOP(i, n)                                              \
    for (index_t i = (index_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (index_t)blockDim.x * gridDim.x)

__device__ __forceinline__ real sigmoid_(real x) {
    // exp of a non-positive number never overflows.
    real e = exp(-fabs(x));
    return x >= 0 ? real(1) / (real(1) + e) : e / (real(1) + e);
}
