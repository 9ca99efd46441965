// Max pooling over NHWC. The forward records, per output, where its maximum
// came from; the backward routes the whole gradient there.
#include "common.cuh"

// Y, argmax: (N, OH, OW, C). argmax is the flat index h*W + w of the FIRST
// maximum in row-major window order (strict > keeps the earlier of equal
// values, as TensorFlow does), in the unpadded input: padding never wins.
extern "C" __global__ void maxpool_forward(const real* X, real* Y, long long* argmax,
                                           index_t N, index_t H, index_t W, index_t C,
                                           index_t kh, index_t kw, index_t sh, index_t sw,
                                           index_t pt, index_t pl, index_t OH, index_t OW) {
    const index_t total = N * OH * OW * C;
    GRID_STRIDE_LOOP(idx, total) {
        index_t t = idx;
        const index_t c = t % C; t /= C;
        const index_t ow = t % OW; t /= OW;
        const index_t oh = t % OH;
        const index_t n = t / OH;
        const real* plane = X + n * H * W * C + c;
        real best = 0;
        index_t where = -1;
        for (index_t i = 0; i < kh; ++i) {
            const index_t h = oh * sh - pt + i;
            if (h < 0 || h >= H) continue;
            for (index_t j = 0; j < kw; ++j) {
                const index_t w = ow * sw - pl + j;
                if (w < 0 || w >= W) continue;
                const real v = plane[(h * W + w) * C];
                if (where < 0 || v > best) {
                    best = v;
                    where = h * W + w;
                }
            }
        }
        // A window lies at least partly inside the input for TF's SAME and
        // VALID padding, so where >= 0 here; -1 would mark an empty window.
        Y[idx] = best;
        argmax[idx] = where;
    }
}

// dX must be zeroed by the caller. Windows overlap when the stride is smaller
// than the window, so two outputs can route to one input: atomicAdd.
extern "C" __global__ void maxpool_backward(const real* dY, const long long* argmax, real* dX,
                                            index_t N, index_t H, index_t W, index_t C,
                                            index_t OH, index_t OW) {
    const index_t total = N * OH * OW * C;
    GRID_STRIDE_LOOP(idx, total) {
        const index_t where = argmax[idx];
        if (where < 0) continue;
        const index_t c = idx % C;
        const index_t n = idx / (OH * OW * C);
        atomicAdd(&dX[(n * H * W + where) * C + c], dY[idx]);
    }
}
