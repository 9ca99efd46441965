"""The cupy backend's Python side, run on the CuPy stand-in (``tests/fake_cupy``) on every CI machine.

The stand-in is NumPy behind CuPy's interface (see its docstring): its arrays
refuse silent conversion to NumPy and count every wait for the device, its
RawModule compiles the ``.cu`` text for the host. This file installs it for
its own tests (and removes it after), whether or not ``SCRATCHNET_FAKE_CUPY``
is set, and checks what only it can see:

- the stand-in itself: host leaks raise, synchronisations are counted and
  named, the guard (``cupyx.allow_synchronize(False)``) refuses them;
- how often a LeNet training step waits for the device (a bound);
- the launcher: kernel objects cached, a cache key that covers the headers,
  one set of compile flags for NVRTC and nvcc, the shared-memory bound;
- the fused update kernels (``kernels/cuda/updates.cu``) against the reference, bit for bit;
- ``scratchnet/distributed/device.py`` (NCCL and host staging) and the CUDA-event clock;
- ``bench/gpu_check.sh --dry-run``, so the GPU script cannot rot.
"""
from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import scratchnet as sn
from scratchnet import backend as backend_module
from scratchnet.ops.reference import ReferenceOps

ROOT = Path(__file__).resolve().parents[1]
FAKE = Path(__file__).resolve().parent / "fake_cupy"
REF = ReferenceOps()
DTYPES = [np.float32, np.float64]


def _forget_cupy_backend():
    """Drop the cupy backend, its module and its compiled kernels, so the next use rebuilds them."""
    backend_module._instances.pop("cupy", None)
    package = sys.modules.get("scratchnet.kernels.cuda")
    sys.modules.pop("scratchnet.kernels.cuda.backend", None)
    if package is not None and hasattr(package, "backend"):
        delattr(package, "backend")
    from scratchnet.kernels.cuda import compiler as cuda

    cuda.clear_caches()


@pytest.fixture(scope="module")
def cupy():
    """The stand-in as ``cupy`` for this module's tests; afterwards sys.modules is as it was."""
    existing = sys.modules.get("cupy")
    if existing is not None:
        if not getattr(existing, "STAND_IN", False):
            pytest.skip("a real CuPy is imported: the stand-in's tests run where there is none")
        yield existing  # SCRATCHNET_FAKE_CUPY=1: conftest installed it for the session
        return
    try:
        importlib.import_module("cupy")
        pytest.skip("a real CuPy is installed: the stand-in's tests run where there is none")
    except ImportError:
        pass
    sys.path.insert(0, str(FAKE))
    _forget_cupy_backend()
    try:
        module = importlib.import_module("cupy")
        importlib.import_module("cupyx")
        yield module
    finally:
        sys.path.remove(str(FAKE))
        for name in [n for n in sys.modules if n in ("cupy", "cupyx") or n.startswith(("cupy.", "cupyx."))]:
            del sys.modules[name]
        _forget_cupy_backend()


@pytest.fixture
def ops(cupy):
    """The cupy backend, selected for the test."""
    with sn.use_backend("cupy") as be:
        yield be


# --- the stand-in itself -------------------------------------------------------


def test_stand_in_refuses_every_silent_copy_to_the_host(cupy):
    a = cupy.asarray(np.arange(6.0).reshape(2, 3))
    assert type(a).__module__.startswith("cupy") and not isinstance(a, np.ndarray)
    for leak in (np.asarray, np.array, lambda v: np.ascontiguousarray(v) + 0):
        with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
            leak(a)
    with pytest.raises(TypeError, match="NumPy array where a CuPy array is expected"):
        a + np.ones(3)
    with pytest.raises(TypeError, match="NumPy array where a CuPy array is expected"):
        cupy.stack([a, np.ones((2, 3))])
    with pytest.raises(TypeError, match="Unsupported type"):
        cupy.ascontiguousarray(np.ones(3))
    # The explicit ways are the only ones: .get() and cupy.asnumpy give NumPy copies.
    host = a.get()
    host[0, 0] = 99
    assert isinstance(cupy.asnumpy(a), np.ndarray) and cupy.asnumpy(a)[0, 0] == 0
    # Reductions stay on the device, as CuPy's do.
    assert isinstance(a.sum(), cupy.ndarray) and a.sum().shape == ()


