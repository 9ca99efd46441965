"""A small GEMM for the products BLAS runs at its worst: few rows, the same right-hand matrix again and again.

An LSTM multiplies ``h_{t-1}`` (a few dozen rows per core) by the same
recurrent kernel at every time step. OpenBLAS packs the right-hand matrix
into its panel layout at every call, and for 50 rows the packing costs about
as much as the arithmetic: such a product runs at half the machine's FMA
rate. Here the matrix is packed once per sequence (:func:`pack`) and a
register-blocked kernel multiplies any number of rows by it; being a Numba
function it also runs inside a Numba time loop (``kernels/numba/lstm.py``), so that
a whole sequence runs without returning to Python.

The kernel (``_tile``), for a block of ``rows`` rows of ``a`` and one panel of
``PANEL`` columns of ``b``::

    for k in range(K):                               # acc: rows x PANEL, held in vector registers
        acc[r, :] += a[r, k] * bp[panel, k, :]       for each of the rows (a broadcast and FMAs)
    c[r0 + r, col0 : col0 + PANEL] (+)= acc[r, :]

is written in LLVM IR (Numba's ``intrinsic``), as ``bench/peak.py``'s FMA
loop is: LLVM does not keep a 10 x 32 accumulator in registers when it is a
NumPy array, and without that the loop is bound by loads and stores instead
of by the FMAs. A panel is two vectors (32 float32 or 16 float64); 10 rows give
20 accumulators (23 of the 32 vector registers with the two panel vectors and
the broadcast), so that each step over k issues 20 FMAs against 12 loads: both
FMA ports stay busy through their latency, and the loads (two ports) keep up
(the measurements behind 10 rows are in ``bench/RESULTS.md``, "Kernel design notes").
"""
from __future__ import annotations

import numpy
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

ROWS = 10  # rows per tile
VECTORS = 2  # vectors per panel row


def lanes(dtype):
    """Elements of one 512-bit vector of ``dtype``."""
    return 64 // numpy.dtype(dtype).itemsize


def panel(dtype):
    """Columns per panel: ``VECTORS`` vectors."""
    return VECTORS * lanes(dtype)


def _make_tile(rows):
    """The intrinsic ``tile(a, r0, bp, p, c, col0, accumulate)`` for ``rows`` rows (module docstring)."""

    @intrinsic
    def tile(typingctx, a, r0, bp, p, c, col0, accumulate):
        sig = types.void(a, types.intp, bp, types.intp, c, types.intp, types.boolean)
        scalar = a.dtype

        def codegen(context, builder, signature, args):
            a_v, r0_v, bp_v, p_v, c_v, col0_v, acc_v = args
            fty = context.get_value_type(scalar)
            n_lanes = 16 if scalar == types.float32 else 8
            width = 4 if scalar == types.float32 else 8
            vec = ir.VectorType(fty, n_lanes)
            i64, i32 = ir.IntType(64), ir.IntType(32)
            suffix = f"v{n_lanes}f{8 * width}"
            fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec] * 3), f"llvm.fma.{suffix}")
            A = context.make_array(signature.args[0])(context, builder, a_v)
            B = context.make_array(signature.args[2])(context, builder, bp_v)
            C = context.make_array(signature.args[4])(context, builder, c_v)
            a_s0, a_s1 = (builder.extract_value(A.strides, i) for i in (0, 1))
            K = builder.extract_value(A.shape, 1)
            b_s0, c_s0 = builder.extract_value(B.strides, 0), builder.extract_value(C.strides, 0)
            i8p = ir.IntType(8).as_pointer()
            a_base, b_base, c_base = (builder.bitcast(X.data, i8p) for X in (A, B, C))
            b_panel = builder.gep(b_base, [builder.mul(p_v, b_s0)])
            a_rows = [builder.gep(a_base, [builder.mul(builder.add(r0_v, ir.Constant(i64, r)), a_s0)])
                      for r in range(rows)]
            zero = ir.Constant(vec, [0.0] * n_lanes)
            splat_mask = ir.Constant(ir.VectorType(i32, n_lanes), [0] * n_lanes)
            entry = builder.block
            loop, done = builder.append_basic_block("tile_k"), builder.append_basic_block("tile_done")
            builder.cbranch(builder.icmp_signed(">", K, ir.Constant(i64, 0)), loop, done)
            builder.position_at_end(loop)
            k = builder.phi(i64)
            acc = [[builder.phi(vec) for _ in range(VECTORS)] for _ in range(rows)]
            b_k = builder.gep(b_panel, [builder.mul(k, ir.Constant(i64, VECTORS * n_lanes * width))])
            b = [builder.load(builder.bitcast(builder.gep(b_k, [ir.Constant(i64, v * n_lanes * width)]), vec.as_pointer()),
                              align=width) for v in range(VECTORS)]
            new = []
            for r in range(rows):
                a_rk = builder.load(builder.bitcast(builder.gep(a_rows[r], [builder.mul(k, a_s1)]), fty.as_pointer()),
                                    align=width)
                s = builder.insert_element(ir.Constant(vec, ir.Undefined), a_rk, ir.Constant(i32, 0))
                s = builder.shuffle_vector(s, ir.Constant(vec, ir.Undefined), splat_mask)
                new.append([builder.call(fma, [s, b[v], acc[r][v]]) for v in range(VECTORS)])
            for r in range(rows):
                for v in range(VECTORS):
                    acc[r][v].add_incoming(zero, entry)
                    acc[r][v].add_incoming(new[r][v], loop)
            k_next = builder.add(k, ir.Constant(i64, 1))
            k.add_incoming(ir.Constant(i64, 0), entry)
            k.add_incoming(k_next, loop)
            builder.cbranch(builder.icmp_signed("<", k_next, K), loop, done)
            builder.position_at_end(done)
            # Every phi first: the stores below open blocks of their own.
            results = []
            for r in range(rows):
                results.append([builder.phi(vec) for _ in range(VECTORS)])
                for v in range(VECTORS):
                    results[r][v].add_incoming(zero, entry)
                    results[r][v].add_incoming(new[r][v], loop)
            for r in range(rows):
                result = results[r]
                row = builder.add(builder.mul(builder.add(r0_v, ir.Constant(i64, r)), c_s0),
                                  builder.mul(col0_v, ir.Constant(i64, width)))
                for v in range(VECTORS):
                    ptr = builder.bitcast(builder.gep(c_base, [builder.add(row, ir.Constant(i64, v * n_lanes * width))]),
                                          vec.as_pointer())
                    with builder.if_else(acc_v) as (add, store):
                        with add:
                            builder.store(builder.fadd(builder.load(ptr, align=width), result[v]), ptr, align=width)
                        with store:
                            builder.store(result[v], ptr, align=width)
            return context.get_dummy_value()

        return sig, codegen

    return tile


