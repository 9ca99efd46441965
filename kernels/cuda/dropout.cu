// Inverted-dropout mask from a counter-based hash: element i's draw is a pure
// function of (seed, i), so the mask needs no RNG state on the device, is the
// same for any grid size, and is the same in float32 and float64.
// (The backward, dx = dy * mask, needs no kernel; see scratchnet.ops.dropout.)
#include "common.cuh"

// SplitMix64 (Steele, Lea and Flood 2014): a full-avalanche 64-bit mix.
__device__ __forceinline__ unsigned long long splitmix64(unsigned long long z) {
    z += 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

// mask[i] = keep_value if draw_i >= threshold else 0, where draw_i is a
// uniform 53-bit integer and threshold = rate * 2^53 (computed on the host),
// so P(keep) = 1 - rate exactly up to 2^-53 and no float compare is involved.
extern "C" __global__ void dropout_mask(real* mask, index_t n, unsigned long long seed,
                                        unsigned long long threshold, real keep_value) {
    // Hashing the seed first decorrelates neighbouring seeds.
    const unsigned long long key = splitmix64(seed);
    GRID_STRIDE_LOOP(i, n) {
        const unsigned long long draw = splitmix64(key ^ splitmix64((unsigned long long)i)) >> 11;
        mask[i] = draw >= threshold ? keep_value : real(0);
    }
}