def test_stand_in_counts_and_names_each_synchronisation_and_the_guard_refuses_them(cupy):
    import cupyx

    a = cupy.arange(5, dtype=np.float32)
    with cupy.count_syncs() as log:
        b = (a * 2 + 1).sum()  # device work: no wait
        assert log.count == 0
        float(b)
        bool(a.all())
        a.get()
        cupy.asnumpy(a)
        a[1].item()
        cupy.cuda.get_current_stream().synchronize()
    assert log.by_kind() == {"float()": 1, "bool()": 1, "get": 2, "item()": 1, "Stream.synchronize": 1}
    assert all(where.startswith(__file__) for _, where in log.events), log
    with cupyx.allow_synchronize(False):
        with pytest.raises(cupyx.DeviceSynchronized, match=r"\(float\(\)\) at .*test_cupy_backend\.py"):
            float(a.sum())
        a + 1  # device work is still allowed


def test_stand_in_kernels_take_device_arrays_and_numpy_scalars_only(cupy, ops):
    from scratchnet.kernels.cuda import compiler as cuda

    kernel = cuda.function("updates", "scaled_add", np.float32)
    y, x = cupy.zeros(4, dtype=np.float32), cupy.ones(4, dtype=np.float32)
    with pytest.raises(TypeError, match="argument 2 is float"):
        kernel((1,), (32,), (y, x, 2.0, np.int64(4)))
    with pytest.raises(TypeError, match="argument 1 is ndarray"):
        kernel((1,), (32,), (y, np.ones(4, np.float32), np.float32(2), np.int64(4)))
    kernel((1,), (32,), (y, x, np.float32(2), np.int64(4)))
    np.testing.assert_array_equal(y.get(), 2.0)


# --- synchronisations per training step ---------------------------------------

#: A steady LeNet step (the fused SGD + L2 + moving average path) waits for the device this many
#: times: once, the ``.get()`` of training.read_back, which brings the loss, the labels' range check,
#: the finite test, the L2 penalty's sums and the accuracy over as one small vector, before any
#: update is launched. Before issue 24 it was 12 (ops/updates.py summed every parameter's squares,
#: L2 or not), then 5: check_ids' bool, float(loss), the finite check's bool, the penalty's sum and
#: the accuracy's float, each read where it was computed.
LENET_STEP_SYNCS = 1


def _read_back_only(log):
    return all(kind == "get" and "backend.py" in where for kind, where in log.events)


def test_a_lenet_training_step_waits_for_the_device_once(cupy, ops):
    rng = np.random.default_rng(0)
    recipe = sn.zoo.build("lenet", batch_size=4, dtype="float32")
    x = cupy.asarray(rng.standard_normal((4, 28, 28, 1)).astype(np.float32))
    y = cupy.asarray(rng.integers(0, 10, 4))
    recipe.train_step(x, y)  # the first step: shadows are made, the three-phase path
    for _ in range(2):
        with cupy.count_syncs() as log:
            logs = recipe.train_step(x, y)
        assert log.count <= LENET_STEP_SYNCS and _read_back_only(log), log
    assert isinstance(logs["loss"], float) and np.isfinite(logs["loss"])
    assert isinstance(logs["accuracy"], float)
    with cupy.count_syncs() as log:
        recipe.model.test_on_batch(x, y)
    assert log.count == 1 and _read_back_only(log), log


def _twin_models(optimizer, regularizer):
    """One model on numpy and its copy on the cupy backend, the same weights."""
    models = []
    for be in ("numpy", "cupy"):
        with sn.use_backend(be):
            sn.random.seed(3)
            model = sn.Sequential([sn.layers.Dense(6, activation="relu", kernel_regularizer=regularizer),
                                   sn.layers.Dense(4, kernel_regularizer=sn.regularizers.l2(1e-2))], dtype="float64")
            model.compile(optimizer(), sn.losses.SparseCategoricalCrossentropy())
            model.build((None, 5))
            models.append(model)
    for p, q in zip(*(m.parameters() for m in models)):  # the same seed, the same draw
        np.testing.assert_array_equal(sn.to_numpy(q.value), p.value, err_msg=p.name)
    return models


