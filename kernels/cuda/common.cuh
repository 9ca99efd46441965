// Shared by every CUDA source in scratchnet.kernels.
//
// Each .cu file is compiled twice, with -DREAL=float and -DREAL=double, so one
// source serves both dtypes; the loader (kernels/cuda/compiler.py) keeps the two
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

// Deterministic scatter-add, dst[keys[m], :] += src[m, :] for m < M (rows of
// D), with no atomics. `order` holds 0..M-1 sorted by key with a stable sort
// (cupy.argsort is one), so equal keys sit side by side, in position order.
// The thread at the first entry of each run of equal keys sums the run in
// that order and writes the row. Every dst row is written by one thread and
// summed in one order, so the result has the same bits on every run (and
// the bits of numpy.add.at, which adds in position order). Rows no key names
// are left as they are (the caller zeroes dst); keys outside [0, V) are skipped.
// The cost is a sort; a run of r equal keys is r sequential adds in one thread.
__device__ __forceinline__ void sorted_scatter_add(const long long* keys, const long long* order,
                                                   const real* src, real* dst,
                                                   index_t M, index_t D, index_t V) {
    GRID_STRIDE_LOOP(idx, M * D) {
        const index_t r = idx / D, d = idx % D;  // the r-th entry in key order, column d
        const long long key = keys[order[r]];
        if (key < 0 || key >= V) continue;
        if (r > 0 && keys[order[r - 1]] == key) continue;  // not the first of its run
        real acc = 0;
        for (index_t q = r; q < M && keys[order[q]] == key; ++q) acc += src[order[q] * D + d];
        dst[key * D + d] = acc;
    }
}
