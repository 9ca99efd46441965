"""A plain checkout works with nothing installed: ``PYTHONPATH=. python`` finds the Numba and CUDA kernels.

In a checkout the kernels sit in the top-level ``kernels/`` folder, which only
an install maps onto ``scratchnet.kernels``; ``scratchnet/__init__.py``
makes the same name work without one (the checkout joins ``scratchnet.__path__``).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CODE = r"""
import json, sys
import numpy as np
import scratchnet as sn
import scratchnet.kernels.cuda.compiler as cuda

rng = np.random.default_rng(0)
x = rng.standard_normal((3, 7, 6, 2))
w = rng.standard_normal((3, 3, 2, 4))
b = rng.standard_normal(4)
results, dy = {}, None
for name in ("numpy", "numba"):
    with sn.use_backend(name) as be:
        y, backprop = sn.ops.conv2d(x, w, b, strides=2, padding="SAME")
        if dy is None:
            dy = rng.standard_normal(y.shape)
        results[name] = [y, *backprop(dy)]
        results[name + " class"] = type(be).__module__ + "." + type(be).__name__
print(json.dumps({
    "scratchnet": sn.__file__,
    "kernels": sys.modules["scratchnet.kernels"].__file__,
    "numba_backend": sys.modules["scratchnet.kernels.numba.backend"].__file__,
    "cuda_sources": [p.name for p in cuda.source_files()],
    "numba class": results["numba class"],
    "max_diff": [float(np.max(np.abs(a - r))) for a, r in zip(results["numba"], results["numpy"])],
    "scale": [float(np.max(np.abs(r))) for r in results["numpy"]],
}))
"""


def test_numba_backend_and_cuda_sources_load_from_a_plain_checkout(tmp_path):
    checkout = tmp_path / "checkout"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc")
    for folder in ("scratchnet", "kernels"):
        shutil.copytree(ROOT / folder, checkout / folder, ignore=ignore)
    # -S skips site, so the editable install's finder (a .pth file) is never
    # installed; the third-party packages come from PYTHONPATH instead.
    paths = sysconfig.get_paths()
    site = dict.fromkeys([paths["purelib"], paths["platlib"]])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(checkout), *site]))
    env.pop("SCRATCHNET_BACKEND", None)
    proc = subprocess.run(
        [sys.executable, "-S", "-c", CODE], capture_output=True, text=True, env=env, cwd=checkout
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])

    # The copy was imported, not the checkout this test lives in.
    assert Path(found["scratchnet"]) == checkout / "scratchnet" / "__init__.py"
    assert Path(found["kernels"]) == checkout / "kernels" / "__init__.py"
    assert Path(found["numba_backend"]) == checkout / "kernels" / "numba" / "backend.py"
    assert found["numba class"] == "scratchnet.kernels.numba.backend.NumbaOps"
    assert found["cuda_sources"] == sorted(p.name for p in (ROOT / "kernels" / "cuda").glob("*.cu"))
    # y, dx, dw, db of the Numba kernels against the reference, in float64.
    for diff, scale, name in zip(found["max_diff"], found["scale"], ("y", "dx", "dw", "db")):
        assert diff <= 1e-12 * max(scale, 1.0), f"{name}: numba differs from numpy by {diff}"
