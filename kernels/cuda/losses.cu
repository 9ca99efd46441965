// Softmax cross-entropy with integer labels, fused.
//
// logits, probs: (M, K); labels: (M,) int64 class ids; losses: (M,).
// loss_m = logsumexp(x_m) - x_m[label_m], computed as (max - x_m[label_m]) + log(sum exp(x - max))
// so it stays finite for logits of +-1e4 (never log(p + eps)).
#include "common.cuh"

// Tree reduction over the block in shared memory; every thread gets the
// result. Any block size works: the first step folds the threads at and past
// the largest power of two below blockDim.x onto the ones before it, and
// the rest halve a power of two. buf holds blockDim.x entries.
__device__ real block_reduce(real v, real* buf, bool take_max) {
    buf[threadIdx.x] = v;
    __syncthreads();
    unsigned s = 1;
    while (2 * s < blockDim.x) s *= 2;  // the largest power of two below blockDim.x
    for (; s > 0; s >>= 1) {
        if (threadIdx.x < s && threadIdx.x + s < blockDim.x) {
            const real o = buf[threadIdx.x + s];
            buf[threadIdx.x] = take_max ? fmax(buf[threadIdx.x], o) : buf[threadIdx.x] + o;
        }
        __syncthreads();
    }
    const real r = buf[0];
    // buf is reused by the next reduction; nobody may overwrite buf[0] first.
    __syncthreads();
    return r;
}

// One block per row (block-stride over rows when M exceeds the grid): a
// row of a 10,000-word vocabulary is spread over the block's threads.
// Launch contract: any block size (1 to 1,024 threads), with
// shared_mem = blockDim.x * sizeof(real) bytes of dynamic shared memory for
// the reduction's buffer (so a block of 1,024 doubles needs 8 KiB).
extern "C" __global__ void softmax_cross_entropy_forward(const real* logits, const long long* labels,
                                                real* losses, real* probs,
                                                index_t M, index_t K) {
    extern __shared__ real buf[];
    for (index_t m = blockIdx.x; m < M; m += gridDim.x) {
        const real* x = logits + m * K;
        real* p = probs + m * K;
        real mx = x[0];
        for (index_t k = threadIdx.x; k < K; k += blockDim.x) mx = fmax(mx, x[k]);
        mx = block_reduce(mx, buf, true);
        real s = 0;
        for (index_t k = threadIdx.x; k < K; k += blockDim.x) s += exp(x[k] - mx);
        s = block_reduce(s, buf, false);
        // Not exp(x - lse) with lse = mx + log(s): for logits of 1e4 a float32
        // lse carries an error of half its ulp (5e-4), and every p with it.
        // x - mx is exact for the large entries that matter, and log(s) is small.
        const real log_s = log(s);
        for (index_t k = threadIdx.x; k < K; k += blockDim.x) p[k] = exp((x[k] - mx) - log_s);
        if (threadIdx.x == 0) losses[m] = (mx - x[labels[m]]) + log_s;
    }
}

// dlogits = scale * (probs - onehot(labels)), one thread per element; the
// derivation, and why scale = dloss / M, is in scratchnet.ops.losses.
extern "C" __global__ void softmax_cross_entropy_backward(const real* probs, const long long* labels,
                                                 real* dlogits, real scale,
                                                 index_t M, index_t K) {
    const index_t total = M * K;
    GRID_STRIDE_LOOP(idx, total) {
        const index_t m = idx / K, k = idx % K;
        const real target = labels[m] == k ? real(1) : real(0);
        dlogits[idx] = scale * (probs[idx] - target);
    }
}
