"""The CuPy backend and its CUDA C kernels.

Three levels, so that most of it is checked on a machine without a GPU:

1. nvcc compiles every ``kernels/*.cu`` to PTX for sm_80 and sm_90, in float
   and double, from the exact text the loader hands to NVRTC.
2. The CUDA sources are also compiled for the host by g++ behind a small shim
   (one block of one thread: the grid-stride loops then run serially, and
   ``atomicAdd`` is a plain add). ``CupyOps`` runs on them with NumPy standing
   in for CuPy and must match the reference kernels. This checks the index
   math, the argument order and types and the outputs of every kernel and of
   every ``CupyOps`` override, though not concurrency.
3. On a GPU, the same comparisons run on the real ``CupyOps`` (skipped, with
   the reason, elsewhere).
"""
from __future__ import annotations

import ctypes
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
from scratchnet.kernels import cuda
from scratchnet.ops.reference import ReferenceOps

from reference import assert_close

NVCC = shutil.which("nvcc")
GXX = shutil.which("g++")
GPU_REASON = cupy_unavailable_reason()

# The kernels each source must define, by the names CupyOps launches.
KERNELS = {
    "conv": ["im2col", "col2im"],
    "pooling": ["maxpool_forward", "maxpool_backward"],
    "lstm": ["lstm_gates_forward", "lstm_gates_backward"],
    "embedding": ["embedding_backward"],
    "losses": ["softmax_xent_forward", "softmax_xent_backward"],
    "dropout": ["dropout_mask"],
}
OVERRIDES = [k for names in KERNELS.values() for k in names] + ["gemm", "_refuse_foreign"]


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
    assert text.startswith('#line 1 "kernels/conv.cu"\n')
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
        "import sys, scratchnet, scratchnet.kernels.cuda as c\n"
        "assert 'cupy' not in sys.modules, 'cupy imported'\n"
        "assert c._module.cache_info().currsize == 0\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.skipif(GPU_REASON is None, reason="a GPU is present, so the cupy backend is available")
def test_cupy_backend_is_unavailable_here_and_says_why():
    with pytest.raises(BackendUnavailable, match="backend 'cupy' cannot run here: .+"):
        sn.use_backend("cupy")


# --- 2. the CUDA sources compiled for the host ------------------------------

SHIM = r"""
#include <cmath>
using namespace std;
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__
struct shim_dim3 { unsigned x, y, z; };
static const shim_dim3 threadIdx = {0, 0, 0}, blockIdx = {0, 0, 0};
static const shim_dim3 blockDim = {1, 1, 1}, gridDim = {1, 1, 1};
static inline void __syncthreads() {}
template <class T> T atomicAdd(T* p, T v) { T old = *p; *p += v; return old; }
"""


@pytest.fixture(scope="module")
def host_build(tmp_path_factory):
    """Compile ``<source>.cu`` for the host with REAL of ``dtype``, once each."""
    if GXX is None:
        pytest.skip("g++ is not on PATH")
    out = tmp_path_factory.mktemp("cuda_host")
    (out / "shim.h").write_text(SHIM)
    libs = {}

    def build(source, dtype):
        real = cuda.real_type(dtype)
        if (source, real) not in libs:
            so = out / f"{source}_{real}.so"
            cmd = [GXX, "-O1", "-shared", "-fPIC", "-x", "c++", "-include", str(out / "shim.h"),
                   *cuda.compile_options(real), "-o", str(so), str(cuda.source_path(source))]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            assert proc.returncode == 0, proc.stderr
            libs[source, real] = ctypes.CDLL(str(so))
        return libs[source, real]

    return build


def _c_arg(a, dtype):
    # Exactly the scalar types CupyOps must pass to CuPy: a plain Python int
    # here would be a kernel argument of a guessed type on the GPU.
    if isinstance(a, np.ndarray):
        assert a.flags.c_contiguous, "kernels index flat C-order memory"
        assert a.dtype in (dtype, np.int64), f"array of {a.dtype} passed to the REAL={dtype} build"
        return ctypes.c_void_p(a.ctypes.data)
    for kind, ctype in ((np.int64, ctypes.c_longlong), (np.uint64, ctypes.c_ulonglong)):
        if isinstance(a, kind):
            return ctype(int(a))
    if isinstance(a, (np.float32, np.float64)):
        assert a.dtype == dtype, f"{a.dtype} scalar passed to the REAL={dtype} build"
        return (ctypes.c_float if a.dtype == np.float32 else ctypes.c_double)(a)
    raise TypeError(f"kernel argument of type {type(a).__name__}; pass numpy scalars")


