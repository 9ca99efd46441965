"""The CuPy backend and its CUDA C kernels.

Three levels, so that most of it is checked on a machine without a GPU:

1. nvcc compiles every ``kernels/cuda/*.cu`` to PTX for sm_80 and sm_90, in float
   and double, from the exact text the loader hands to NVRTC.
2. The same text runs on the host shim (``tests/cuda_host.py``): every kernel
   with its real grid and block sizes, the threads of a block as a team with
   real barriers, shared memory per block, atomic atomics, and every memory
   access interleaved, bounds-checked and race-checked. Each kernel must
   match the reference op; mutated kernels (a barrier deleted, a stride
   halved, ``gridDim`` dropped, an atomic made plain, a shared-memory bound
   broken) must fail, and those mutations are kept as tests.
3. On a GPU, the comparisons run through the real ``CupyOps`` (skipped, with
   the reason, elsewhere).
"""
from __future__ import annotations

import importlib
import inspect
import os
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest

import scratchnet as sn
from scratchnet.backend import BackendUnavailable, cupy_unavailable_reason
from scratchnet.kernels.cuda import compiler as cuda
from scratchnet.ops.reference import ReferenceOps

from helpers import assert_close

NVCC = shutil.which("nvcc")
GXX = shutil.which("g++")
GPU_REASON = cupy_unavailable_reason()

# The kernels each source must define, by the names CupyOps launches.
KERNELS = {
    "conv": ["im2col", "col2im"],
    "pooling": ["max_pool2d_forward", "max_pool2d_backward_keys", "max_pool2d_backward", "max_pool2d_backward_atomic"],
    "lstm": ["lstm_gates_forward", "lstm_gates_backward"],
    "embedding": ["embedding_backward", "embedding_backward_atomic"],
    "losses": ["softmax_cross_entropy_forward", "softmax_cross_entropy_backward"],
    "dropout": ["dropout_mask"],
    "activations": ["erf_kernel"],
    "updates": ["scaled_add", "moving_average_update", "sgd_l2_ema_update", "sgd_momentum_update",
                "momentum_update", "adam_update"],
}
# The CupyOps methods that replace a reference op.
OVERRIDES = ["im2col", "col2im", "max_pool2d_forward", "max_pool2d_backward", "lstm_gates_forward", "lstm_gates_backward",
             "embedding_backward", "softmax_cross_entropy_forward", "softmax_cross_entropy_backward", "dropout_mask", "gemm",
             "_refuse_foreign", "erf"]


# --- 1. nvcc ---------------------------------------------------------------


def test_every_kernel_family_has_a_cuda_source():
    assert sorted(p.stem for p in cuda.source_files()) == sorted(KERNELS)


# CI machines have nvcc, so there a missing nvcc fails rather than skips.
@pytest.mark.skipif(NVCC is None and not os.environ.get("CI"), reason="nvcc is not on PATH")
@pytest.mark.parametrize("name", sorted(KERNELS))
def test_cuda_source_compiles_to_ptx_for_sm80_and_sm90_in_float_and_double(name):
    for arch in ("sm_80", "sm_90"):
        for real in ("float", "double"):
            ptx = cuda.nvcc_ptx(cuda.source_path(name), arch=arch, real=real)
            for kernel in KERNELS[name]:
                # extern "C": the entry keeps its plain name for get_function.
                assert f".entry {kernel}(" in ptx, f"{name}.cu ({arch}, {real}) lacks kernel {kernel}"
            if real == "float":
                # A stray double literal or overload would silently compute in
                # double (and slowly) in the float32 build.
                assert ".f64" not in ptx, f"{name}.cu computes in double when REAL=float ({arch})"


def test_loader_source_starts_with_a_line_directive_naming_the_file():
    text = cuda.kernel_source(cuda.source_path("conv"))
    assert text.startswith('#line 1 "kernels/cuda/conv.cu"\n')
    assert text.endswith(cuda.source_path("conv").read_text())


# CI machines have nvcc, so there a missing nvcc fails rather than skips.
@pytest.mark.skipif(NVCC is None and not os.environ.get("CI"), reason="nvcc is not on PATH")
def test_compile_error_names_the_file_and_line(tmp_path):
    bad = tmp_path / "bad_kernel.cu"
    bad.write_text('#include "common.cuh"\n\nextern "C" __global__ void f(real* x) { x[0] = ; }\n')
    with pytest.raises(cuda.CudaCompileError) as err:
        cuda.nvcc_ptx(bad, arch="sm_80", real="float")
    message = str(err.value)
    assert f"{bad.as_posix()}(3)" in message
    assert "REAL=float" in message


def test_unknown_source_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="no kernel source 'nope.cu'.*conv"):
        cuda.source_path("nope")


