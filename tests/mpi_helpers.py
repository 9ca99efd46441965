"""What the MPI tests share: a clean environment for a child, a run that cannot hang, and ``mpiexec``.

Every run has a timeout, so a hang fails the test instead of waiting; the
MPI tests need mpi4py and mpiexec (``pip install 'scratchnet[mpi]'``, which
``make test`` does): in CI their absence is a failure, elsewhere a skip.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys

import pytest


def launcher_free_env(**extra):
    """This environment without the variables that would make a child think mpiexec launched it."""
    from scratchnet.distributed.world import LAUNCHED_VARIABLES, SIZE_VARIABLES

    env = {k: v for k, v in os.environ.items()
           if k not in LAUNCHED_VARIABLES + SIZE_VARIABLES and k not in ("SCRATCHNET_MPI", "SCRATCHNET_MPI_TIMEOUT")}
    env.update(extra)
    return env


def run(cmd, timeout, env=None, cwd=None):
    """Run ``cmd``; a run past ``timeout`` is killed, with its whole process group, and fails the test."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd,
                            env=env or launcher_free_env(), start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"hung: {' '.join(cmd)} ran past {timeout} s\n{out[-3000:]}")
    return proc.returncode, out


def find_mpiexec():
    """The ``mpiexec`` beside this Python (the mpich wheel puts it there), with mpi4py importable."""
    exe = shutil.which("mpiexec", path=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]))
    missing = [name for name, ok in (("mpi4py", importlib.util.find_spec("mpi4py") is not None),
                                     ("mpiexec", exe is not None)) if not ok]
    if missing:
        reason = f"{' and '.join(missing)} not installed; pip install 'scratchnet[mpi]' (make test does)"
        if os.environ.get("CI"):
            pytest.fail(f"the MPI tests are required in CI: {reason}")
        pytest.skip(reason)
    return exe