@pytest.fixture(scope="module")
def host_cupy_ops(host_build):
    """``CupyOps`` with NumPy as its array module and the kernels run on the host."""
    fake = types.ModuleType("cupy")
    fake.__dict__.update({k: v for k, v in np.__dict__.items() if not k.startswith("__")})
    package = importlib.import_module("scratchnet.kernels")
    previous = getattr(package, "cupy_ops", None)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "cupy", fake)
        mp.delitem(sys.modules, "scratchnet.kernels.cupy_ops", raising=False)
        module = importlib.import_module("scratchnet.kernels.cupy_ops")
    # sys.modules and the package attribute are restored: nothing else sees the stand-in.
    if previous is None:
        delattr(package, "cupy_ops")
    else:
        package.cupy_ops = previous

    class HostCupyOps(module.CupyOps):
        def _launch(self, source, kernel, dtype, grid, block, args):
            assert len(grid) == 1 and 0 < grid[0] <= module.MAX_GRID and 0 < block[0] <= 1024
            dtype = np.dtype(dtype)
            getattr(host_build(source, dtype), kernel)(*(_c_arg(a, dtype) for a in args))

    return HostCupyOps()


@pytest.fixture(params=["host", pytest.param("gpu", marks=pytest.mark.gpu)])
def ops(request):
    """The CupyOps under test: its kernels on the host, or on the GPU."""
    if request.param == "host":
        return request.getfixturevalue("host_cupy_ops")
    if GPU_REASON:
        pytest.skip(f"cupy backend: {GPU_REASON}")
    from scratchnet.kernels.cupy_ops import CupyOps

    return CupyOps()


REF = ReferenceOps()
DTYPES = [np.float32, np.float64]


def _dev(ops, *arrays):
    return tuple(ops.xp.asarray(a) for a in arrays)


def test_cupy_ops_overrides_have_the_reference_signatures(host_cupy_ops):
    cls = type(host_cupy_ops).__mro__[1]
    for name in OVERRIDES:
        assert name in vars(cls), f"CupyOps does not override {name}"
        assert inspect.signature(getattr(cls, name)) == inspect.signature(getattr(ReferenceOps, name)), name


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
def test_maxpool_matches_the_reference_with_ties(ops, rng, dtype, shape, kh, kw, sh, sw, pads):
    # Few distinct values, many ties, and negative values so that a zero pad
    # would win if padding were ever a candidate.
    X = (rng.integers(-3, 1, size=shape)).astype(dtype)
    Y, argmax = REF.maxpool_forward(X, kh, kw, sh, sw, pads)
    dY = rng.standard_normal(Y.shape).astype(dtype)
    (Xd, dYd) = _dev(ops, X, dY)
    Yg, argmax_g = ops.maxpool_forward(Xd, kh, kw, sh, sw, pads)
    np.testing.assert_array_equal(sn.to_numpy(Yg), Y)
    np.testing.assert_array_equal(sn.to_numpy(argmax_g), argmax)
    assert argmax_g.dtype == np.int64
    dX = ops.maxpool_backward(dYd, argmax_g, shape)
    assert_close(sn.to_numpy(dX), REF.maxpool_backward(dY, argmax, shape), dtype, "maxpool dX")


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
def test_softmax_xent_int_labels_match_the_reference_and_stay_finite(ops, rng, dtype, K):
    M = 6
    logits = (rng.standard_normal((M, K)) * 3).astype(dtype)
    logits[0, :] = 1e4
    logits[1, 2] = -1e4
    logits[2, 0] = 1e4
    labels = rng.integers(0, K, size=M)
    labels[1] = 2  # the label at -1e4: a huge but finite loss
    losses, probs = REF.softmax_xent_forward(logits, labels)
    logits_d, labels_d = _dev(ops, logits, labels)
    lg, pg = ops.softmax_xent_forward(logits_d, labels_d)
    lg, pg = sn.to_numpy(lg), sn.to_numpy(pg)
    assert lg.dtype == dtype and pg.dtype == dtype
    assert np.all(np.isfinite(lg))
    assert_close(lg, losses, dtype, "losses")
    assert_close(pg, probs, dtype, "probs")
    dlogits = ops.softmax_xent_backward(ops.xp.asarray(probs), labels_d, 0.37)
    assert_close(sn.to_numpy(dlogits), REF.softmax_xent_backward(probs, labels, 0.37), dtype, "dlogits")


def test_softmax_xent_soft_labels_fall_back_to_the_reference(ops, rng):
    logits = rng.standard_normal((4, 5))
    labels = rng.dirichlet(np.ones(5), size=4)
    losses, probs = REF.softmax_xent_forward(logits, labels)
    lg, pg = ops.softmax_xent_forward(*_dev(ops, logits, labels))
    assert_close(sn.to_numpy(lg), losses, np.float64, "losses")
    dl = ops.softmax_xent_backward(*_dev(ops, probs, labels), 0.5)
    assert_close(sn.to_numpy(dl), REF.softmax_xent_backward(probs, labels, 0.5), np.float64, "dlogits")


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


# --- 3. GPU only -------------------------------------------------------------

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
    with pytest.raises(cuda.CudaCompileError, match=r"kernels/bad\.cu\(2\)"):
        cuda.module("bad", np.float32)