_t1, _t2, _t3, _t4, _t5, _t6, _t7, _t8, _t9, _t10 = (_make_tile(r) for r in range(1, ROWS + 1))


@njit(cache=True, nogil=True)
def _rows(a, r0, rows, bp, p, c, col0, accumulate):
    """The tile of ``rows`` (1 .. ROWS) rows from ``r0``: the intrinsic of that many rows."""
    if rows == 10:
        _t10(a, r0, bp, p, c, col0, accumulate)
    elif rows == 9:
        _t9(a, r0, bp, p, c, col0, accumulate)
    elif rows == 8:
        _t8(a, r0, bp, p, c, col0, accumulate)
    elif rows == 7:
        _t7(a, r0, bp, p, c, col0, accumulate)
    elif rows == 6:
        _t6(a, r0, bp, p, c, col0, accumulate)
    elif rows == 5:
        _t5(a, r0, bp, p, c, col0, accumulate)
    elif rows == 4:
        _t4(a, r0, bp, p, c, col0, accumulate)
    elif rows == 3:
        _t3(a, r0, bp, p, c, col0, accumulate)
    elif rows == 2:
        _t2(a, r0, bp, p, c, col0, accumulate)
    elif rows == 1:
        _t1(a, r0, bp, p, c, col0, accumulate)


#: Rows of ``b`` per pass (``K_BLOCK`` x panel): 32 KiB of float32 panel, which stays in L1 (48 KiB on this
#: project's machine) beside the rows of ``a`` while every block of rows passes it (unblocked, the whole
#: panel of an LSTM's backward product came from L2 instead).
K_BLOCK = 256


@njit(cache=True, nogil=True)
def gemm_packed(a, bp, c, accumulate):
    """``c = a @ b`` (``c += a @ b`` when ``accumulate``), ``bp`` being ``pack(b)``.

    a : (M, K), any strides;  bp : (panels, K, panel), contiguous;  c : (M, N), rows contiguous.
    K is taken ``K_BLOCK`` rows of ``b`` at a time, the blocks after the first added to ``c``.
    A last panel that ``c`` holds only part of is computed into a scratch block and copied.
    """
    M, N = c.shape
    K, P = bp.shape[1], bp.shape[2]
    full = N // P
    has_edge = full < bp.shape[0] and N > full * P
    edge = numpy.empty((M if has_edge else 0, P), dtype=c.dtype)  # the last panel's scratch block
    for k0 in range(0, max(K, 1), K_BLOCK):  # K = 0 still runs once: c = 0 (or stays as it is)
        a_k, bp_k = a[:, k0 : k0 + K_BLOCK], bp[:, k0 : k0 + K_BLOCK]
        add = accumulate or k0 > 0
        for p in range(full):  # a panel's K-block stays in L1 while every block of rows passes it
            for r in range(0, M, ROWS):
                _rows(a_k, r, min(ROWS, M - r), bp_k, p, c, p * P, add)
        if has_edge:
            for r in range(0, M, ROWS):
                _rows(a_k, r, min(ROWS, M - r), bp_k, full, edge, 0, k0 > 0)
    if has_edge:
        for m in range(M):
            for j in range(N - full * P):
                if accumulate:
                    c[m, full * P + j] += edge[m, j]
                else:
                    c[m, full * P + j] = edge[m, j]


def pack(b):
    """``b`` (K, N) as panels of ``panel(b.dtype)`` columns, ``bp[p, k, :] = b[k, p*panel : (p+1)*panel]``;
    the last panel is padded with zero columns."""
    K, N = b.shape
    P = panel(b.dtype)
    panels = -(-N // P)
    padded = numpy.zeros((K, panels * P), dtype=b.dtype)
    padded[:, :N] = b
    return numpy.ascontiguousarray(padded.reshape(K, panels, P).transpose(1, 0, 2))


def packable(b):
    """Whether :func:`gemm_packed` takes ``b``: a float32 or float64 matrix."""
    return b.ndim == 2 and b.dtype in (numpy.float32, numpy.float64)
