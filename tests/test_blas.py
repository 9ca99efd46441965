"""kernels/runtime/blas.py: the Numba backend's matrix products through MKL, against NumPy's, and the choice of BLAS.

The MKL tests need the ``mkl`` wheel (``make test`` installs it through the
``mkl`` extra); without it they skip, saying so.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from scratchnet.kernels.runtime import blas

needs_mkl = pytest.mark.skipif(blas._mkl_path() is None, reason="the mkl wheel is not installed: pip install 'scratchnet[mkl]'")


@pytest.fixture
def mkl(monkeypatch):
    """The MKL state for this test, whatever ``SCRATCHNET_BLAS`` chose for the session."""
    monkeypatch.setattr(blas, "_state", ("mkl", blas.load_mkl(blas._mkl_path())))
    return blas._state[1]


def _view(rng, shape, dtype, how):
    """A (rows, cols) operand laid out ``how``: contiguous, transposed, a block of a wider array, or a row block."""
    rows, cols = shape
    if how == "C":
        return rng.standard_normal(shape).astype(dtype)
    if how == "T":
        return rng.standard_normal((cols, rows)).astype(dtype).T
    if how == "cols":  # columns 3 .. 3 + cols of a wider matrix: rows contiguous, leading dimension cols + 7
        return rng.standard_normal((rows, cols + 7)).astype(dtype)[:, 3 : 3 + cols]
    if how == "Tcols":  # the transpose of such a block
        return rng.standard_normal((cols, rows + 5)).astype(dtype)[:, 2 : 2 + rows].T
    raise ValueError(how)


LAYOUTS = ["C", "T", "cols", "Tcols"]


@needs_mkl
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("la", LAYOUTS)
@pytest.mark.parametrize("lb", LAYOUTS)
def test_mkl_products_match_numpy_on_every_layout(mkl, dtype, la, lb):
    rng = np.random.default_rng(0)
    for M, K, N in [(7, 13, 5), (100, 28, 512), (1, 9, 1), (33, 1, 17)]:
        a, b = _view(rng, (M, K), dtype, la), _view(rng, (K, N), dtype, lb)
        got = blas.matmul(a, b)
        want = a.astype(np.float64) @ b.astype(np.float64)
        tol = 1e-4 if dtype == np.float32 else 1e-11
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.sqrt(K))
        assert got.dtype == dtype and got.flags.c_contiguous


@needs_mkl
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mkl_writes_into_a_block_of_out_and_nowhere_else(mkl, dtype):
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((6, 4)).astype(dtype), rng.standard_normal((4, 9)).astype(dtype)
    out = np.full((8, 20), 7.0, dtype=dtype)
    blas.matmul(a, b, out=out[1:7, 5:14])
    np.testing.assert_allclose(out[1:7, 5:14], a @ b, rtol=1e-5)
    outside = np.ones_like(out, dtype=bool)
    outside[1:7, 5:14] = False
    assert np.all(out[outside] == 7.0)


@needs_mkl
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mkl_batched_products_match_numpy_with_transposed_and_sliced_stacks(mkl, dtype):
    rng = np.random.default_rng(2)
    F, t, C, O = 16, 40, 8, 12
    V = rng.standard_normal((F, t + 6, C)).astype(dtype)[:, :t]  # the tiles of a chunk: a slice of a bigger stack
    U = rng.standard_normal((F, C, O)).astype(dtype)
    dM = rng.standard_normal((F, t, O)).astype(dtype)
    tol = 1e-4 if dtype == np.float32 else 1e-11
    for a, b in [(V, U), (V.transpose(0, 2, 1), dM), (dM, U.transpose(0, 2, 1))]:
        out = np.empty((F, a.shape[1], b.shape[2]), dtype=dtype)
        blas.matmul(a, b, out=out)
        np.testing.assert_allclose(out, np.matmul(a.astype(np.float64), b.astype(np.float64)), rtol=tol, atol=tol)


@needs_mkl
def test_mkl_results_do_not_depend_on_the_alignment_or_the_run(mkl):
    """The same bits from operands at any offset, and from one call to the next: a run repeats exactly."""
    rng = np.random.default_rng(3)

    def at_offset(x, offset):
        raw = np.empty(x.nbytes + 128, dtype=np.uint8)
        start = (-raw.ctypes.data) % 64 + offset
        view = raw[start : start + x.nbytes].view(x.dtype).reshape(x.shape)
        view[...] = x
        return view

    for M, K, N in [(100, 784, 250), (392, 100, 500), (2800, 28, 512), (128, 500, 64)]:
        a = rng.standard_normal((M, K)).astype(np.float32)
        b = rng.standard_normal((K, N)).astype(np.float32)
        first = blas.matmul(a, b)
        for oa, ob in [(4, 0), (8, 12), (60, 32), (0, 4)]:
            np.testing.assert_array_equal(blas.matmul(at_offset(a, oa), at_offset(b, ob)), first)
        np.testing.assert_array_equal(blas.matmul(a, b), first)


@needs_mkl
def test_products_mkl_cannot_take_go_to_numpy(mkl):
    rng = np.random.default_rng(4)
    a = rng.standard_normal((5, 6)).astype(np.float32)
    b = rng.standard_normal((6, 7)).astype(np.float32)
    strided = rng.standard_normal((5, 12)).astype(np.float32)[:, ::2]  # no unit stride on either axis
    np.testing.assert_allclose(blas.matmul(strided, b), strided @ b, rtol=1e-5)
    np.testing.assert_allclose(blas.matmul(a, b.astype(np.float64)), a @ b.astype(np.float64), rtol=1e-6)  # mixed
    ints = np.arange(6).reshape(2, 3)
    np.testing.assert_array_equal(blas.matmul(ints, ints.T), ints @ ints.T)
    np.testing.assert_array_equal(blas.matmul(a[:, :0], b[:0]), np.zeros((5, 7), np.float32))  # K = 0
    assert blas.matmul(a[:0], b).shape == (0, 7)
    with pytest.raises(ValueError):
        blas.matmul(a, a)  # numpy's own shape error
    raw = np.zeros(5 * 6 * 4 + 1, np.uint8)
    misaligned = raw[1:].view(np.float32).reshape(5, 6)  # float32 at an odd address
    misaligned[...] = a
    assert not misaligned.flags.aligned
    np.testing.assert_allclose(blas.matmul(misaligned, b), a @ b, rtol=1e-5)
    frozen = np.zeros((5, 7), np.float32)
    frozen.flags.writeable = False
    with pytest.raises(ValueError):
        blas.matmul(a, b, out=frozen)  # numpy's read-only error, never a write into it
    square = rng.standard_normal((6, 6)).astype(np.float32)
    want = square @ square
    np.testing.assert_allclose(blas.matmul(square, square, out=square), want, rtol=1e-5)  # out is an operand


@needs_mkl
def test_the_numba_ops_agree_between_mkl_and_openblas(monkeypatch):
    """The dense op and an LSTM on either BLAS: the same products, to float32 rounding."""
    import scratchnet as sn

    rng = np.random.default_rng(5)
    f = np.float32
    x, w, b, dy = (rng.standard_normal(s).astype(f) for s in [(100, 784), (784, 500), (500,), (100, 500)])
    xs, k, rk, bb, dys = (rng.standard_normal(s).astype(f) * f(0.1) for s in
                          [(20, 9, 28), (28, 256), (64, 256), (256,), (20, 9, 64)])
    results = {}
    with sn.use_backend("numba"):
        for kind in ("mkl", "openblas"):
            monkeypatch.setattr(blas, "_state", ("mkl", blas.load_mkl(blas._mkl_path())) if kind == "mkl" else ("openblas", None))
            y, bp = sn.ops.dense(x, w, b)
            (ys, _, _), lstm_bp = sn.ops.lstm(xs, k, rk, bb)
            results[kind] = [y, *bp(dy), ys, *lstm_bp(dys)[:4]]
    for got, want in zip(results["mkl"], results["openblas"]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def _choice_in_a_new_process(value, first=""):
    code = first + "from scratchnet.kernels.runtime import blas; print(blas.name()); print(blas.describe())"
    env = dict(os.environ, SCRATCHNET_BLAS=value)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_scratchnet_blas_openblas_keeps_numpy_s_blas():
    run = _choice_in_a_new_process("openblas")
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["openblas", "openblas (NumPy's)"]


@needs_mkl
def test_scratchnet_blas_auto_and_mkl_use_mkl_when_installed():
    for value in ("auto", "mkl", "MKL"):
        run = _choice_in_a_new_process(value)
        assert run.returncode == 0, run.stderr
        name, described = run.stdout.splitlines()
        assert name == "mkl" and described.startswith("mkl (sequential), Intel(R) oneAPI Math Kernel Library")


def test_auto_chooses_the_same_blas_whatever_the_process_imported_first(monkeypatch):
    """The choice depends on what is installed, not on import order: with PyTorch installed (here pretended),
    a process that imported it first and one that did not multiply through the same BLAS. (An earlier rule
    waited for an installed PyTorch to be imported, so a resumed run could take the other BLAS and round
    differently from the uninterrupted one.)"""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "torch" else real(name, *a))
    monkeypatch.setenv("SCRATCHNET_BLAS", "auto")
    chosen = []
    for imported in (False, True):
        monkeypatch.setattr(blas, "_state", None)
        monkeypatch.setattr(blas, "_why_not_mkl", None)
        if imported:
            monkeypatch.setitem(sys.modules, "torch", object())
        else:
            monkeypatch.delitem(sys.modules, "torch", raising=False)
        chosen.append(blas.name())
    assert chosen[0] == chosen[1] == ("mkl" if blas._mkl_path() is not None else "openblas")


def test_a_wrong_scratchnet_blas_names_the_variable_and_the_choices(monkeypatch):
    monkeypatch.setattr(blas, "_state", None)
    monkeypatch.setattr(blas, "_why_not_mkl", None)
    monkeypatch.setenv("SCRATCHNET_BLAS", "atlas")
    with pytest.raises(ValueError, match=r"SCRATCHNET_BLAS='atlas': expected one of auto, mkl, openblas"):
        blas.matmul(np.ones((2, 2), np.float32), np.ones((2, 2), np.float32))


def test_asking_for_mkl_without_it_is_an_error_not_openblas(monkeypatch):
    monkeypatch.setattr(blas, "_state", None)
    monkeypatch.setattr(blas, "_why_not_mkl", None)
    monkeypatch.setattr(blas, "_mkl_path", lambda: None)
    monkeypatch.setenv("SCRATCHNET_BLAS", "mkl")
    with pytest.raises(RuntimeError, match=r"SCRATCHNET_BLAS=mkl, but the mkl wheel is not installed"):
        blas.name()
    monkeypatch.setenv("SCRATCHNET_BLAS", "auto")
    assert blas.name() == "openblas"  # auto: OpenBLAS when MKL is not there
