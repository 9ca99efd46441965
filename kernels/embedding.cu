// Embedding backward: scatter-add the output gradient rows into the table
// gradient, dtable[ids[m]] += dy[m] (derived in scratchnet.ops.embedding).
// Repeated ids must sum (dtable[ids] += dy would keep only one), and
// threads of different rows may hit one table row at once: atomicAdd.
#include "common.cuh"

// ids: (M,); dy: (M, D); dtable: (V, D), zeroed by the caller. The op checks
// ids against V; the bounds test here only keeps a bad id from writing
// outside the table.
extern "C" __global__ void embedding_backward(const long long* ids, const real* dy, real* dtable,
                                              index_t M, index_t D, index_t V) {
    const index_t total = M * D;
    GRID_STRIDE_LOOP(idx, total) {
        const index_t m = idx / D, d = idx % D;
        const long long id = ids[m];
        if (id < 0 || id >= V) continue;
        atomicAdd(&dtable[id * D + d], dy[idx]);
    }
}
