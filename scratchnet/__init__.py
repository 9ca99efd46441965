"""scratchnet: a from-scratch deep learning engine on NumPy, Numba and CuPy.

Every layer's forward and backward pass is written by hand and checked
against TensorFlow. ``import scratchnet`` loads the ops (NumPy only) and
registers the backends; it imports neither Numba, CuPy, TensorFlow nor mpi4py
and compiles nothing. The other submodules load on first use.

Where things are: the Layout page (``docs/engineering/layout.md``) names the one file to open for
each change.
"""
from __future__ import annotations

import importlib
import os as _os
import signal as _signal
import sys as _sys

# --- where scratchnet.kernels is found (kernels/__init__.py) ------------------------------------------
# A wheel installs the top-level kernels/ folder as scratchnet/kernels/ (pyproject.toml's package-dir).
# A plain checkout on PYTHONPATH has it beside this folder instead; there the package's search path also
# takes in the checkout's root, so that ``import scratchnet.kernels...`` finds <checkout>/kernels as the
# import system finds any subpackage. Where scratchnet/kernels/ exists, nothing changes.
_checkout = _os.path.dirname(__path__[0])
if not _os.path.isdir(_os.path.join(__path__[0], "kernels")) and _os.path.isfile(
        _os.path.join(_checkout, "kernels", "numba", "backend.py")):
    __path__.append(_checkout)
del _checkout
# --- end of where scratchnet.kernels is found ----------------------------------------------------------


def _interrupted_while_loading(signum, frame):
    """Ctrl-C while the ``scratchnet`` command is still loading: one line and exit 130, nothing written yet."""
    _sys.stderr.write("scratchnet: interrupted while starting; nothing was written\n")
    _os._exit(130)


def _started_as_the_command():
    """True when this process is the ``scratchnet`` command (the console script or ``python -m scratchnet``)."""
    argv = list(getattr(_sys, "orig_argv", ()))
    if "-m" in argv:
        return argv[argv.index("-m") + 1:argv.index("-m") + 2] == ["scratchnet"]
    return bool(_sys.argv) and _os.path.basename(_sys.argv[0]) == "scratchnet"


# Importing scratchnet changes no process state: no signal handler, no
# environment variable, no CPU affinity (a rank under mpiexec pins itself to
# its cores by an explicit call, scratchnet.distributed.pin_cores(), which the
# command's MPI path makes). The one exception below is not a library's: it
# applies only when this process *is* the ``scratchnet`` command (the console
# script or ``python -m scratchnet``), whose process is its own. A Ctrl-C in
# its first moments (while NumPy and the backends load) would print a
# traceback from inside an import; it ends the command quietly instead, and
# ``cli.main`` gives Python's handler back as soon as it can handle the
# interrupt itself. Imported as a library, nothing changes.
if _started_as_the_command() and _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler:
    _signal.signal(_signal.SIGINT, _interrupted_while_loading)

from .backend import available_backends, get_backend, to_numpy, use_backend  # noqa: E402  (after the handler)
from .ops import backends as _backends  # noqa: F401, E402  (registers the numpy, numba and cupy backends)

__version__ = "0.1.0"

# Submodules and names loaded on first attribute access (PEP 562), so that
# importing the package stays fast.
_LAZY_MODULES = {
    "ops", "layers", "losses", "metrics", "optimizers", "schedules", "regularizers", "initializers",
    "checkpoint", "callbacks", "interop", "data", "zoo", "random", "export", "training", "gradcheck",
    "serialization", "parameters", "dtypes", "archive", "summary", "graph", "image_grid", "model", "exercises", "profiler",
    "distributed",
}
_LAZY_NAMES = {
    "Layer": "scratchnet.layers",
    "Sequential": "scratchnet.model",
    "Model": "scratchnet.model",
    "Input": "scratchnet.model",
    "Parameter": "scratchnet.parameters",
    "ParameterStore": "scratchnet.parameters",
    "floatx": "scratchnet.dtypes",
    "set_floatx": "scratchnet.dtypes",
    "ExponentialMovingAverage": "scratchnet.ema",
    "Checkpoint": "scratchnet.checkpoint",
    "latest_checkpoint": "scratchnet.checkpoint",
    "profile": "scratchnet.profiler",
    "conv_algorithm": "scratchnet._config",
    "get_conv_algorithm": "scratchnet._config",
    "NonFiniteError": "scratchnet.training",
}

__all__ = ["available_backends", "get_backend", "to_numpy", "use_backend", *sorted(_LAZY_MODULES), *_LAZY_NAMES]


def __getattr__(name):
    if name in _LAZY_MODULES:
        module = importlib.import_module(f"scratchnet.{name}")
        globals()[name] = module
        return module
    if name in _LAZY_NAMES:
        value = getattr(importlib.import_module(_LAZY_NAMES[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'scratchnet' has no attribute {name!r}")
