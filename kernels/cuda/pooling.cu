// Max pooling over NHWC. The forward records, per output, where its maximum
// came from; the backward routes the whole gradient there. The rule, and why
// the gradient goes to one input, is in scratchnet.ops.pooling.
//
// (oh, ow): an output position; (i, j): an offset in the window;
// (ih, iw) = (oh*sh - top + i, ow*sw - left + j): the input position it reads.
#include "common.cuh"

// y, argmax: (N, OH, OW, C). argmax is the flat index ih*W + iw of the FIRST
// maximum in row-major window order (strict > keeps the earlier of equal
// values, as TensorFlow does), in the unpadded input: padding never wins.
extern "C" __global__ void max_pool2d_forward(const real* x, real* y, long long* argmax,
                                           index_t N, index_t H, index_t W, index_t C,
                                           index_t kh, index_t kw, index_t sh, index_t sw,
                                           index_t top, index_t left, index_t OH, index_t OW) {
    const index_t total = N * OH * OW * C;
    GRID_STRIDE_LOOP(idx, total) {
        index_t t = idx;
        const index_t c = t % C; t /= C;
        const index_t ow = t % OW; t /= OW;
        const index_t oh = t % OH;
        const index_t n = t / OH;
        const real* plane = x + n * H * W * C + c;
        real best = 0;
        index_t where = -1;
        for (index_t i = 0; i < kh; ++i) {
            const index_t ih = oh * sh - top + i;
            if (ih < 0 || ih >= H) continue;
            for (index_t j = 0; j < kw; ++j) {
                const index_t iw = ow * sw - left + j;
                if (iw < 0 || iw >= W) continue;
                const real v = plane[(ih * W + iw) * C];
                if (where < 0 || v > best) {
                    best = v;
                    where = ih * W + iw;
                }
            }
        }
        // A window lies at least partly inside the input for TF's SAME and
        // VALID padding, so where >= 0 here; -1 would mark an empty window.
        y[idx] = best;
        argmax[idx] = where;
    }
}

// The backward is a scatter-add, dx[n, argmax, c] += dy[n, oh, ow, c]:
// windows overlap when the stride is smaller than the window, so two outputs
// can route to one input. As for the embedding (embedding.cu), the default
// is deterministic and the atomic version is the fast path, asked for.
//
// The deterministic backward runs in three steps:
// 1. max_pool2d_backward_keys: keys[m] = the flat index into dx that dy[m]
//    goes to, (n*H*W + argmax[m])*C + c (-1 for an empty window);
// 2. on the host, order = argsort(keys), a stable sort;
// 3. max_pool2d_backward: each dx element sums its run of dy entries in
//    position order (sorted_scatter_add in common.cuh, rows of one).
// dy, argmax, keys: (N, OH, OW, C), M = their size; dx: (N, H, W, C), V = its
// size, zeroed by the caller.
extern "C" __global__ void max_pool2d_backward_keys(const long long* argmax, long long* keys,
                                                 index_t N, index_t H, index_t W, index_t C,
                                                 index_t OH, index_t OW) {
    const index_t total = N * OH * OW * C;
    GRID_STRIDE_LOOP(idx, total) {
        const index_t where = argmax[idx];
        const index_t c = idx % C;
        const index_t n = idx / (OH * OW * C);
        keys[idx] = where < 0 ? -1 : (n * H * W + where) * C + c;
    }
}

extern "C" __global__ void max_pool2d_backward(const real* dy, const long long* keys, const long long* order,
                                            real* dx, index_t M, index_t V) {
    sorted_scatter_add(keys, order, dy, dx, M, 1, V);
}

// The fast path: dx[n, argmax, c] += dy[n, oh, ow, c] with atomicAdd, one
// thread per dy element; the low bits of the sums change run to run.
extern "C" __global__ void max_pool2d_backward_atomic(const real* dy, const long long* argmax, real* dx,
                                                   index_t N, index_t H, index_t W, index_t C,
                                                   index_t OH, index_t OW) {
    const index_t total = N * OH * OW * C;
    GRID_STRIDE_LOOP(idx, total) {
        const index_t where = argmax[idx];
        if (where < 0) continue;
        const index_t c = idx % C;
        const index_t n = idx / (OH * OW * C);
        atomicAdd(&dx[(n * H * W + where) * C + c], dy[idx]);
    }
}
