"""The launcher's variables, and this rank's share of its machine's cores.

Whether a launcher started this process (:func:`launched_size`) and which of
the ranks on this machine it is (:func:`local_ranks_from_environment`) are
read from the environment variables launchers set, before anything imports
mpi4py. Pinning a rank to its cores is an explicit call (:func:`pin_cores`),
never a side effect of ``import scratchnet``.
"""
from __future__ import annotations

import os
import sys

#: Variables by which launchers tell a process the size of its world.
SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "SLURM_NTASKS")
#: Variables only a launched process has (``SLURM_NTASKS`` is set in a whole batch job, not only under srun).
LAUNCHED_VARIABLES = ("PMI_RANK", "PMI_FD", "PMI_PORT", "PMIX_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")


def launched_size():
    """The world size the launcher announced: an int, None when launched without saying, 1 when not launched."""
    forced = os.environ.get("SCRATCHNET_MPI", "").strip().lower()
    if forced in ("0", "no", "off", "false"):
        return 1
    launched = forced in ("1", "yes", "on", "true") or any(v in os.environ for v in LAUNCHED_VARIABLES)
    if not launched:
        return 1
    for variable in SIZE_VARIABLES:
        if os.environ.get(variable, "").isdigit():
            return int(os.environ[variable])
    return None


#: ``(local rank, local size)`` variables of launchers: the ranks on this machine.
LOCAL_VARIABLES = (("MPI_LOCALRANKID", "MPI_LOCALNRANKS"), ("OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"),
                   ("MV2_COMM_WORLD_LOCAL_RANK", "MV2_COMM_WORLD_LOCAL_SIZE"))


def pin_cores():
    """Under an MPI launcher, pin this process to its rank's share of the machine's cores; returns how many it has.

    An explicit call, never a side effect of ``import scratchnet``: the
    ``scratchnet`` command's MPI path makes it first thing, and so does
    :func:`scratchnet.distributed.world` when it joins an MPI world (through :func:`take_cores`).
    A script of your own launched by ``mpiexec`` calls it before it starts
    work, so that its kernels' threads start on its own cores. Outside a
    launcher, or with incomplete launcher variables, it changes nothing and
    returns None; it never raises.
    """
    return take_cores()


def take_cores(local_rank=None, local_size=None):
    """Pin this rank to its share of its machine's cores; returns how many it has (None: not launched).

    :func:`pin_cores` calls it; the ranks on this machine come from the launcher's
    variables (:data:`LOCAL_VARIABLES`) unless given. When the launcher did
    not bind the ranks (this process may run where its parent, the launcher's
    proxy, may), rank ``i`` of ``L`` takes the ``i``-th of ``L`` equal parts
    of those cores, so that nothing of it (BLAS, Numba, threads of its own)
    runs on another rank's. A launcher that bound the ranks (``-bind-to
    core``) is left as it is, and so is a machine with fewer cores than
    ranks. ``SCRATCHNET_BIND=0`` never pins.

    It never raises: variables that are incomplete or inconsistent (another
    launcher's ``MPI_LOCALNRANKS`` without ``MPI_LOCALRANKID``, a rank not
    below the size) pin nothing, and neither does a refused ``sched_setaffinity``.
    """
    if local_size is None:
        if launched_size() == 1:
            return None
        found = local_ranks_from_environment()
        if found is None:
            return None
        local_rank, local_size = found
    if not 0 <= local_rank < local_size:
        return None
    if not hasattr(os, "sched_getaffinity"):
        return max(1, (os.cpu_count() or 1) // local_size)
    usable = sorted(os.sched_getaffinity(0))
    try:
        bound = usable != sorted(os.sched_getaffinity(os.getppid()))
    except OSError:
        bound = False
    if bound:
        return len(usable)
    if len(usable) < local_size:
        return 1
    mine = usable[local_rank * len(usable) // local_size:(local_rank + 1) * len(usable) // local_size]
    if os.environ.get("SCRATCHNET_BIND", "1") != "0":
        try:
            os.sched_setaffinity(0, mine)
        except OSError:  # a container or a cgroup that forbids it: run unpinned, with this rank's number of threads
            pass
    return len(mine)


def local_ranks_from_environment():
    """``(local rank, local size)`` from the first launcher whose two variables are both set and consistent, else None.

    Consistent: both whole numbers, the rank below the size, the size no
    larger than the world the launcher announced.
    """
    world_size = launched_size()
    for rank_variable, size_variable in LOCAL_VARIABLES:
        local_rank, local_size = _whole(os.environ.get(rank_variable)), _whole(os.environ.get(size_variable))
        if local_rank is None or local_size is None or local_rank >= local_size:
            continue
        if world_size is not None and world_size > 1 and local_size > world_size:
            continue
        return local_rank, local_size
    return None


def _whole(text):
    """``text`` as a whole number >= 0 (ASCII digits only), else None."""
    text = (text or "").strip()
    return int(text) if text.isascii() and text.isdigit() else None


def limit_threads(local_rank, local_size):
    """Limit BLAS and Numba to this rank's share of the cores; returns the number of threads."""
    share = take_cores(local_rank, local_size)
    threads = os.environ.get("SCRATCHNET_THREADS") or os.environ.get("OMP_NUM_THREADS")
    n = _whole(threads) or share or 1
    if "numba" in sys.modules:
        import numba

        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    else:
        os.environ["NUMBA_NUM_THREADS"] = str(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # the BLAS keeps its threads; the mpi extra installs threadpoolctl
        return n
    threadpool_limits(limits=n)
    return n
