// One LSTM time step's elementwise work, fused: the gate nonlinearities and
// the cell update (forward), and their gradients (backward). The matmuls
// around them are cuBLAS GEMMs; this saves the dozen small launches and
// temporaries the same math costs as separate array expressions.
//
// Steps are numbered as in scratchnet.ops.lstm, which derives them:
//   1: z = x_t @ kernel + h_prev @ recurrent_kernel + bias   (cuBLAS, not here)
//   2: i, f, o = sigmoid(z_i, z_f, z_o);  g = tanh(z_g)
//   3: c = f*c_prev + i*g
//   4: h = o*tanh(c)
// and each backward step carries the number of the forward step it undoes,
// with a "b": they run 4b, 3b, 2b (1b is cuBLAS again).
//
// z, gates, dz: (N, 4H) in Keras gate order i, f, c (candidate g), o.
// c_prev, c, h, dh, dc, dc_prev: (N, H).
#include "common.cuh"

// Steps 2-4: gates = [sig(z_i), sig(z_f), tanh(z_g), sig(z_o)]; c = f*c_prev + i*g; h = o*tanh(c).
extern "C" __global__ void lstm_gates_forward(const real* z, const real* c_prev,
                                              real* h, real* c, real* gates,
                                              index_t N, index_t H) {
    const index_t total = N * H;
    GRID_STRIDE_LOOP(idx, total) {
        const index_t n = idx / H, k = idx % H;
        const index_t row = n * 4 * H;
        // 2: the nonlinearities
        const real i = sigmoid_(z[row + k]);
        const real f = sigmoid_(z[row + H + k]);
        const real g = tanh(z[row + 2 * H + k]);
        const real o = sigmoid_(z[row + 3 * H + k]);
        gates[row + k] = i;
        gates[row + H + k] = f;
        gates[row + 2 * H + k] = g;
        gates[row + 3 * H + k] = o;
        // 3: the cell update
        const real ct = f * c_prev[idx] + i * g;
        c[idx] = ct;
        // 4: the output
        h[idx] = o * tanh(ct);
    }
}

// Steps 1 (the recurrent part's sum) and 2-4 of step t of a sequence, for CupyOps.lstm_recurrence:
// z = zx + zr, where zx is x_t @ kernel + bias (made for every step at once) and zr is h_prev @
// recurrent_kernel (cuBLAS, into a buffer allocated once per sequence); then as lstm_gates_forward.
// The gates overwrite zx in place (the contract hands z_seq over): each thread reads its four
// entries of zx before it writes them, and no other thread touches them. h, c, c_prev are rows of
// the sequence's h_seq and c_seq, written where they belong: no copy after the launch.
extern "C" __global__ void lstm_step_forward(real* zx_gates, const real* zr, const real* c_prev,
                                             real* h, real* c, index_t N, index_t H) {
    const index_t total = N * H;
    GRID_STRIDE_LOOP(idx, total) {
        const index_t n = idx / H, k = idx % H;
        const index_t row = n * 4 * H;
        // 1: the two parts of z added, as the reference's z_seq[t] += h_prev @ recurrent_kernel
        const real zi = zx_gates[row + k] + zr[row + k];
        const real zf = zx_gates[row + H + k] + zr[row + H + k];
        const real zg = zx_gates[row + 2 * H + k] + zr[row + 2 * H + k];
        const real zo = zx_gates[row + 3 * H + k] + zr[row + 3 * H + k];
        // 2: the nonlinearities
        const real i = sigmoid_(zi);
        const real f = sigmoid_(zf);
        const real g = tanh(zg);
        const real o = sigmoid_(zo);
        zx_gates[row + k] = i;
        zx_gates[row + H + k] = f;
        zx_gates[row + 2 * H + k] = g;
        zx_gates[row + 3 * H + k] = o;
        // 3, 4: the cell update and the output
        const real ct = f * c_prev[idx] + i * g;
        c[idx] = ct;
        h[idx] = o * tanh(ct);
    }
}

// Steps 4b, 3b, 2b. dh: the total gradient of h_t (the output's plus what
// step t+1 sent back); dc: the gradient of c_t from step t+1.
extern "C" __global__ void lstm_gates_backward(const real* dh, const real* dc,
                                               const real* c_prev, const real* c, const real* gates,
                                               real* dz, real* dc_prev,
                                               index_t N, index_t H) {
    const index_t total = N * H;
    GRID_STRIDE_LOOP(idx, total) {
        const index_t n = idx / H, k = idx % H;
        const index_t row = n * 4 * H;
        const real i = gates[row + k];
        const real f = gates[row + H + k];
        const real g = gates[row + 2 * H + k];
        const real o = gates[row + 3 * H + k];
        const real tc = tanh(c[idx]);
        // 4b: h = o*tanh(c): dh flows to o and, through tanh, into c (plus what step t+1 sent).
        const real d_o = dh[idx] * tc;
        const real dct = dc[idx] + dh[idx] * o * (real(1) - tc * tc);
        // 3b: c = f*c_prev + i*g is linear in each of f, i, g and c_prev.
        const real d_i = dct * g;
        const real d_f = dct * c_prev[idx];
        const real d_g = dct * i;
        dc_prev[idx] = dct * f;
        // 2b: back through the nonlinearities: sig' = s(1-s), tanh' = 1-t^2.
        dz[row + k] = d_i * i * (real(1) - i);
        dz[row + H + k] = d_f * f * (real(1) - f);
        dz[row + 2 * H + k] = d_g * (real(1) - g * g);
        dz[row + 3 * H + k] = d_o * o * (real(1) - o);
    }
}
