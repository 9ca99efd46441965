// The in-place parameter updates of a training step, one pass per parameter:
// plain SGD, the seeds' fused L2 + SGD + moving average, SGD with momentum
// (Keras's and TF 1's) and Adam. Written as CuPy array expressions each term
// is a launch and a temporary the size of the parameter (Adam: about eight);
// here each update reads and writes every array once.
//
// The arithmetic is that of scratchnet/ops/updates.py (UpdateReference), in
// the same order, and every product is rounded on its own (mul_ below) so
// the compiler cannot contract a*b + c into one fused multiply-add: the
// results are then the reference's bit for bit, as the Numba backend's are.
// The scalars (lr, 2*l2, 1 - decay, ...) are computed on the host in double
// and passed in the parameter's type, as NumPy rounds a Python float.
#include "common.cuh"

#if defined(__CUDACC__)
__device__ __forceinline__ float mul_(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_(double a, double b) { return __dmul_rn(a, b); }
#else
__device__ __forceinline__ real mul_(real a, real b) { return a * b; }
#endif

// y += alpha * x: plain SGD's step (alpha = -lr), an L2 penalty's gradient (alpha = 2 l2).
extern "C" __global__ void scaled_add(real* y, const real* x, real alpha, index_t n) {
    GRID_STRIDE_LOOP(i, n) y[i] = y[i] + mul_(alpha, x[i]);
}

// shadow -= (1 - decay) * (shadow - value); one_minus_decay = 1 - decay.
extern "C" __global__ void moving_average_update(real* shadow, const real* value, real one_minus_decay, index_t n) {
    GRID_STRIDE_LOOP(i, n) shadow[i] = shadow[i] - mul_(one_minus_decay, shadow[i] - value[i]);
}

// The seeds' step: g += 2 l2 w (when use_l2); w -= lr g; shadow -= (1 - decay)(shadow - w) (when use_shadow).
// g is updated too, as the three separate phases leave it. shadow may be any pointer when !use_shadow.
extern "C" __global__ void sgd_l2_ema_update(real* w, real* g, real* shadow, real neg_lr, real two_l2,
                                             real one_minus_decay, int use_l2, int use_shadow, index_t n) {
    GRID_STRIDE_LOOP(i, n) {
        real gi = g[i];
        if (use_l2) {
            gi = gi + mul_(two_l2, w[i]);
            g[i] = gi;
        }
        const real wi = w[i] + mul_(neg_lr, gi);
        w[i] = wi;
        if (use_shadow) shadow[i] = shadow[i] - mul_(one_minus_decay, shadow[i] - wi);
    }
}

// Keras's SGD with momentum mu: m = mu m - lr g; w += m (plain) or w += mu m - lr g (nesterov).
extern "C" __global__ void sgd_momentum_update(real* w, const real* g, real* m, real lr, real mu,
                                               int nesterov, index_t n) {
    GRID_STRIDE_LOOP(i, n) {
        const real step = mul_(lr, g[i]);
        const real mi = mul_(m[i], mu) - step;
        m[i] = mi;
        w[i] = nesterov ? w[i] + (mul_(mu, mi) - step) : w[i] + mi;
    }
}

// TF 1's MomentumOptimizer: a = mu a + g; w -= lr a (plain) or w -= lr (g + mu a) (nesterov).
extern "C" __global__ void momentum_update(real* w, const real* g, real* a, real lr, real mu,
                                           int nesterov, index_t n) {
    GRID_STRIDE_LOOP(i, n) {
        const real ai = mul_(a[i], mu) + g[i];
        a[i] = ai;
        w[i] = nesterov ? w[i] - mul_(lr, g[i] + mul_(mu, ai)) : w[i] - mul_(lr, ai);
    }
}

// Adam (Keras 3): m += (1 - b1)(g - m); v += (1 - b2)(g^2 - v); w -= alpha m / (sqrt(v) + eps),
// alpha holding the bias correction (scratchnet/optimizers.py).
extern "C" __global__ void adam_update(real* w, const real* g, real* m, real* v, real alpha,
                                       real one_minus_beta_1, real one_minus_beta_2, real epsilon, index_t n) {
    GRID_STRIDE_LOOP(i, n) {
        const real gi = g[i];
        const real mi = m[i] + mul_(one_minus_beta_1, gi - m[i]);
        const real vi = v[i] + mul_(one_minus_beta_2, mul_(gi, gi) - v[i]);
        m[i] = mi;
        v[i] = vi;
        w[i] = w[i] - mul_(alpha, mi) / (sqrt(vi) + epsilon);
    }
}
