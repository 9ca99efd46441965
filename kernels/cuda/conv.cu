// im2col / col2im for NHWC convolution: the conv becomes one GEMM
// (cols @ w.reshape(kh*kw*C, O)), done by cuBLAS. The math, and why col2im
// is the adjoint of im2col, is in scratchnet.ops.conv.
//
// x, dx (N, H, W, C); cols (N*OH*OW, kh*kw*C) with columns in (kh, kw, C) order.
// top, left: zero padding above and to the left (TF SAME puts the odd one
// below/right, which only shows up as OH, OW here).
// (oh, ow): an output position; (i, j): an offset in the window;
// (ih, iw) = (oh*sh - top + i, ow*sw - left + j): the input position it reads.
#include "common.cuh"

// cols[(n, oh, ow), (i, j, c)] = x[n, ih, iw, c], or 0 where (ih, iw) is padding.
extern "C" __global__ void im2col(const real* x, real* cols,
                                  index_t N, index_t H, index_t W, index_t C,
                                  index_t kh, index_t kw, index_t sh, index_t sw,
                                  index_t top, index_t left, index_t OH, index_t OW) {
    const index_t total = N * OH * OW * kh * kw * C;
    GRID_STRIDE_LOOP(idx, total) {
        index_t t = idx;
        const index_t c = t % C; t /= C;
        const index_t j = t % kw; t /= kw;
        const index_t i = t % kh; t /= kh;
        const index_t ow = t % OW; t /= OW;
        const index_t oh = t % OH;
        const index_t n = t / OH;
        const index_t ih = oh * sh - top + i;
        const index_t iw = ow * sw - left + j;
        cols[idx] = (ih >= 0 && ih < H && iw >= 0 && iw < W) ? x[((n * H + ih) * W + iw) * C + c] : real(0);
    }
}

// The adjoint of im2col: dx[n, ih, iw, c] = sum of the cols entries that
// im2col copied from (n, ih, iw, c). Each thread gathers them for its own
// pixel, so overlapping windows are summed without atomics and the result is
// deterministic.
extern "C" __global__ void col2im(const real* cols, real* dx,
                                  index_t N, index_t H, index_t W, index_t C,
                                  index_t kh, index_t kw, index_t sh, index_t sw,
                                  index_t top, index_t left, index_t OH, index_t OW) {
    const index_t total = N * H * W * C;
    const index_t row_len = kh * kw * C;
    GRID_STRIDE_LOOP(idx, total) {
        index_t t = idx;
        const index_t c = t % C; t /= C;
        const index_t iw = t % W; t /= W;
        const index_t ih = t % H;
        const index_t n = t / H;
        real acc = 0;
        for (index_t i = 0; i < kh; ++i) {
            // ih = oh*sh - top + i, so oh = (ih + top - i) / sh when that divides.
            const index_t hs = ih + top - i;
            if (hs < 0 || hs % sh != 0 || hs / sh >= OH) continue;
            const index_t oh = hs / sh;
            for (index_t j = 0; j < kw; ++j) {
                const index_t ws = iw + left - j;
                if (ws < 0 || ws % sw != 0 || ws / sw >= OW) continue;
                const index_t ow = ws / sw;
                acc += cols[((n * OH + oh) * OW + ow) * row_len + (i * kw + j) * C + c];
            }
        }
        dx[idx] = acc;
    }
}
