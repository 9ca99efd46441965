// Embedding backward: scatter-add the output gradient rows into the table
// gradient, dtable[ids[m]] += dy[m] (derived in scratchnet.ops.embedding).
// Repeated ids must sum (dtable[ids] += dy would keep only one).
//
// Two kernels:
// - embedding_backward, the default, is deterministic: the positions are
//   sorted by id first, and each table row is summed by one thread in
//   position order (sorted_scatter_add in common.cuh). Same bits every run,
//   so a resumed training run equals an uninterrupted one on the GPU too.
// - embedding_backward_atomic is the fast path, asked for explicitly: one
//   thread per dy element, atomicAdd into the row. Float atomics add in
//   whatever order the threads arrive, so the low bits change run to run.
#include "common.cuh"

// ids: (M,); order: (M,), 0..M-1 sorted by ids (stable); dy: (M, D);
// dtable: (V, D), zeroed by the caller. The op checks ids against V; the
// bounds test here only keeps a bad id from writing outside the table.
extern "C" __global__ void embedding_backward(const long long* ids, const long long* order,
                                              const real* dy, real* dtable,
                                              index_t M, index_t D, index_t V) {
    sorted_scatter_add(ids, order, dy, dtable, M, D, V);
}

// The same sum with atomics: threads of different positions may hit one
// table row at once.
extern "C" __global__ void embedding_backward_atomic(const long long* ids, const real* dy, real* dtable,
                                                     index_t M, index_t D, index_t V) {
    const index_t total = M * D;
    GRID_STRIDE_LOOP(idx, total) {
        const index_t m = idx / D, d = idx % D;
        const long long id = ids[m];
        if (id < 0 || id >= V) continue;
        atomicAdd(&dtable[id * D + d], dy[idx]);
    }
}
