// One LSTM time step's elementwise work, fused: the gate nonlinearities and
// the cell update (forward), and their gradients (backward). The matmuls
// around them are cuBLAS GEMMs; this saves the dozen small launches and
// temporaries the same math costs as separate array expressions.
//
// Z, G: (N, 4H) in Keras gate order i, f, c (candidate g), o.
// c_prev, c, h: (N, H).
#include "common.cuh"

// G = [sig(zi), sig(zf), tanh(zg), sig(zo)]; c = f*c_prev + i*g; h = o*tanh(c).
extern "C" __global__ void lstm_gates_forward(const real* Z, const real* c_prev,
                                              real* h, real* c, real* G,
                                              index_t N, index_t H) {
    const index_t total = N * H;
    GRID_STRIDE_LOOP(idx, total) {
        const index_t n = idx / H, k = idx % H;
        const index_t row = n * 4 * H;
        const real i = sigmoid_(Z[row + k]);
        const real f = sigmoid_(Z[row + H + k]);
        const real g = tanh(Z[row + 2 * H + k]);
        const real o = sigmoid_(Z[row + 3 * H + k]);
        G[row + k] = i;
        G[row + H + k] = f;
        G[row + 2 * H + k] = g;
        G[row + 3 * H + k] = o;
        const real ct = f * c_prev[idx] + i * g;
        c[idx] = ct;
        h[idx] = o * tanh(ct);
    }
}

// dh: total gradient into h_t; dc: gradient into c_t from step t+1.
// Numbered against the forward:
//   1: c = f*c_prev + i*g      2: h = o*tanh(c)
extern "C" __global__ void lstm_gates_backward(const real* dh, const real* dc,
                                               const real* c_prev, const real* c, const real* G,
                                               real* dZ, real* dc_prev,
                                               index_t N, index_t H) {
    const index_t total = N * H;
    GRID_STRIDE_LOOP(idx, total) {
        const index_t n = idx / H, k = idx % H;
        const index_t row = n * 4 * H;
        const real i = G[row + k];
        const real f = G[row + H + k];
        const real g = G[row + 2 * H + k];
        const real o = G[row + 3 * H + k];
        const real tc = tanh(c[idx]);
        // 2: dh flows to o and, through tanh, into c (plus what step t+1 sent).
        const real d_o = dh[idx] * tc;
        const real dct = dc[idx] + dh[idx] * o * (real(1) - tc * tc);
        // 1: c is linear in each of f, i, g and c_prev.
        const real d_i = dct * g;
        const real d_f = dct * c_prev[idx];
        const real d_g = dct * i;
        dc_prev[idx] = dct * f;
        // Back through the nonlinearities: sig' = s(1-s), tanh' = 1-t^2.
        dZ[row + k] = d_i * i * (real(1) - i);
        dZ[row + H + k] = d_f * f * (real(1) - f);
        dZ[row + 2 * H + k] = d_g * (real(1) - g * g);
        dZ[row + 3 * H + k] = d_o * o * (real(1) - o);
    }
}