def test_importing_scratchnet_and_the_loader_neither_imports_cupy_nor_compiles():
    code = (
        "import sys, scratchnet, scratchnet.kernels.cuda.compiler as c\n"
        "assert 'cupy' not in sys.modules, 'cupy imported'\n"
        "assert c._module.cache_info().currsize == 0\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.skipif(GPU_REASON is None, reason="a GPU is present, so the cupy backend is available")
def test_cupy_backend_is_unavailable_here_and_says_why():
    with pytest.raises(BackendUnavailable, match="backend 'cupy' cannot run here: .+"):
        sn.use_backend("cupy")


# --- 2. the CUDA sources on the host shim -------------------------------------
#
# tests/cuda_host.py compiles each source with g++ and runs every kernel with
# its real grid and block: threads of a block as a team, __syncthreads a real
# barrier, shared memory per block, atomics atomic, threads interleaved at
# every memory access by a seeded scheduler, every access bounds-checked and
# race-checked. Each kernel is compared with the reference op at the launch
# geometry CupyOps uses and at a capped grid (so the grid-stride loops turn).

from cuda_host import HostModule, ShimFault  # noqa: E402

REF = ReferenceOps()
DTYPES = [np.float32, np.float64]
I64 = np.int64

# The geometry of CupyOps (kernels/cuda/backend.py): 256-thread blocks, enough of
# them to give each element a thread, at most 2**16.
BLOCK, MAX_GRID = 256, 1 << 16
# A capped grid: three blocks of 64 threads, so every thread loops.
CAPPED = ((3,), (64,))


def cupy_geometry(n):
    return (min(-(-n // BLOCK), MAX_GRID),), (BLOCK,)


GEOMETRIES = {"cupy": cupy_geometry, "capped": lambda n: CAPPED}

_modules = {}


def host_module(source, dtype, kernel_dir=None, **shim):
    """``<source>.cu`` for ``dtype`` on the shim, from the exact text and
    options the loader hands NVRTC (``kernel_dir``: a folder of mutated copies)."""
    if GXX is None:
        pytest.skip("g++ is not on PATH")
    real = cuda.real_type(dtype)
    key = (source, real, kernel_dir, tuple(sorted(shim.items())))
    if key not in _modules:
        if kernel_dir is None:
            path, options = cuda.source_path(source), cuda.compile_options(real)
        else:
            path, options = kernel_dir / f"{source}.cu", cuda.compile_options(real, kernel_dir)
        _modules[key] = HostModule(cuda.kernel_source(path), options, **shim)
    return _modules[key]


def _ints(*values):
    return tuple(I64(v) for v in values)


def _out_size(n, k, s, before, after):
    return (n + before + after - k) // s + 1


# Each check runs a family's kernels on a module and compares them with the
# reference; an AssertionError (or a ShimFault from the shim) is a failure.
# The mutation tests below run the same checks on broken sources.

CONV_CASES = [
    ((2, 7, 6, 3), 3, 2, 2, 1, (0, 1, 1, 0)),  # odd sizes, asymmetric SAME-style padding
    ((1, 9, 8, 2), 2, 2, 3, 3, (0, 0, 0, 0)),  # stride > window: pixels no window covers
    ((2, 6, 6, 1), 5, 5, 1, 1, (2, 2, 2, 2)),  # the seed's 5x5 SAME conv, overlaps everywhere
]


def check_conv(module, dtype, rng):
    for geometry in GEOMETRIES.values():
        for shape, kh, kw, sh, sw, (top, bottom, left, right) in CONV_CASES:
            N, H, W, C = shape
            OH, OW = _out_size(H, kh, sh, top, bottom), _out_size(W, kw, sw, left, right)
            X = rng.standard_normal(shape).astype(dtype)
            want = REF.im2col(X, kh, kw, sh, sw, (top, bottom, left, right))
            sizes = _ints(N, H, W, C, kh, kw, sh, sw, top, left, OH, OW)
            cols = np.full(want.shape, np.nan, dtype=dtype)
            module.get_function("im2col")(*geometry(cols.size), (X, cols, *sizes))
            np.testing.assert_array_equal(cols, want, err_msg="im2col")
            dcols = rng.standard_normal(want.shape).astype(dtype)
            dX = np.full(shape, np.nan, dtype=dtype)
            module.get_function("col2im")(*geometry(dX.size), (dcols, dX, *sizes))
            assert_close(dX, REF.col2im(dcols, shape, kh, kw, sh, sw, (top, bottom, left, right)), dtype, "col2im")


POOL_CASES = [
    ((2, 5, 7, 3), 3, 3, 2, 2, (1, 1, 1, 1)),  # overlapping windows that share winners
    ((1, 7, 5, 2), 2, 2, 2, 2, (0, 1, 0, 1)),  # SAME on odd sizes: padding never wins
    ((3, 6, 6, 4), 2, 3, 1, 2, (0, 0, 0, 0)),
]


def max_pool2d_backward_sorted(module, dy, argmax, shape, geometry, seed=None):
    """The deterministic backward as CupyOps runs it: keys, a stable sort, the segment sums."""
    N, H, W, C = shape
    _, OH, OW, _ = dy.shape
    keys = np.empty(dy.shape, dtype=np.int64)
    module.get_function("max_pool2d_backward_keys")(*geometry(dy.size), (argmax, keys, *_ints(N, H, W, C, OH, OW)),
                                                 seed=seed)
    order = np.argsort(keys.reshape(-1), kind="stable")  # cupy.argsort is stable
    dx = np.zeros(shape, dtype=dy.dtype)
    module.get_function("max_pool2d_backward")(*geometry(dy.size), (dy, keys, order, dx, *_ints(dy.size, dx.size)),
                                            seed=seed)
    return dx


def _pool_data(rng, dtype, case):
    shape, kh, kw, sh, sw, pads = case
    # Few distinct values, many ties, and negative values so that a zero pad
    # would win if padding were ever a candidate.
    X = rng.integers(-3, 1, size=shape).astype(dtype)
    Y, argmax = REF.max_pool2d_forward(X, kh, kw, sh, sw, pads)
    dY = rng.standard_normal(Y.shape).astype(dtype)
    return X, Y, argmax, dY


def check_pooling(module, dtype, rng):
    for geometry in GEOMETRIES.values():
        for case in POOL_CASES:
            shape, kh, kw, sh, sw, (top, _, left, _) = case
            N, H, W, C = shape
            X, Y, argmax, dY = _pool_data(rng, dtype, case)
            _, OH, OW, _ = Y.shape
            y = np.full(Y.shape, np.nan, dtype=dtype)
            am = np.full(Y.shape, -7, dtype=np.int64)
            module.get_function("max_pool2d_forward")(
                *geometry(y.size), (X, y, am, *_ints(N, H, W, C, kh, kw, sh, sw, top, left, OH, OW)))
            np.testing.assert_array_equal(y, Y, err_msg="max_pool2d y")
            np.testing.assert_array_equal(am, argmax, err_msg="max_pool2d argmax")
            want = REF.max_pool2d_backward(dY, argmax, shape)
            # Summed in position order, as numpy.add.at does: the same bits.
            got = max_pool2d_backward_sorted(module, dY, argmax, shape, geometry)
            np.testing.assert_array_equal(got, want, err_msg="max_pool2d_backward (sorted)")
            dx = np.zeros(shape, dtype=dtype)
            module.get_function("max_pool2d_backward_atomic")(*geometry(dY.size), (dY, argmax, dx, *_ints(N, H, W, C, OH, OW)))
            assert_close(dx, want, dtype, "max_pool2d_backward_atomic")


def check_lstm(module, dtype, rng):
    for geometry in GEOMETRIES.values():
        for N, H in ((3, 5), (7, 37)):
            Z = (rng.standard_normal((N, 4 * H)) * 4).astype(dtype)
            Z[0, :] = 60  # saturated: exp(-60) underflows float32
            Z[1, ::3] = -60
            c_prev, dh, dc = (rng.standard_normal((N, H)).astype(dtype) for _ in range(3))
            h, c, G = REF.lstm_gates_forward(Z, c_prev)
            dZ, dc_prev = REF.lstm_gates_backward(dh, dc, c_prev, c, G)
            hg, cg = np.empty((N, H), dtype), np.empty((N, H), dtype)
            Gg = np.empty((N, 4 * H), dtype)
            module.get_function("lstm_gates_forward")(*geometry(N * H), (Z, c_prev, hg, cg, Gg, *_ints(N, H)))
            for name, got, want in (("h", hg, h), ("c", cg, c), ("G", Gg, G)):
                assert_close(got, want, dtype, name)
            dZg, dcg = np.empty((N, 4 * H), dtype), np.empty((N, H), dtype)
            module.get_function("lstm_gates_backward")(
                *geometry(N * H), (dh, dc, c_prev, cg, Gg, dZg, dcg, *_ints(N, H)))
            assert_close(dZg, dZ, dtype, "dZ")
            assert_close(dcg, dc_prev, dtype, "dc_prev")


def embedding_backward_sorted(module, ids, dy, V, geometry, seed=None):
    """The deterministic backward as CupyOps runs it: a stable sort of the ids, then the segment sums."""
    D = dy.shape[-1]
    ids = np.ascontiguousarray(ids.reshape(-1), dtype=np.int64)
    dy = np.ascontiguousarray(dy.reshape(-1, D))
    order = np.argsort(ids, kind="stable")  # cupy.argsort is stable
    dtable = np.zeros((V, D), dtype=dy.dtype)
    module.get_function("embedding_backward")(*geometry(dy.size), (ids, order, dy, dtable, *_ints(ids.size, D, V)),
                                              seed=seed)
    return dtable


def _embedding_data(rng, dtype, M=48, D=7, V=9):
    ids = rng.integers(0, V - 2, size=M)
    ids[:6] = 1  # one hot row, used many times
    ids[-1] = V - 2  # one row used once, and row V - 1 never
    dy = rng.standard_normal((M, D)).astype(dtype)
    return ids, dy, V


def check_embedding(module, dtype, rng):
    for geometry in GEOMETRIES.values():
        ids, dy, V = _embedding_data(rng, dtype)
        want = REF.embedding_backward(ids, dy, V)
        np.testing.assert_array_equal(embedding_backward_sorted(module, ids, dy, V, geometry), want,
                                      err_msg="embedding_backward (sorted)")
        dtable = np.zeros_like(want)
        module.get_function("embedding_backward_atomic")(*geometry(dy.size), (ids, dy, dtable, *_ints(*dy.shape, V)))
        assert_close(dtable, want, dtype, "embedding_backward_atomic")


# (rows, classes, threads per block): CupyOps's choice, min(256, max(32,
# next power of two of K)), and the other sizes the kernel promises to take:
# not a power of two, and 1,024.
SOFTMAX_CE_CASES = [(6, 10, 32), (6, 300, 256), (5, 90, 96), (3, 3000, 1024), (4, 7, 1)]


def softmax_forward(module, logits, labels, block, grid=None, shared_mem=None):
    M, K = logits.shape
    losses = np.full(M, np.nan, dtype=logits.dtype)
    probs = np.full((M, K), np.nan, dtype=logits.dtype)
    if shared_mem is None:
        shared_mem = block * logits.dtype.itemsize  # the launch contract
    module.get_function("softmax_cross_entropy_forward")(
        (grid or min(M, MAX_GRID),), (block,), (logits, labels, losses, probs, *_ints(M, K)), shared_mem=shared_mem)
    return losses, probs


def check_losses(module, dtype, rng):
    for M, K, block in SOFTMAX_CE_CASES:
        logits = (rng.standard_normal((M, K)) * 3).astype(dtype)
        logits[0, :] = 1e4
        logits[1, 2] = -1e4
        logits[2, 0] = 1e4
        labels = rng.integers(0, K, size=M)
        labels[1] = 2  # the label at -1e4: a huge but finite loss
        want_l, want_p = REF.softmax_cross_entropy_forward(logits, labels)
        for grid in (None, 2):  # one block per row, or two blocks striding over the rows
            losses, probs = softmax_forward(module, logits, labels, block, grid)
            assert np.all(np.isfinite(losses))
            assert_close(losses, want_l, dtype, f"losses K={K} block={block}")
            assert_close(probs, want_p, dtype, f"probs K={K} block={block}")
        for geometry in GEOMETRIES.values():
            dl = np.empty((M, K), dtype)
            module.get_function("softmax_cross_entropy_backward")(
                *geometry(dl.size), (want_p, labels, dl, dtype(0.37), *_ints(M, K)))
            assert_close(dl, REF.softmax_cross_entropy_backward(want_p, labels, 0.37), dtype, "dlogits")


def dropout_mask(module, shape, rate, seed, dtype, geometry):
    mask = np.full(shape, np.nan, dtype=dtype)
    threshold = np.uint64(round(rate * (1 << 53)))
    args = (mask, I64(mask.size), np.uint64(seed), threshold, np.dtype(dtype).type(1 / (1 - rate)))
    module.get_function("dropout_mask")(*geometry(mask.size), args)
    return mask


def check_dropout(module, dtype, rng):
    n = 20_000
    for rate in (0.0, 0.3, 0.9):
        masks = [dropout_mask(module, (100, n // 100), rate, 7, dtype, g) for g in GEOMETRIES.values()]
        # A pure function of (seed, index): the grid does not matter.
        np.testing.assert_array_equal(masks[0], masks[1], err_msg="dropout mask depends on the grid")
        mask = masks[0]
        assert set(np.unique(mask)) <= {0.0, np.dtype(dtype).type(1 / (1 - rate))}
        kept = np.mean(mask != 0)
        assert abs(kept - (1 - rate)) <= 5 * np.sqrt(rate * (1 - rate) / n) + 1e-12  # binomial, 5 sigma
        flat = mask.reshape(-1) != 0
        assert abs(np.mean(flat[1:] & flat[:-1]) - (1 - rate) ** 2) <= 5 * np.sqrt(1 / n) + 1e-12


def check_updates(module, dtype, rng):
    # The fused parameter updates against their formulas (kernels/cuda/updates.cu), in NumPy.
    t = np.dtype(dtype).type
    lr, l2, mu, decay, b1, b2, eps, alpha = 0.1, 0.01, 0.9, 0.99, 0.9, 0.999, 1e-7, 0.05
    for geometry in GEOMETRIES.values():
        n = 1000
        w, g, s, m, v = (rng.standard_normal(n).astype(dtype) for _ in range(5))
        v = np.abs(v)
        run = lambda name, *args: module.get_function(name)(*geometry(n), (*args, I64(n)))  # noqa: E731

        y = w.copy()
        run("scaled_add", y, g, t(-lr))
        assert_close(y, w - t(lr) * g, dtype, "scaled_add")
        sh = s.copy()
        run("moving_average_update", sh, w, t(1 - decay))
        assert_close(sh, s - t(1 - decay) * (s - w), dtype, "moving_average_update")
        w2, g2, sh = w.copy(), g.copy(), s.copy()
        run("sgd_l2_ema_update", w2, g2, sh, t(-lr), t(2 * l2), t(1 - decay), np.int32(1), np.int32(1))
        gw = g + t(2 * l2) * w
        ww = w - t(lr) * gw
        assert_close(g2, gw, dtype, "sgd_l2_ema_update g")
        assert_close(w2, ww, dtype, "sgd_l2_ema_update w")
        assert_close(sh, s - t(1 - decay) * (s - ww), dtype, "sgd_l2_ema_update shadow")
        for nesterov in (0, 1):
            w2, m2 = w.copy(), m.copy()
            run("sgd_momentum_update", w2, g, m2, t(lr), t(mu), np.int32(nesterov))
            mm = m * t(mu) - t(lr) * g
            assert_close(m2, mm, dtype, "sgd_momentum_update m")
            assert_close(w2, w + (t(mu) * mm - t(lr) * g if nesterov else mm), dtype, "sgd_momentum_update w")
            w2, a2 = w.copy(), m.copy()
            run("momentum_update", w2, g, a2, t(lr), t(mu), np.int32(nesterov))
            aa = m * t(mu) + g
            assert_close(a2, aa, dtype, "momentum_update a")
            assert_close(w2, w - t(lr) * (g + t(mu) * aa if nesterov else aa), dtype, "momentum_update w")
        w2, m2, v2 = w.copy(), m.copy(), v.copy()
        run("adam_update", w2, g, m2, v2, t(alpha), t(1 - b1), t(1 - b2), t(eps))
        mm = m + t(1 - b1) * (g - m)
        vv = v + t(1 - b2) * (g * g - v)
        assert_close(m2, mm, dtype, "adam m")
        assert_close(v2, vv, dtype, "adam v")
        assert_close(w2, w - t(alpha) * mm / (np.sqrt(vv) + t(eps)), dtype, "adam w")


def check_activations(module, dtype, rng):
    # erf against the C library's (math.erf), on every grid: GELU's CDF (kernels/cuda/activations.cu).
    import math

    x = np.concatenate([3 * rng.standard_normal(997), [0.0, -0.0, 6.0, -6.0, 30.0, -30.0]]).astype(dtype)
    want = np.array([math.erf(v) for v in x.astype(np.float64)])
    for geometry in GEOMETRIES.values():
        y = np.full_like(x, np.nan)
        module.get_function("erf_kernel")(*geometry(x.size), (x, y, I64(x.size)))
        np.testing.assert_allclose(y, want, rtol=2e-7 if dtype == np.float32 else 1e-15, atol=0)


CHECKS = {
    "activations": check_activations,
    "conv": check_conv,
    "pooling": check_pooling,
    "lstm": check_lstm,
    "embedding": check_embedding,
    "losses": check_losses,
    "dropout": check_dropout,
    "updates": check_updates,
}


def test_every_source_has_a_host_check():
    assert sorted(CHECKS) == sorted(KERNELS)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("source", sorted(KERNELS))
def test_kernels_match_the_reference_on_the_shim(source, dtype):
    CHECKS[source](host_module(source, dtype), dtype, np.random.default_rng(1234))


def test_softmax_cross_entropy_forward_signature_and_launch_contract():
    # The launch contract CupyOps must keep: dynamic shared memory of one REAL per thread.
    module = host_module("losses", np.float64)
    assert module.get_function("softmax_cross_entropy_forward").signature == (
        "const*d", "const*q", "*d", "*d", "q", "q")
    assert module.static_shared_bytes == 0
    rng = np.random.default_rng(0)
    logits, labels = rng.standard_normal((3, 300)), rng.integers(0, 300, size=3)
    # One REAL short of the contract: the last thread's store is out of bounds, and caught.
    with pytest.raises(ShimFault, match="writes 8 bytes .* outside every argument array.*shared memory"):
        softmax_forward(module, logits, labels, 256, shared_mem=255 * 8)


@pytest.mark.parametrize("family", ["embedding", "pooling"])
def test_deterministic_scatter_adds_give_the_same_bits_under_every_schedule(family):
    # float32 and many terms per row, so the order of the additions shows in the bits.
    dtype = np.float32
    module = host_module(family, dtype)
    rng = np.random.default_rng(5)
    if family == "embedding":
        ids, dy, V = _embedding_data(rng, dtype, M=400, D=3, V=5)
        want = REF.embedding_backward(ids, dy, V)
        run = lambda seed: embedding_backward_sorted(module, ids, dy, V, cupy_geometry, seed=seed)  # noqa: E731
        D = dy.shape[1]

        def atomic(seed):
            out = np.zeros_like(want)
            module.get_function("embedding_backward_atomic")(
                *cupy_geometry(dy.size), (ids, dy, out, *_ints(len(ids), D, V)), seed=seed)
            return out
    else:
        case = ((2, 9, 9, 2), 3, 3, 1, 1, (1, 1, 1, 1))  # stride 1, 3x3: up to nine outputs per input
        shape = case[0]
        X, Y, argmax, dY = _pool_data(rng, dtype, case)
        want = REF.max_pool2d_backward(dY, argmax, shape)
        run = lambda seed: max_pool2d_backward_sorted(module, dY, argmax, shape, cupy_geometry, seed=seed)  # noqa: E731

        def atomic(seed):
            out = np.zeros(shape, dtype)
            N, H, W, C = shape
            module.get_function("max_pool2d_backward_atomic")(
                *cupy_geometry(dY.size), (dY, argmax, out, *_ints(N, H, W, C, *Y.shape[1:3])), seed=seed)
            return out

    runs = [run(seed) for seed in range(6)]
    for got in runs:
        np.testing.assert_array_equal(got, want)  # numpy.add.at's bits, every time
    # The shim really shuffles: the atomic fast path's float sums differ between schedules,
    # yet each schedule is reproducible from its seed.
    atomics = [atomic(seed) for seed in range(6)]
    for got in atomics:
        assert_close(got, want, dtype, "atomic")
    assert len({a.tobytes() for a in atomics}) > 1, "atomic sums in one order under every schedule"
    np.testing.assert_array_equal(atomic(3), atomics[3])


# --- the shim itself -----------------------------------------------------------

SHIM_KERNELS = r"""
// Each block rotates its slice of x through shared memory: y[i] = x[i + 1], wrapping in the block.
extern "C" __global__ void rotate_static(const float* x, float* y) {
    __shared__ float s[128];
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    s[threadIdx.x] = x[i];
    __syncthreads();
    y[i] = s[(threadIdx.x + 1) % blockDim.x];
}
extern "C" __global__ void rotate_dynamic(const float* x, float* y) {
    extern __shared__ float d[];
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    d[threadIdx.x] = x[i];
    __syncthreads();
    y[i] = d[(threadIdx.x + 1) % blockDim.x];
}
// Without the barrier: a race.
extern "C" __global__ void rotate_racy(const float* x, float* y) {
    __shared__ float s[128];
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    s[threadIdx.x] = x[i];
    y[i] = s[(threadIdx.x + 1) % blockDim.x];
}
// Each thread writes one past its slot: the last thread of the grid writes past y's end.
extern "C" __global__ void one_past(float* y) {
    y[blockIdx.x * blockDim.x + threadIdx.x + 1] = 1.0f;
}
extern "C" __global__ void writes_input(const float* x) { ((float*)x)[threadIdx.x] = 0.0f; }
extern "C" __global__ void divergent_barrier(float* y) {
    if (threadIdx.x == 0) return;
    __syncthreads();
    y[threadIdx.x] = 1.0f;
}
// arrival[k] = the k-th thread to take a ticket: the schedule, made visible.
extern "C" __global__ void tickets(unsigned* counter, int* arrival) {
    arrival[atomicAdd(counter, 1u)] = blockIdx.x * blockDim.x + threadIdx.x;
}
extern "C" __global__ void count_atomic(float* total) { atomicAdd(total, 1.0f); }
extern "C" __global__ void count_plain(float* total) { *total += 1.0f; }
extern "C" __global__ void types(double* out, int a, unsigned long long b, float c, long long d) {
    out[0] = a; out[1] = (double)b; out[2] = c; out[3] = (double)d;
}
"""


def shim_module(**shim):
    if GXX is None:
        pytest.skip("g++ is not on PATH")
    key = ("shim", tuple(sorted(shim.items())))
    if key not in _modules:
        _modules[key] = HostModule('#line 1 "tests/shim_kernels.cu"\n' + SHIM_KERNELS, (), **shim)
    return _modules[key]


@pytest.mark.parametrize("sanitize", [True, False], ids=["sanitized", "plain"])
def test_shim_barrier_and_per_block_shared_memory(sanitize):
    module = shim_module(sanitize=sanitize)
    x = np.arange(6 * 128, dtype=np.float32)
    want = np.roll(x.reshape(6, 128), -1, axis=1).reshape(-1)
    for name, shared in (("rotate_static", 0), ("rotate_dynamic", 128 * 4)):
        for seed in range(3):
            y = np.zeros_like(x)
            # Six blocks, all resident at once: each has its own shared memory.
            module.get_function(name)((6,), (128,), (x, y), shared_mem=shared, seed=seed)
            np.testing.assert_array_equal(y, want, err_msg=name)


def test_shim_missing_barrier_is_a_race_and_a_wrong_answer():
    x = np.arange(2 * 128, dtype=np.float32)
    with pytest.raises(ShimFault, match=r"rotate_racy: data race \(\w+ after \w+\) on static shared memory"):
        shim_module().get_function("rotate_racy")((2,), (128,), (x, np.zeros_like(x)))
    # Without the detector the interleaving alone gives a wrong answer: the
    # unwritten shared memory reads as NaN.
    y = np.zeros_like(x)
    shim_module(detect_races=False).get_function("rotate_racy")((2,), (128,), (x, y))
    assert np.isnan(y).any()


def test_shim_faults_name_the_kernel_thread_and_address():
    module = shim_module()
    with pytest.raises(ShimFault, match=r"one_past: thread \(63,0,0\) of block \(1,0,0\) writes 4 bytes"):
        module.get_function("one_past")((2,), (64,), (np.zeros(128, np.float32),))
    with pytest.raises(ShimFault, match="writes_input: .* writes argument 0, element .*const"):
        module.get_function("writes_input")((1,), (4,), (np.zeros(4, np.float32),))
    with pytest.raises(ShimFault, match=r"3 threads wait at __syncthreads\(\) that 1 threads .* returned"):
        module.get_function("divergent_barrier")((1,), (4,), (np.zeros(4, np.float32),))


def test_shim_schedule_is_shuffled_and_fixed_by_the_seed():
    def schedule(seed, **shim):
        counter, arrival = np.zeros(1, np.uint32), np.full(512, -1, np.int32)
        shim_module(**shim).get_function("tickets")((4,), (128,), (counter, arrival), seed=seed)
        assert counter[0] == 512 and sorted(arrival) == list(range(512))
        return arrival

    np.testing.assert_array_equal(schedule(1), schedule(1))
    assert not np.array_equal(schedule(1), schedule(2))
    assert not np.array_equal(schedule(1), np.arange(512))
    # Unsanitized (threads switch only at barriers) the order is shuffled too.
    assert not np.array_equal(schedule(1, sanitize=False), np.arange(512))


def test_shim_sanitizes_test_sized_launches_and_runs_large_ones_plain():
    module = host_module("dropout", np.float32)  # sanitize="auto"
    small = dropout_mask(module, (100, 100), 0.5, 3, np.float32, cupy_geometry)
    assert module.get_function("dropout_mask").last_launch_sanitized is True
    large = dropout_mask(module, (400, 200), 0.5, 3, np.float32, cupy_geometry)  # 80,000 threads
    assert module.get_function("dropout_mask").last_launch_sanitized is False
    np.testing.assert_array_equal(large.reshape(-1)[: small.size], small.reshape(-1))


def test_shim_atomics_are_atomic_and_plain_adds_lose_updates():
    total = np.zeros(1, np.float32)
    shim_module().get_function("count_atomic")((4,), (256,), (total,))
    assert total[0] == 1024
    with pytest.raises(ShimFault, match=r"count_plain: data race"):
        shim_module().get_function("count_plain")((4,), (256,), (np.zeros(1, np.float32),))
    total = np.zeros(1, np.float32)
    shim_module(detect_races=False).get_function("count_plain")((4,), (256,), (total,))
    assert total[0] < 1024  # updates lost between a thread's load and its store


def test_shim_checks_argument_types_as_cupy_cannot():
    kernel = shim_module().get_function("types")
    assert kernel.signature == ("*d", "i", "Q", "f", "q")
    out = np.zeros(4)
    kernel((1,), (1,), (out, np.int32(-3), np.uint64(2**63), np.float32(0.5), I64(-(2**40))))
    np.testing.assert_array_equal(out, [-3, 2.0**63, 0.5, -(2.0**40)])
    for bad, match in [
        ((out, np.int64(1), np.uint64(1), np.float32(1), I64(1)), r"argument 1 \(i\) is int32; got np.int64"),
        ((out, 1, np.uint64(1), np.float32(1), I64(1)), r"argument 1 \(i\) is int32; got int"),
        ((out.astype(np.float32), np.int32(1), np.uint64(1), np.float32(1), I64(1)), "array of float32"),
        ((out[::2], np.int32(1), np.uint64(1), np.float32(1), I64(1)), "C-contiguous"),
        ((out,), "takes 5 arguments"),
    ]:
        with pytest.raises((TypeError, ValueError), match=match):
            kernel((1,), (1,), bad)
    with pytest.raises(ValueError, match="exceeds the CUDA limits"):
        kernel((1,), (2048,), (out, np.int32(1), np.uint64(1), np.float32(1), I64(1)))
    with pytest.raises(ValueError, match="shared memory"):
        kernel((1,), (1,), (out, np.int32(1), np.uint64(1), np.float32(1), I64(1)), shared_mem=64 * 1024)
    with pytest.raises(LookupError, match="no kernel 'nope'"):
        shim_module().get_function("nope")


def test_shim_build_names_the_file_and_line_and_its_cache_covers_headers(tmp_path):
    if GXX is None:
        pytest.skip("g++ is not on PATH")
    with pytest.raises(RuntimeError, match=r"kernels/bad\.cu:3"):
        HostModule('#line 1 "kernels/bad.cu"\n\n\nextern "C" __global__ void f(float* x) { x[0] = ; }\n', ())
    code = '#include "value.cuh"\nextern "C" __global__ void f(float* x) { x[threadIdx.x] = VALUE; }\n'
    for value in (1, 2):  # an edit to the header alone must rebuild
        (tmp_path / "value.cuh").write_text(f"#define VALUE {value}.0f\n")
        x = np.zeros(2, np.float32)
        HostModule(code, (f"-I{tmp_path}",)).get_function("f")((1,), (2,), (x,))
        assert list(x) == [value, value]


# --- mutation tests: the shim catches broken kernels ----------------------------
#
# Each mutation edits the real source text (a copy); the family's check must
# then fail, by a wrong answer or a ShimFault. `answer` marks the mutants the
# interleaving alone turns into a wrong answer, with the race detector off.

BARRIER_AFTER_STORE = "buf[threadIdx.x] = v;\n    __syncthreads();\n"
BARRIER_IN_LOOP = "        }\n        __syncthreads();\n    }\n"
BARRIER_BEFORE_REUSE = "first.\n    __syncthreads();\n"
MUTATIONS = {
    # name: (file, text, replacement, family, caught by the answer alone)
    "losses-no-barrier-after-store": ("losses.cu", BARRIER_AFTER_STORE, "buf[threadIdx.x] = v;\n", "losses", True),
    "losses-no-barrier-in-tree": ("losses.cu", BARRIER_IN_LOOP, "        }\n    }\n", "losses", True),
    "losses-no-barrier-before-reuse": ("losses.cu", BARRIER_BEFORE_REUSE, "first.\n", "losses", True),
    "losses-half-start-stride": ("losses.cu", "while (2 * s < blockDim.x)", "while (4 * s < blockDim.x)",
                                 "losses", True),
    "losses-shared-bound-dropped": ("losses.cu", " && threadIdx.x + s < blockDim.x", "", "losses", True),
    "losses-rows-stride-without-gridDim": ("losses.cu", "m += gridDim.x", "m += 1", "losses", False),
    "grid-stride-without-gridDim": ("common.cuh", "i += (index_t)blockDim.x * gridDim.x", "i += (index_t)blockDim.x",
                                    "embedding", True),
    "grid-stride-without-gridDim-conv": ("common.cuh", "i += (index_t)blockDim.x * gridDim.x",
                                         "i += (index_t)blockDim.x", "conv", False),
    "embedding-atomicAdd-as-plain-add": ("embedding.cu", "atomicAdd(&dtable[id * D + d], dy[idx]);",
                                         "dtable[id * D + d] += dy[idx];", "embedding", True),
    "pooling-atomicAdd-as-plain-add": ("pooling.cu", "atomicAdd(&dx[(n * H * W + where) * C + c], dy[idx]);",
                                       "dx[(n * H * W + where) * C + c] += dy[idx];", "pooling", True),
    "sorted-scatter-every-thread-writes": ("common.cuh", "if (r > 0 && keys[order[r - 1]] == key) continue;", "",
                                           "embedding", True),
}


@pytest.fixture(scope="module")
def mutants(tmp_path_factory):
    """name -> a folder holding every kernel source with that one mutation applied."""
    root = tmp_path_factory.mktemp("mutants")

    def make(name):
        folder = root / name
        if not folder.exists():
            filename, text, replacement = MUTATIONS[name][:3]
            folder.mkdir()
            for f in cuda.kernel_dir().iterdir():
                if f.suffix in (".cu", ".cuh"):
                    shutil.copy(f, folder / f.name)
            source = (folder / filename).read_text()
            assert source.count(text) == 1, f"mutation {name}: {text!r} occurs {source.count(text)} times in {filename}"
            (folder / filename).write_text(source.replace(text, replacement))
        return folder

    return make


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_mutant_is_caught(mutants, name):
    family = MUTATIONS[name][3]
    module = host_module(family, np.float64, kernel_dir=mutants(name))
    with pytest.raises((AssertionError, ShimFault)):
        CHECKS[family](module, np.float64, np.random.default_rng(1234))


@pytest.mark.parametrize("name", sorted(n for n, m in MUTATIONS.items() if m[4]))
def test_mutant_is_caught_without_the_race_detector(mutants, name):
    # By the interleaving (a wrong answer) or by the bounds checks.
    family = MUTATIONS[name][3]
    module = host_module(family, np.float64, kernel_dir=mutants(name), detect_races=False)
    with pytest.raises((AssertionError, ShimFault)) as caught:
        CHECKS[family](module, np.float64, np.random.default_rng(1234))
    # Bounds faults stay on without the detector; a race report would mean the detector ran.
    assert "data race" not in str(caught.value)


# --- 3. CupyOps on a GPU ----------------------------------------------------------
#
# The same comparisons through CupyOps itself (allocation, contiguity, argument
# types and launch geometry). Without a GPU, CupyOps runs on the NumPy-backed
# cupy stand-in (tests/fake_cupy) in the backend-parametrised op tests.


@pytest.fixture(scope="module")
def host_cupy_ops_class():
    """``CupyOps``, imported with NumPy standing in for CuPy (for its signatures only)."""
    fake = types.ModuleType("cupy")
    fake.__dict__.update({k: v for k, v in np.__dict__.items() if not k.startswith("__")})
    package = importlib.import_module("scratchnet.kernels.cuda")
    previous = getattr(package, "backend", None)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "cupy", fake)
        mp.delitem(sys.modules, "scratchnet.kernels.cuda.backend", raising=False)
        module = importlib.import_module("scratchnet.kernels.cuda.backend")
    # sys.modules and the package attribute are restored: nothing else sees the stand-in.
    if previous is None:
        delattr(package, "backend")
    else:
        package.backend = previous
    return module.CupyOps


def test_cupy_ops_overrides_have_the_reference_signatures(host_cupy_ops_class):
    for name in OVERRIDES:
        assert name in vars(host_cupy_ops_class), f"CupyOps does not override {name}"
        assert inspect.signature(getattr(host_cupy_ops_class, name)) == inspect.signature(
            getattr(ReferenceOps, name)), name


@pytest.fixture(params=[pytest.param("gpu", marks=pytest.mark.gpu)])
def ops():
    """The real CupyOps on a GPU."""
    if GPU_REASON:
        pytest.skip(f"cupy backend: {GPU_REASON}")
    from scratchnet.kernels.cuda.backend import CupyOps

    return CupyOps()


def _dev(ops, *arrays):
    return tuple(ops.xp.asarray(a) for a in arrays)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "shape, kh, kw, sh, sw, pads",
    [
        ((2, 7, 6, 3), 3, 2, 2, 1, (0, 1, 1, 0)),  # odd sizes, asymmetric SAME-style padding
        ((1, 9, 8, 2), 2, 2, 3, 3, (0, 0, 0, 0)),  # stride > window: pixels no window covers
        ((2, 6, 6, 1), 5, 5, 1, 1, (2, 2, 2, 2)),  # the seed's 5x5 SAME conv, overlaps everywhere
    ],
    ids=["odd-asym-pad", "gaps", "5x5-same"],
)
def test_im2col_and_col2im_match_the_reference(ops, rng, dtype, shape, kh, kw, sh, sw, pads):
    X = rng.standard_normal(shape).astype(dtype)
    cols = REF.im2col(X, kh, kw, sh, sw, pads)
    dcols = rng.standard_normal(cols.shape).astype(dtype)
    (Xd, dcols_d) = _dev(ops, X, dcols)
    got = ops.im2col(Xd, kh, kw, sh, sw, pads)
    assert got.dtype == dtype
    assert_close(sn.to_numpy(got), cols, dtype, "im2col")
    dX = ops.col2im(dcols_d, shape, kh, kw, sh, sw, pads)
    assert dX.dtype == dtype
    assert_close(sn.to_numpy(dX), REF.col2im(dcols, shape, kh, kw, sh, sw, pads), dtype, "col2im")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "shape, kh, kw, sh, sw, pads",
    [
        ((2, 5, 7, 3), 3, 3, 2, 2, (1, 1, 1, 1)),  # overlapping windows that share winners
        ((1, 7, 5, 2), 2, 2, 2, 2, (0, 1, 0, 1)),  # SAME on odd sizes: padding never wins
        ((2, 4, 4, 1), 2, 3, 1, 2, (0, 0, 0, 0)),
    ],
    ids=["overlap", "same-odd", "rect"],
)
def test_max_pool2d_matches_the_reference_with_ties(ops, rng, dtype, shape, kh, kw, sh, sw, pads):
    # Few distinct values, many ties, and negative values so that a zero pad
    # would win if padding were ever a candidate.
    X = (rng.integers(-3, 1, size=shape)).astype(dtype)
    Y, argmax = REF.max_pool2d_forward(X, kh, kw, sh, sw, pads)
    dY = rng.standard_normal(Y.shape).astype(dtype)
    (Xd, dYd) = _dev(ops, X, dY)
    Yg, argmax_g = ops.max_pool2d_forward(Xd, kh, kw, sh, sw, pads)
    np.testing.assert_array_equal(sn.to_numpy(Yg), Y)
    np.testing.assert_array_equal(sn.to_numpy(argmax_g), argmax)
    assert argmax_g.dtype == np.int64
    dX = ops.max_pool2d_backward(dYd, argmax_g, shape)
    assert_close(sn.to_numpy(dX), REF.max_pool2d_backward(dY, argmax, shape), dtype, "max_pool2d dX")


@pytest.mark.parametrize("dtype", DTYPES)
def test_lstm_gates_match_the_reference_even_for_saturated_gates(ops, rng, dtype):
    N, H = 3, 5
    Z = (rng.standard_normal((N, 4 * H)) * 4).astype(dtype)
    Z[0, :] = 60  # saturated: exp(-60) underflows float32
    Z[1, ::3] = -60
    c_prev, dh, dc = (rng.standard_normal((N, H)).astype(dtype) for _ in range(3))
    h, c, G = REF.lstm_gates_forward(Z, c_prev)
    dZ, dc_prev = REF.lstm_gates_backward(dh, dc, c_prev, c, G)
    Zd, c_prev_d, dh_d, dc_d = _dev(ops, Z, c_prev, dh, dc)
    hg, cg, Gg = ops.lstm_gates_forward(Zd, c_prev_d)
    for name, got, want in (("h", hg, h), ("c", cg, c), ("G", Gg, G)):
        assert got.dtype == dtype
        assert_close(sn.to_numpy(got), want, dtype, name)
    dZg, dc_prev_g = ops.lstm_gates_backward(dh_d, dc_d, c_prev_d, cg, Gg)
    assert_close(sn.to_numpy(dZg), dZ, dtype, "dZ")
    assert_close(sn.to_numpy(dc_prev_g), dc_prev, dtype, "dc_prev")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("id_dtype", [np.int64, np.int32])
def test_embedding_backward_sums_repeated_ids(ops, rng, dtype, id_dtype):
    V, D = 7, 5
    ids = np.array([[1, 3, 1], [6, 1, 0], [3, 3, 1], [0, 2, 6]], dtype=id_dtype)
    dY = rng.standard_normal(ids.shape + (D,)).astype(dtype)
    ids_d, dY_d = _dev(ops, ids, dY)
    got = ops.embedding_backward(ids_d, dY_d, V)
    assert got.dtype == dtype
    want = REF.embedding_backward(ids, dY, V)
    assert_close(sn.to_numpy(got), want, dtype, "dtable")
    assert_close(want[1], dY[ids == 1].sum(axis=0), dtype, "row 1 is the sum of its four uses")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("K", [10, 300])
def test_softmax_cross_entropy_int_labels_match_the_reference_and_stay_finite(ops, rng, dtype, K):
    M = 6
    logits = (rng.standard_normal((M, K)) * 3).astype(dtype)
    logits[0, :] = 1e4
    logits[1, 2] = -1e4
    logits[2, 0] = 1e4
    labels = rng.integers(0, K, size=M)
    labels[1] = 2  # the label at -1e4: a huge but finite loss
    losses, probs = REF.softmax_cross_entropy_forward(logits, labels)
    logits_d, labels_d = _dev(ops, logits, labels)
    lg, pg = ops.softmax_cross_entropy_forward(logits_d, labels_d)
    lg, pg = sn.to_numpy(lg), sn.to_numpy(pg)
    assert lg.dtype == dtype and pg.dtype == dtype
    assert np.all(np.isfinite(lg))
    assert_close(lg, losses, dtype, "losses")
    assert_close(pg, probs, dtype, "probs")
    dlogits = ops.softmax_cross_entropy_backward(ops.xp.asarray(probs), labels_d, 0.37)
    assert_close(sn.to_numpy(dlogits), REF.softmax_cross_entropy_backward(probs, labels, 0.37), dtype, "dlogits")


def test_softmax_cross_entropy_soft_labels_fall_back_to_the_reference(ops, rng):
    logits = rng.standard_normal((4, 5))
    labels = rng.dirichlet(np.ones(5), size=4)
    losses, probs = REF.softmax_cross_entropy_forward(logits, labels)
    lg, pg = ops.softmax_cross_entropy_forward(*_dev(ops, logits, labels))
    assert_close(sn.to_numpy(lg), losses, np.float64, "losses")
    dl = ops.softmax_cross_entropy_backward(*_dev(ops, probs, labels), 0.5)
    assert_close(sn.to_numpy(dl), REF.softmax_cross_entropy_backward(probs, labels, 0.5), np.float64, "dlogits")


@pytest.mark.parametrize("rate", [0.0, 0.3, 0.9])
def test_dropout_mask_keeps_one_minus_rate_scaled_by_its_inverse(ops, rate):
    n = 40_000
    mask = sn.to_numpy(ops.dropout_mask((200, n // 200), rate, 7, np.float32))
    assert mask.shape == (200, n // 200) and mask.dtype == np.float32
    keep_value = np.float32(1 / (1 - rate))
    assert set(np.unique(mask)) <= {0.0, keep_value}
    kept = np.mean(mask != 0)
    # Binomial: 5 standard deviations.
    assert abs(kept - (1 - rate)) <= 5 * np.sqrt(rate * (1 - rate) / n) + 1e-12
    # Neighbouring entries are independent: both kept as often as chance says.
    flat = mask.reshape(-1) != 0
    both = np.mean(flat[1:] & flat[:-1])
    assert abs(both - (1 - rate) ** 2) <= 5 * np.sqrt(1 / n) + 1e-12


def test_dropout_mask_is_a_function_of_the_seed(ops):
    a = sn.to_numpy(ops.dropout_mask((50, 40), 0.5, 3, np.float32))
    b = sn.to_numpy(ops.dropout_mask((50, 40), 0.5, 3, np.float64))
    c = sn.to_numpy(ops.dropout_mask((50, 40), 0.5, 4, np.float32))
    assert b.dtype == np.float64
    np.testing.assert_array_equal(a != 0, b != 0)
    assert np.mean((a != 0) != (c != 0)) > 0.3


@pytest.fixture
def global_rng_restored():
    state = sn.random.get_state()
    yield
    sn.random.set_state(state)


def test_dropout_mask_without_seed_follows_the_global_generator(ops, global_rng_restored):
    sn.random.seed(11)
    a = sn.to_numpy(ops.dropout_mask((30, 30), 0.5, None, np.float32))
    b = sn.to_numpy(ops.dropout_mask((30, 30), 0.5, None, np.float32))
    sn.random.seed(11)
    again = sn.to_numpy(ops.dropout_mask((30, 30), 0.5, None, np.float32))
    np.testing.assert_array_equal(a, again)
    assert np.any(a != b)


@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (True, False), (False, True)])
def test_gemm_matches_the_reference(ops, rng, trans_a, trans_b):
    A = rng.standard_normal((3, 4) if not trans_a else (4, 3))
    B = rng.standard_normal((4, 5) if not trans_b else (5, 4))
    got = ops.gemm(*_dev(ops, A, B), trans_a=trans_a, trans_b=trans_b)
    assert_close(sn.to_numpy(got), REF.gemm(A, B, trans_a, trans_b), np.float64, "gemm")


gpu = pytest.mark.skipif(GPU_REASON is not None, reason=f"cupy backend: {GPU_REASON}")


@gpu
@pytest.mark.gpu
def test_numpy_array_into_the_cupy_backend_is_an_error():
    with sn.use_backend("cupy"):
        w = sn.get_backend().xp.ones((3, 2), dtype=np.float32)
        with pytest.raises(ValueError, match=r"dense: x is a NumPy array \(4, 3\).*cupy\.asarray\(x\)"):
            sn.ops.dense(np.ones((4, 3), dtype=np.float32), w)


@gpu
@pytest.mark.gpu
def test_modules_are_compiled_once_per_file_and_dtype():
    assert cuda.module("conv", np.float32) is cuda.module("conv", "float32")
    assert cuda.module("conv", np.float32) is not cuda.module("conv", np.float64)


@gpu
@pytest.mark.gpu
def test_nvrtc_compile_error_names_the_file_and_line(tmp_path, monkeypatch):
    shutil.copy(cuda.kernel_dir() / "common.cuh", tmp_path)
    (tmp_path / "bad.cu").write_text('#include "common.cuh"\nextern "C" __global__ void f(real* x) { x[0] = ; }\n')
    monkeypatch.setattr(cuda, "kernel_dir", lambda: tmp_path)
    with pytest.raises(cuda.CudaCompileError, match=r"kernels/cuda/bad\.cu\(2\)"):
        cuda.module("bad", np.float32)
