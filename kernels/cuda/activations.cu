// Elementwise special functions the ops need and CuPy's array namespace lacks.
// erf feeds GELU (scratchnet.ops.gelu): y = x * (1 + erf(x / sqrt 2)) / 2.
#include "common.cuh"

// y[i] = erf(x[i]): CUDA's erf (double) or erff (float), through the overload for real.
extern "C" __global__ void erf_kernel(const real* x, real* y, index_t n) {
    GRID_STRIDE_LOOP(i, n) {
        y[i] = erf(x[i]);
    }
}
