// im2col / col2im for NHWC convolution: the conv becomes one GEMM
// (cols @ w.reshape(kh*kw*C, O)), done by cuBLAS.
//
// X (N, H, W, C); cols (N*OH*OW, kh*kw*C) with columns in (kh, kw, C) order.
// pt, pl: zero padding above and left (TF SAME puts the odd one below/right,
// which only shows up as OH, OW here).
#include "common.cuh"

extern "C" __global__ void im2col(const real* X, real* cols,
                                  index_t N, index_t H, index_t W, index_t C,
                                  index_t kh, index_t kw, index_t sh, index_t sw,
                                  index_t pt, index_t pl, index_t OH, index_t OW) {
    const index_t total = N * OH * OW * kh * kw * C;
    GRID_STRIDE_LOOP(idx, total) {
        index_t t = idx;
        const index_t c = t % C; t /= C;
        const index_t j = t % kw; t /= kw;
        const index_t i = t % kh; t /= kh;
        const index_t ow = t % OW; t /= OW;
        const index_t oh = t % OH;
        const index_t n = t / OH;
        const index_t h = oh * sh - pt + i;
        const index_t w = ow * sw - pl + j;
        cols[idx] = (h >= 0 && h < H && w >= 0 && w < W) ? X[((n * H + h) * W + w) * C + c] : real(0);
    }
}

// The adjoint of im2col. Each thread gathers the cols entries that copied its
// pixel, so overlapping windows are summed without atomics and the result is
// deterministic.
extern "C" __global__ void col2im(const real* cols, real* dX,
                                  index_t N, index_t H, index_t W, index_t C,
                                  index_t kh, index_t kw, index_t sh, index_t sw,
                                  index_t pt, index_t pl, index_t OH, index_t OW) {
    const index_t total = N * H * W * C;
    const index_t K = kh * kw * C;
    GRID_STRIDE_LOOP(idx, total) {
        index_t t = idx;
        const index_t c = t % C; t /= C;
        const index_t w = t % W; t /= W;
        const index_t h = t % H;
        const index_t n = t / H;
        real acc = 0;
        for (index_t i = 0; i < kh; ++i) {
            // h = oh*sh - pt + i, so oh = (h + pt - i) / sh when that divides.
            const index_t hs = h + pt - i;
            if (hs < 0 || hs % sh != 0 || hs / sh >= OH) continue;
            const index_t oh = hs / sh;
            for (index_t j = 0; j < kw; ++j) {
                const index_t ws = w + pl - j;
                if (ws < 0 || ws % sw != 0 || ws / sw >= OW) continue;
                const index_t ow = ws / sw;
                acc += cols[((n * OH + oh) * OW + ow) * K + (i * kw + j) * C + c];
            }
        }
        dX[idx] = acc;
    }
}