@pytest.mark.parametrize("optimizer, regularizer", [
    (lambda: sn.optimizers.Adam(1e-2), sn.regularizers.L1L2(l1=1e-3, l2=1e-3)),
    (lambda: sn.optimizers.SGD(0.1, momentum=0.9, nesterov=True), sn.regularizers.l2(1e-3)),
    (lambda: sn.optimizers.Momentum(0.1), None),
    (lambda: sn.optimizers.SGD(0.1, global_clipnorm=0.5), sn.regularizers.l2(1e-3)),
], ids=["adam_l1l2", "sgd_nesterov", "tf1_momentum", "clipnorm"])
def test_the_three_phase_step_reads_the_device_once_and_logs_what_numpy_logs(cupy, optimizer, regularizer):
    host, device = _twin_models(optimizer, regularizer)
    rng = np.random.default_rng(9)
    x, y = rng.standard_normal((8, 5)), rng.integers(0, 4, 8)
    for step in range(3):
        with sn.use_backend("numpy"):
            want = host.train_on_batch(x, y)
        with sn.use_backend("cupy"):
            with cupy.count_syncs() as log:
                got = device.train_on_batch(cupy.asarray(x), cupy.asarray(y))
        assert got.keys() == want.keys()
        for k in want:
            assert got[k] == pytest.approx(want[k], rel=1e-12), (step, k)
        assert log.count == 1 and _read_back_only(log), log
    for p, q in zip(host.parameters(), device.parameters()):
        np.testing.assert_allclose(sn.to_numpy(q.value), p.value, rtol=1e-12, atol=1e-15, err_msg=p.name)


def _refused(model, x, y, error, match):
    """``train_on_batch(x, y)`` raises ``error`` and leaves weights, slots, counters and shadows as they were."""
    before = ({p.name: sn.to_numpy(p.value) for p in model.parameters()}, model.step, model.optimizer.iterations,
              {k: sn.to_numpy(a) for k, d in model.optimizer._slots.items() for a in d.values()})
    with pytest.raises(error, match=match) as info:
        model.train_on_batch(x, y)
    after = ({p.name: sn.to_numpy(p.value) for p in model.parameters()}, model.step, model.optimizer.iterations,
             {k: sn.to_numpy(a) for k, d in model.optimizer._slots.items() for a in d.values()})
    assert before[1:3] == after[1:3]
    for k in before[0]:
        np.testing.assert_array_equal(after[0][k], before[0][k], err_msg=k)
    for k in before[3]:
        np.testing.assert_array_equal(after[3][k], before[3][k], err_msg=k)
    return info.value


@pytest.mark.parametrize("optimizer", [lambda: sn.optimizers.SGD(0.1), lambda: sn.optimizers.Adam(1e-2)],
                         ids=["fused_sgd", "adam"])
def test_a_device_step_refuses_bad_labels_and_non_finite_steps_before_any_update(cupy, optimizer):
    """The checks answer in the step's one transfer, which comes before the updates: the same errors as on numpy."""
    host, device = _twin_models(optimizer, sn.regularizers.l2(1e-3))
    for model in (host, device):  # a first step makes the moving average's shadows: then SGD takes the fused path
        model.ema = sn.ExponentialMovingAverage(0.9)
    rng = np.random.default_rng(10)
    x, y = rng.standard_normal((8, 5)), rng.integers(0, 4, 8)
    with sn.use_backend("numpy"):
        host.train_on_batch(x, y)
    with sn.use_backend("cupy"):
        device.train_on_batch(cupy.asarray(x), cupy.asarray(y))
    bad_label = y.copy()
    bad_label[5] = 4
    bad_float = y.astype(np.float64)
    bad_float[2] = 1.5
    nan_x = x.copy()
    nan_x[3, 1] = np.nan
    cases = [(x, bad_label, ValueError, r"labels must lie in \[0, 4\) \(logits have 4 classes\), found 4 at labels\[5\]"),
             (x, bad_float, ValueError, r"must be whole numbers .* found 1\.5 at y_true\[2\]"),
             (nan_x, y, sn.training.NonFiniteError, r"the input batch x holds nan at row 3")]
    for xb, yb, error, match in cases:
        with sn.use_backend("numpy"):
            want = _refused(host, xb, yb, error, match)
        with sn.use_backend("cupy"):
            got = _refused(device, cupy.asarray(xb), cupy.asarray(yb), error, match)
        assert str(got) == str(want)
    # A loss made infinite by the weights themselves: refused, the weight named.
    with sn.use_backend("cupy"):
        next(device.parameters()).value[0, 0] = np.inf
        _refused(device, cupy.asarray(x), cupy.asarray(y), sn.training.NonFiniteError, "the weight .* is not finite")


