"""The wheel ships everything a checkout has: the Python packages and the CUDA sources."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Where each package's files live in the checkout, and in the wheel.
PACKAGE_DIRS = {"scratchnet": "scratchnet", "kernels": "scratchnet/kernels"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """A wheel built offline from a copy of the checkout (the checkout gets no build/ or egg-info)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, src)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so", "*.nbi", "*.nbc")
    for folder in PACKAGE_DIRS:
        shutil.copytree(ROOT / folder, src / folder, ignore=ignore)
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
           "-w", str(tmp / "dist"), str(src)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = (tmp / "dist").glob("scratchnet-*.whl")
    return path


def test_wheel_contains_the_cuda_sources_and_the_backends(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    cu = {f"scratchnet/kernels/cuda/{p.name}" for p in (ROOT / "kernels" / "cuda").glob("*.cu")}
    assert cu, "the checkout has no kernels/cuda/*.cu"
    assert cu <= names, f"missing from the wheel: {sorted(cu - names)}"
    for name in ("scratchnet/kernels/cuda/common.cuh", "scratchnet/kernels/numba/backend.py",
                 "scratchnet/kernels/cuda/backend.py", "scratchnet/kernels/cuda/compiler.py",
                 "scratchnet/ops/reference.py", "scratchnet/ops/conv.py"):
        assert name in names, f"{name} is missing from the wheel"


def test_wheel_contains_every_python_file_of_the_checkout(wheel):
    # A subpackage left out of pyproject's package list is silently dropped
    # from the wheel, and only an installed user would notice.
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = set()
    for folder, target in PACKAGE_DIRS.items():
        for path in (ROOT / folder).rglob("*.py"):
            if "__pycache__" not in path.parts:
                expected.add(f"{target}/{path.relative_to(ROOT / folder).as_posix()}")
    assert expected <= names, f"missing from the wheel: {sorted(expected - names)}"


def test_cuda_loader_finds_its_sources_inside_an_unpacked_wheel(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import json, scratchnet.kernels.cuda.compiler as c\n"
        "print(json.dumps({'file': c.__file__, 'dir': str(c.kernel_dir()),\n"
        "                  'sources': [p.name for p in c.source_files()],\n"
        "                  'header': c.kernel_source(c.source_path('conv')).splitlines()[0]}))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(site))
    # Run from the temporary folder so the checkout is not on the path.
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    installed = site / "scratchnet" / "kernels" / "cuda"
    assert Path(found["file"]).parent == installed, "the wheel's copy was not the one imported"
    assert Path(found["dir"]) == installed
    assert found["sources"] == sorted(p.name for p in (ROOT / "kernels" / "cuda").glob("*.cu"))
    assert found["header"] == '#line 1 "kernels/cuda/conv.cu"'
