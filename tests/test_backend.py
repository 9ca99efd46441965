"""The backend abstraction: selection, isolation, the kernel contract, and imports that point one way."""
from __future__ import annotations

import ast
import importlib
import inspect
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import scratchnet as sn
from scratchnet.backend import BACKEND_NAMES, BackendUnavailable, cupy_unavailable_reason
from scratchnet.ops.contract import Ops
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


# --- the contract: scratchnet/ops/contract.py -------------------------------


def _contract():
    """name -> function for every kernel the contract lists (its methods, the ``_refuse_foreign`` hook included)."""
    return {name: f for name, f in vars(Ops).items() if inspect.isfunction(f)}


def _public_methods(cls):
    return {name for name, _ in inspect.getmembers(cls, inspect.isfunction) if not name.startswith("_")}


def _overrides(cls):
    """(name, override, contract) for every kernel that ``cls`` redefines on top of the reference."""
    for name, declared in _contract().items():
        impl = inspect.getattr_static(cls, name)
        if impl is not inspect.getattr_static(ReferenceOps, name):
            yield name, impl, declared


@pytest.fixture(scope="module")
def cupy_ops_class():
    """``CupyOps``, imported with a stand-in ``cupy`` module where CuPy is not installed.

    Only its methods' signatures are read, so no array module is needed.
    """
    if cupy_unavailable_reason() is None:
        from scratchnet.kernels.cuda.backend import CupyOps

        return CupyOps
    package = importlib.import_module("scratchnet.kernels.cuda")
    previous = getattr(package, "backend", None)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "cupy", types.ModuleType("cupy"))
        mp.delitem(sys.modules, "scratchnet.kernels.cuda.backend", raising=False)
        module = importlib.import_module("scratchnet.kernels.cuda.backend")
    # sys.modules is restored by the monkeypatch, the package attribute here.
    if previous is None:
        delattr(package, "backend")
    else:
        package.backend = previous
    return module.CupyOps


def test_the_contract_lists_every_kernel_the_ops_call():
    ops_dir = Path(sn.ops.__file__).parent
    called = set()
    for path in [*ops_dir.glob("*.py"), ops_dir.parent / "_checks.py"]:
        called |= set(re.findall(r"\bbe\.([A-Za-z_]\w*)\(", path.read_text()))
    assert called, "found no backend call in scratchnet/ops"
    missing = called - set(_contract())
    assert not missing, f"called on a backend but not in the contract: {sorted(missing)}"


def test_the_reference_implements_every_kernel_of_the_contract_with_its_signature():
    assert issubclass(ReferenceOps, Ops)
    for name, declared in _contract().items():
        impl = inspect.getattr_static(ReferenceOps, name)
        assert impl is not declared, f"ReferenceOps does not implement {name}"
        assert inspect.signature(impl) == inspect.signature(declared), f"ReferenceOps.{name} changes the signature"


def test_numba_overrides_keep_the_contract_signatures():
    from scratchnet.kernels.numba.backend import NumbaOps

    overridden = list(_overrides(NumbaOps))
    assert overridden, "the numba backend overrides no kernel"
    for name, impl, declared in overridden:
        assert inspect.signature(impl) == inspect.signature(declared), f"NumbaOps.{name} changes the signature"


def test_cupy_overrides_keep_the_contract_signatures(cupy_ops_class):
    overridden = list(_overrides(cupy_ops_class))
    assert overridden, "the cupy backend overrides no kernel"
    for name, impl, declared in overridden:
        assert inspect.signature(impl) == inspect.signature(declared), f"CupyOps.{name} changes the signature"


def test_every_backend_kernel_is_declared_by_the_contract(cupy_ops_class):
    from scratchnet.kernels.numba.backend import NumbaOps

    from scratchnet.ops.contract import OPTIONAL_KERNELS

    declared = set(_contract()) | set(OPTIONAL_KERNELS)
    assert not set(OPTIONAL_KERNELS) & set(_contract()), "an optional kernel is also in the contract"
    for cls in (ReferenceOps, NumbaOps, cupy_ops_class):
        extra = _public_methods(cls) - declared
        assert not extra, f"{cls.__name__} has kernels the contract does not list: {sorted(extra)}"


# --- imports point one way --------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def _module_name(path):
    """``scratchnet.ops.conv`` for scratchnet/ops/conv.py, ``scratchnet.kernels.cuda.backend`` for kernels/cuda/backend.py."""
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "kernels":
        parts = ["scratchnet", *parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path, modules):
    """The modules of ``modules`` that ``path`` imports anywhere, inside functions too."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from a import b`` imports a, and a.b when b is a module.
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        found |= {t for t in targets if t in modules}
    found.discard(name)
    return found


def test_backend_and_ops_import_each_other_in_one_direction_only():
    # Every import counts, the ones inside functions too: a lazy import that
    # closes a circle only hides it.
    files = [ROOT / "scratchnet" / "backend.py", ROOT / "scratchnet" / "_checks.py",
             *(ROOT / "scratchnet" / "ops").glob("*.py"), *(ROOT / "kernels").rglob("*.py")]
    modules = {_module_name(p): p for p in files}
    graph = {name: _imports(path, modules) for name, path in modules.items()}
    assert graph["scratchnet.backend"] == set(), "scratchnet/backend.py must import nothing from scratchnet"
    assert graph["scratchnet.ops.shapes"] == set()
    state = {}

    def visit(name, trail):
        state[name] = "open"
        for dep in sorted(graph[name]):
            assert state.get(dep) != "open", f"import circle: {' -> '.join([*trail, name, dep])}"
            if dep not in state:
                visit(dep, [*trail, name])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_importing_scratchnet_registers_every_backend():
    out = _run_python("import scratchnet.backend as b; print(sorted(b.FACTORIES))")
    assert out.strip() == str(sorted(BACKEND_NAMES))


def test_a_cupy_array_on_a_cpu_backend_is_an_error():
    class FakeCupyArray:  # stands in for cupy.ndarray: only its module name matters
        pass

    FakeCupyArray.__module__ = "cupy._core.core"
    with sn.use_backend("numpy"):
        with pytest.raises(ValueError, match="dense: x is a CuPy array but the backend is 'numpy'"):
            sn.ops.dense(FakeCupyArray(), np.ones((2, 2), np.float32))
