"""The backend abstraction: selection, isolation and the kernel-override contract."""
from __future__ import annotations

import inspect
import os
import subprocess
import sys

import numpy as np
import pytest

import scratchnet as sn
from scratchnet.backend import BackendUnavailable, cupy_unavailable_reason
from scratchnet.ops.reference import ReferenceOps


def test_use_backend_as_a_call_switches_the_backend():
    before = sn.get_backend()
    try:
        sn.use_backend("numpy")
        assert sn.get_backend().name == "numpy"
    finally:
        sn.use_backend(before.name)


def test_use_backend_as_a_context_manager_restores_the_previous_backend():
    with sn.use_backend("numpy") as outer:
        assert outer.name == "numpy"
        with sn.use_backend("numba") as inner:
            assert inner.name == "numba" and sn.get_backend().name == "numba"
        assert sn.get_backend().name == "numpy"


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown backend 'tpu'"):
        sn.use_backend("tpu")


@pytest.mark.skipif(cupy_unavailable_reason() is None, reason="a GPU is present, so cupy can be selected")
def test_asking_for_cupy_without_a_gpu_says_why():
    with pytest.raises(BackendUnavailable, match="backend 'cupy' cannot run here: "):
        sn.use_backend("cupy")


def test_auto_prefers_numba_on_a_cpu_only_machine():
    expected = "cupy" if cupy_unavailable_reason() is None else "numba"
    with sn.use_backend("auto") as be:
        assert be.name == expected


def _run_python(code, **env):
    full_env = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, check=True).stdout


def test_environment_variable_sets_the_default_backend():
    out = _run_python("import scratchnet as sn; print(sn.get_backend().name)", SCRATCHNET_BACKEND="numpy")
    assert out.strip() == "numpy"


def test_import_is_light_and_compiles_nothing():
    code = (
        "import sys, time; t = time.perf_counter(); import scratchnet; dt = time.perf_counter() - t;"
        "heavy = [m for m in ('tensorflow', 'cupy', 'numba', 'torch', 'keras') if m in sys.modules];"
        "print(dt); print(heavy)"
    )
    dt, heavy = _run_python(code).splitlines()
    assert heavy == "[]"
    assert float(dt) < 1.0


def test_to_numpy_returns_a_host_copy():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = sn.to_numpy(a)
    b[0, 0] = 99
    assert a[0, 0] == 0 and isinstance(b, np.ndarray)


def _overrides(cls):
    """(name, override, reference) for every reference kernel that ``cls`` redefines."""
    for name, ref in inspect.getmembers(ReferenceOps, inspect.isfunction):
        if name.startswith("_"):
            continue
        impl = inspect.getattr_static(cls, name)
        if impl is not inspect.getattr_static(ReferenceOps, name):
            yield name, impl, ref


def test_numba_overrides_keep_the_reference_signatures():
    from scratchnet.kernels.numba_ops import NumbaOps

    overridden = list(_overrides(NumbaOps))
    assert overridden, "the numba backend overrides no kernel"
    for name, impl, ref in overridden:
        assert inspect.signature(impl) == inspect.signature(ref), f"NumbaOps.{name} changes the signature"


def test_every_backend_kernel_is_declared_by_the_reference():
    from scratchnet.kernels.numba_ops import NumbaOps

    reference = {n for n, _ in inspect.getmembers(ReferenceOps, inspect.isfunction) if not n.startswith("_")}
    for name, member in inspect.getmembers(NumbaOps, inspect.isfunction):
        if not name.startswith("_"):
            assert name in reference, f"NumbaOps.{name} is not a reference kernel"


def test_a_cupy_array_on_a_cpu_backend_is_an_error():
    class FakeCupyArray:  # stands in for cupy.ndarray: only its module name matters
        pass

    FakeCupyArray.__module__ = "cupy._core.core"
    with sn.use_backend("numpy"):
        with pytest.raises(ValueError, match="dense: x is a CuPy array but the backend is 'numpy'"):
            sn.ops.dense(FakeCupyArray(), np.ones((2, 2), np.float32))