def test_an_lstm_language_model_step_runs_on_the_cupy_backend(cupy, ops):
    model = sn.Sequential([sn.layers.Embedding(20, 8), sn.layers.LSTM(16, return_sequences=True), sn.layers.Dense(20)])
    model.compile(sn.optimizers.Adam(1e-2), sn.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(1)
    ids = cupy.asarray(rng.integers(0, 20, (4, 6)))
    first = model.train_on_batch(ids, ids)["loss"]
    for _ in range(5):
        last = model.train_on_batch(ids, ids)["loss"]
    assert np.isfinite(last) and last < first


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_the_lstm_recurrence_is_one_gemm_into_one_buffer_and_one_launch_per_step(cupy, ops, dtype):
    """The recurrent GEMM writes into a buffer made once per sequence, and the step kernel reads it there."""
    rng = np.random.default_rng(11)
    N, H, D = 3, 5, 4

    def inputs(T):
        host = (rng.standard_normal((T, N, 4 * H)), rng.standard_normal((H, 4 * H)) * 0.5,
                rng.standard_normal(4 * H), rng.standard_normal((N, H)), rng.standard_normal((N, H)))
        return [cupy.asarray(a.astype(dtype)) for a in host]

    def counted(fn, T):
        z, rk, b, h0, c0 = inputs(T)
        launches, allocations = cupy.stats["launches"], cupy.stats["allocations"]
        out = fn(z, rk, b, h0, c0)
        return out, cupy.stats["launches"] - launches, cupy.stats["allocations"] - allocations

    three_launch = lambda *a: ReferenceOps.lstm_recurrence(ops, *a)  # noqa: E731  (gemm, add, kernel, 3 copies)
    for T in (2, 6):
        args = inputs(T)
        want = three_launch(*[a.copy() for a in args])
        got = ops.lstm_recurrence(*[a.copy() for a in args])
        for name, w, g in zip(("h_seq", "c_seq", "gates_seq"), want, got):
            np.testing.assert_array_equal(g.get(), w.get(), err_msg=f"T={T} {name}")
    (_, short, short_alloc), (_, long, long_alloc) = counted(ops.lstm_recurrence, 2), counted(ops.lstm_recurrence, 6)
    assert (short, long) == (2, 6)  # one kernel per step (the bias's add and the GEMMs are CuPy's, not counted)
    assert long_alloc == short_alloc, "an allocation per step"
    (_, _, before_alloc), (_, _, before_long) = counted(three_launch, 2), counted(three_launch, 6)
    assert before_long - before_alloc >= 4 * 4  # the reference's per step: the GEMM's output, h, c, gates
    # The LSTM layer's forward on this backend takes the new path (and its gradients still check out).
    real, calls = type(ops).lstm_recurrence, []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(type(ops), "lstm_recurrence", lambda self, *a: calls.append(1) or real(self, *a))
        x = cupy.asarray(rng.standard_normal((N, 4, D)).astype(dtype))
        sn.layers.LSTM(H, return_sequences=True, dtype=np.dtype(dtype).name).forward(x, training=True)
    assert calls == [1]


# --- the launcher (kernels/cuda/compiler.py, CupyOps._launch) ----------------------------


def test_kernel_objects_are_looked_up_once_not_on_every_launch(cupy, ops):
    x = cupy.asarray(np.random.default_rng(2).standard_normal((2, 6, 6, 3)).astype(np.float32))
    ops.im2col(x, 3, 3, 1, 1, (1, 1, 1, 1))  # compiles and looks up
    before = cupy.stats["get_function"]
    for _ in range(3):
        ops.im2col(x, 3, 3, 1, 1, (1, 1, 1, 1))
        ops.max_pool2d_forward(x, 2, 2, 2, 2, (0, 0, 0, 0))
    assert cupy.stats["get_function"] - before <= 1  # max_pool2d_forward's first lookup, then none


def test_an_edit_to_a_header_alone_changes_cupys_cache_key(cupy, ops, tmp_path, monkeypatch):
    from scratchnet.kernels.cuda import compiler as cuda

    for name in ("common.cuh", "dropout.cu"):
        shutil.copy(cuda.kernel_dir() / name, tmp_path)
    monkeypatch.setattr(cuda, "kernel_dir", lambda: tmp_path)
    cuda.clear_caches()
    first = cuda.module("dropout", np.float32)
    key = (first.code, first.options)
    cuda.clear_caches()
    assert (cuda.module("dropout", np.float32).code, cuda.module("dropout", np.float32).options) == key
    with open(tmp_path / "common.cuh", "a") as f:
        f.write("\n// an edit\n")
    cuda.clear_caches()
    misses = cupy.stats["compiles"]
    edited = cuda.module("dropout", np.float32)
    assert (edited.code, edited.options) != key, "CuPy would serve the cubin built before the header changed"
    assert cupy.stats["compiles"] == misses + 1
    cuda.clear_caches()


def _flags(args):
    """A compile command's flags, less what names files and targets."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a == "-o":
            skip = True
        elif not (a.startswith(("-I", "-arch", "-DSCRATCHNET_HEADERS")) or a == "-ptx" or a.endswith(".cu")):
            out.append(a)
    return out


def test_nvrtc_and_nvcc_compile_with_one_set_of_flags(cupy, ops, monkeypatch):
    from scratchnet.kernels.cuda import compiler as cuda

    commands = []

    def fake_run(cmd, **kwargs):
        commands.append(cmd)
        Path(cmd[cmd.index("-o") + 1]).write_text("// ptx\n")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(cuda, "subprocess", types.SimpleNamespace(run=fake_run))  # this module's only
    cuda.nvcc_ptx(cuda.source_path("losses"), arch="sm_90", real="double", nvcc="nvcc")
    nvcc = _flags(commands[0][1:])
    cuda.clear_caches()
    module = cuda.module("losses", np.float64)
    assert sorted(nvcc) == sorted(_flags(module.options))
    # CuPy's RawModule appends -ftz=true to the caller's options, and the last flag wins: nvcc must say the same.
    nvrtc = _flags(module.options + ("-ftz=true",))

    def ftz(flags):
        return next((f for f in reversed(flags) if f.lstrip("-").startswith("ftz")), "-ftz=false (the default)")

    assert ftz(nvcc) == ftz(nvrtc) == "-ftz=true"
    for flag in ("-prec-div=true", "-prec-sqrt=true", "-fmad=true", "--std=c++17"):
        assert flag in nvcc and flag in nvrtc


def test_the_softmax_block_never_outgrows_the_kernels_shared_buffer(cupy, ops):
    from scratchnet.kernels.cuda import compiler as cuda

    rng = np.random.default_rng(3)
    launches = []
    real_function = cuda.function

    def spy(source, kernel, dtype):
        fn = real_function(source, kernel, dtype)
        return lambda grid, block, args, shared_mem=0: (launches.append((kernel, block, shared_mem)),
                                                        fn(grid, block, args, shared_mem=shared_mem))

    logits = cupy.asarray(rng.standard_normal((3, 5000)).astype(np.float32))
    labels = cupy.asarray(rng.integers(0, 5000, 3))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cuda, "function", spy)
        ops.softmax_cross_entropy_forward(logits, labels)
    (kernel, block, shared), = launches
    if cuda.uses_dynamic_shared_memory("losses"):
        assert shared == block[0] * 4 and block[0] <= 1024
        return
    limit = cuda.source_define("losses", "SOFTMAX_CE_MAX_THREADS")
    assert limit is not None and block[0] <= limit and shared == 0
    with pytest.raises(ValueError, match=rf"block of 1024 threads, but the kernel takes at most {limit}"):
        ops._launch("losses", "softmax_cross_entropy_forward", np.float32, (1,), (1024,), ())


# --- the fused update kernels (kernels/cuda/updates.cu) ------------------------------

def _pair(cupy, rng, shape, dtype, n):
    host = [rng.standard_normal(shape).astype(dtype) for _ in range(n)]
    return host, [cupy.asarray(a) for a in host]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize(
    "update, n, args",
    [
        ("scaled_add", 2, (-0.3,)),
        ("moving_average_update", 2, (0.97,)),
        ("adam_update", 4, (1e-3, 0.9, 0.999, 1e-7)),
        ("sgd_momentum_update", 3, (0.05, 0.9, False)),
        ("sgd_momentum_update", 3, (0.05, 0.9, True)),
        ("momentum_update", 3, (0.05, 0.9, False)),
        ("momentum_update", 3, (0.05, 0.9, True)),
    ],
    ids=["scaled_add", "moving_average", "adam", "keras_sgd_momentum", "keras_sgd_nesterov", "tf1_momentum",
         "tf1_nesterov"],
)
def test_each_update_is_one_kernel_equal_to_the_reference_bit_for_bit(cupy, ops, dtype, update, n, args):
    rng = np.random.default_rng(4)
    host, dev = _pair(cupy, rng, (37, 5), dtype, n)
    if update == "adam_update":
        host[3], dev[3] = np.abs(host[3]), cupy.abs(dev[3])  # v >= 0
    launches = cupy.stats["launches"]
    getattr(REF, update)(*host, *args)
    getattr(ops, update)(*dev, *args)
    assert cupy.stats["launches"] - launches == 1
    for i, (want, got) in enumerate(zip(host, dev)):
        np.testing.assert_array_equal(got.get(), want, err_msg=f"{update}: argument {i}")


def _sgd_momentum(w, g, m, lr, mu, nesterov):
    """scratchnet/optimizers.py's SGD.update with momentum, as written there."""
    m *= mu
    m -= lr * g
    if nesterov:
        w += mu * m - lr * g
    else:
        w += m


def _tf1_momentum(w, g, a, lr, mu, nesterov):
    """scratchnet/optimizers.py's Momentum.update, as written there."""
    a *= mu
    a += g
    if nesterov:
        w -= lr * (g + mu * a)
    else:
        w -= lr * a


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("nesterov", [False, True], ids=["plain", "nesterov"])
@pytest.mark.parametrize("kernel, rule", [("sgd_momentum_update", _sgd_momentum), ("momentum_update", _tf1_momentum)],
                         ids=["keras_sgd", "tf1_momentum"])
def test_the_momentum_kernels_equal_the_optimizers_expressions_bit_for_bit(cupy, ops, dtype, nesterov, kernel, rule):
    rng = np.random.default_rng(7)
    host, dev = _pair(cupy, rng, (33, 3), dtype, 3)
    for _ in range(2):
        rule(*host, 0.05, 0.9, nesterov)
        ops._update(kernel, dev[0], tuple(dev), (0.05, 0.9), (nesterov,))
    for name, want, got in zip(("w", "g", "slot"), host, dev):
        np.testing.assert_array_equal(got.get(), want, err_msg=name)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("l2", [0.0, 3e-2], ids=["no_l2", "l2"])
@pytest.mark.parametrize("with_shadow", [True, False], ids=["shadow", "no_shadow"])
def test_the_fused_sgd_l2_ema_update_is_one_kernel_and_sums_only_under_l2(cupy, ops, dtype, l2, with_shadow):
    rng = np.random.default_rng(5)
    host, dev = _pair(cupy, rng, (9, 4), dtype, 3)
    want_sum = REF.sgd_l2_ema_update(host[0], host[1], 0.1, l2, host[2] if with_shadow else None, 0.9)
    launches = cupy.stats["launches"]
    with cupy.count_syncs() as log:
        got_sum = ops.sgd_l2_ema_update(dev[0], dev[1], 0.1, l2, dev[2] if with_shadow else None, 0.9)
    assert cupy.stats["launches"] - launches == 1
    assert log.count == (1 if l2 else 0), log  # no L2, no reduction and no wait
    assert got_sum == pytest.approx(want_sum, rel=1e-12)
    for name, want, got in zip(("w", "g", "shadow"), host, dev):
        np.testing.assert_array_equal(got.get(), want, err_msg=name)


def test_a_non_contiguous_parameter_takes_the_reference_expressions(cupy, ops):
    rng = np.random.default_rng(6)
    w, g = rng.standard_normal((2, 6, 4)).astype(np.float32)
    wd, gd = cupy.asarray(w).T, cupy.asarray(g).T
    launches = cupy.stats["launches"]
    ops.scaled_add(wd, gd, 0.5)
    assert cupy.stats["launches"] == launches
    np.testing.assert_array_equal(wd.get(), (w + np.float32(0.5) * g).T)


@pytest.mark.parametrize("optimizer", [lambda: sn.optimizers.Adam(1e-2), lambda: sn.optimizers.SGD(0.1, momentum=0.9),
                                       lambda: sn.optimizers.Momentum(0.1, nesterov=True)],
                         ids=["adam", "sgd_momentum", "tf1_momentum"])
def test_each_optimizer_with_a_kernel_is_one_launch_per_parameter(cupy, ops, optimizer):
    model = sn.Sequential([sn.layers.Dense(4), sn.layers.Dense(2)])
    model.compile(optimizer(), sn.losses.MeanSquaredError())
    x, y = cupy.ones((5, 3), dtype=np.float32), cupy.zeros((5, 2), dtype=np.float32)
    model.train_on_batch(x, y)
    opt, params = model.optimizer, model.trainable_parameters
    for p in params:
        p.grad = cupy.full(p.value.shape, 0.5, dtype=p.value.dtype)
    launches = cupy.stats["launches"]
    opt.step(params)
    assert cupy.stats["launches"] - launches == len(params) == 4


# --- scratchnet/distributed/device.py and the CUDA-event clock -------------------


class _OneRank(sn.distributed.World):
    def allreduce(self, buf, what="allreduce"):
        buf *= 2  # stands in for a second rank holding the same values
        return buf


def test_host_staging_copies_out_reduces_on_the_host_and_copies_back(cupy):
    from scratchnet.distributed.device import HostStaged, device_allreduce

    buf = cupy.arange(10, dtype=np.float32)
    reduce = device_allreduce(_OneRank())  # the stand-in has no NCCL
    assert isinstance(reduce, HostStaged) and reduce.path == "host staging"
    with cupy.count_syncs() as log:
        out = reduce(buf)
    assert out is buf and log.count == 1
    np.testing.assert_array_equal(buf.get(), 2 * np.arange(10, dtype=np.float32))


def _fake_nccl(fail=False):
    nccl = types.ModuleType("cupy.cuda.nccl")
    nccl.NCCL_FLOAT32, nccl.NCCL_FLOAT64, nccl.NCCL_SUM = 7, 8, 0
    nccl.calls = []
    nccl.get_unique_id = lambda: (1, 2, 3)

    class NcclCommunicator:
        def __init__(self, size, uid, rank):
            if fail:
                raise RuntimeError("ncclInvalidUsage (two ranks on one GPU)")
            self.args = (size, uid, rank)

        def allReduce(self, send, recv, count, dtype, op, stream):
            nccl.calls.append((send, recv, count, dtype, op, stream))

    nccl.NcclCommunicator = NcclCommunicator
    return nccl


def test_nccl_reduces_in_place_on_the_current_stream_and_falls_back_to_the_host(cupy, monkeypatch, capsys):
    from scratchnet.distributed import device

    nccl = _fake_nccl()
    monkeypatch.setitem(sys.modules, "cupy.cuda.nccl", nccl)
    monkeypatch.setattr(cupy.cuda, "nccl", nccl, raising=False)
    reduce = device.device_allreduce(sn.distributed.World())
    assert isinstance(reduce, device.NcclAllreduce) and reduce.path == "NCCL"
    buf = cupy.ones(6, dtype=np.float64)
    with cupy.count_syncs() as log:
        assert reduce(buf) is buf
    assert log.count == 0
    assert nccl.calls == [(buf.data.ptr, buf.data.ptr, 6, nccl.NCCL_FLOAT64, nccl.NCCL_SUM,
                           cupy.cuda.get_current_stream().ptr)]
    with pytest.raises(ValueError, match="unsupported dtype int64"):
        reduce(cupy.ones(3, dtype=np.int64))
    failing = _fake_nccl(fail=True)
    monkeypatch.setitem(sys.modules, "cupy.cuda.nccl", failing)
    monkeypatch.setattr(cupy.cuda, "nccl", failing)
    assert isinstance(device.device_allreduce(sn.distributed.World()), device.HostStaged)
    assert "NCCL failed (ncclInvalidUsage" in capsys.readouterr().err


def test_choose_gpu_gives_each_local_rank_its_own_device(cupy, monkeypatch):
    from scratchnet.distributed import device

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    device.choose_gpu(1)  # CuPy is imported (the stand-in is): too late to choose
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    monkeypatch.delitem(sys.modules, "cupy")
    monkeypatch.setattr(device.os, "listdir", lambda path: ["0000:01:00.0", "0000:02:00.0", "0000:03:00.0"])
    device.choose_gpu(4)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"


def test_the_cuda_event_clock_waits_once_per_mark_it_reads(cupy, ops):
    from scratchnet.profiler.clocks import CudaClock, clock_for

    clock = clock_for("cupy")
    assert isinstance(clock, CudaClock)
    a = clock.mark()
    cupy.ones(1000).sum()
    b = clock.mark()
    with cupy.count_syncs() as log:
        clock.wait(b)
    assert log.by_kind() == {"Event.synchronize": 1}
    assert clock.seconds(a, b) >= 0


# --- bench/gpu_check.sh --------------------------------------------------------

STAGES = ["versions", "compile", "pytest-gpu", "parity", "torch-train", "ops", "sanitizer"]


def test_gpu_check_dry_run_runs_every_stage_on_the_stand_in(tmp_path):
    """The script the GPU machine runs, run here on the stand-in; its stage table is its report."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCRATCHNET_", "PYTEST_"))}
    env.update(OUT=str(tmp_path), PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--dry-run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = (tmp_path / "stages.txt").read_text()
    assert table in proc.stdout
    rows = {}
    for line in table.splitlines():
        m = re.match(r"^\s*(\d)\s+(\S+)\s+(ok|FAIL|skip|timeout)\s+(\d+)s", line)
        if m:
            rows[m.group(2)] = m.group(3)
    assert list(rows) == STAGES, table
    assert rows["versions"] == rows["compile"] == rows["parity"] == "ok", table
    assert all(status in ("ok", "skip") for status in rows.values()), table
    assert (tmp_path / "summary.txt").is_file()


def test_scatter_adds_are_ordered_by_default_and_atomic_only_when_asked(cupy, ops, monkeypatch):
    """Sorted scatter-adds give the reference's bits (resume equals uninterrupted); atomics only on request."""
    rng = np.random.default_rng(8)
    ids = rng.integers(0, 5, (6, 7))
    dy = rng.standard_normal((6, 7, 3)).astype(np.float32)
    x = rng.standard_normal((2, 6, 6, 2)).astype(np.float32)
    y, argmax = REF.max_pool2d_forward(x, 3, 3, 1, 1, (1, 1, 1, 1))
    dpool = rng.standard_normal(y.shape).astype(np.float32)
    want = (REF.embedding_backward(ids, dy, 5), REF.max_pool2d_backward(dpool, argmax, x.shape))

    def run():
        return (ops.embedding_backward(cupy.asarray(ids), cupy.asarray(dy), 5).get(),
                ops.max_pool2d_backward(cupy.asarray(dpool), cupy.asarray(argmax), x.shape).get())

    assert ops.atomic_scatter is False
    for got, w in zip(run(), want):
        np.testing.assert_array_equal(got, w)
    monkeypatch.setattr(ops, "atomic_scatter", True)
    for got, w in zip(run(), want):
        np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-6)
