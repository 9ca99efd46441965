"""The world: this process's rank among the processes ``mpiexec`` started, and how they talk.

:func:`world` returns it, connecting on first use:

- launched by ``mpiexec -n R`` (R > 1), it is an :class:`MPIWorld` over
  mpi4py's ``COMM_WORLD``;
- otherwise it is a :class:`World` of size 1, whose collectives return their
  input: no MPI, no mpi4py, no cost.

Whether a launcher started this process is read from the environment
variables launchers set (``PMI_SIZE`` for MPICH's Hydra and Intel MPI,
``OMPI_COMM_WORLD_SIZE`` for Open MPI, ...), *before* anything imports
mpi4py, so that a plain ``python train.py`` never loads MPI.
``SCRATCHNET_MPI=0`` ignores a launcher, ``SCRATCHNET_MPI=1`` connects
without one.

Joining an MPI world also does two things a data-parallel run needs:

- each rank takes its share of its machine's cores: it pins itself to them
  (:func:`.cores.take_cores`, unless the launcher bound it) and limits its
  BLAS (threadpoolctl) and Numba threads to their number (or to ``SCRATCHNET_THREADS``, else ``OMP_NUM_THREADS``), so 2 ranks
  on 2 cores run one thread each, each on its own core, instead of fighting
  over both;
- a rank that dies of an uncaught exception aborts the whole job
  (``MPI_Abort``) instead of leaving the others waiting in a collective.

Every collective of an :class:`MPIWorld` is non-blocking MPI polled against a
deadline (:mod:`.deadline`): a rank that does not arrive within
:attr:`World.timeout` seconds (300 by default; ``SCRATCHNET_MPI_TIMEOUT``,
:func:`set_timeout`) is named in one line and the job ends, and a SIGTERM
reaching a waiting rank ends the job within seconds. :meth:`World.agree`
checks at the start that every rank runs the same configuration
(:mod:`.agree`).
"""
from __future__ import annotations

import os
import pickle
import sys
import time

import numpy

from .agree import canonical, config_digest, describe_disagreement
from . import cores
from .cores import LAUNCHED_VARIABLES, SIZE_VARIABLES, launched_size  # noqa: F401  (the launchers' variables, named here too)
from .deadline import Waiter, check_timeout, timeout_from_environment
from .device import choose_gpu, device_allreduce
from .ring import ring_allreduce

_world = None
_timeout = None  # set_timeout's value; None: SCRATCHNET_MPI_TIMEOUT, else DEFAULT_TIMEOUT


class DistributedError(RuntimeError):
    """The process was launched for MPI but cannot join the world (mpi4py is missing, a bad setting)."""


class DisagreementError(DistributedError):
    """The ranks run different configurations (:meth:`World.agree`); the message names the keys and the ranks."""

    code = 2


def set_timeout(seconds):
    """Seconds any collective may wait for the last rank before the job is ended (default 300; ``inf``: never).

    Applies to the world already connected and to the one :func:`world`
    will connect. ``SCRATCHNET_MPI_TIMEOUT`` sets it from outside.
    """
    global _timeout
    _timeout = check_timeout(seconds)
    if _world is not None:
        _world.timeout = _timeout


def get_timeout():
    """The timeout a world connected now gets: :func:`set_timeout`'s, else ``SCRATCHNET_MPI_TIMEOUT``'s, else 300."""
    if _world is not None and _world.size > 1:
        return _world.timeout
    return _timeout if _timeout is not None else timeout_from_environment()


class World:
    """A world of one process: rank 0 of 1, every collective the identity.

    Attributes
    ----------
    rank, size : int
        This process's rank and the number of ranks.
    local_rank, local_size : int
        The same among the ranks on this machine.
    threads : int or None
        The threads each rank was limited to (None: not limited).
    timeout : float
        Seconds a collective may wait for the last rank (:func:`set_timeout`).
    step : int or None
        The training step under way, named when a collective times out
        (:class:`~scratchnet.distributed.DataParallel` sets it).

    Every collective takes ``what``, what it is for ("allreduce of
    gradients"), which a timeout names.
    """

    rank, size, local_rank, local_size, threads = 0, 1, 0, 1, None
    library = "no MPI"
    timeout = float("inf")
    step = None

    @property
    def is_root(self):
        """True on rank 0, the rank that writes files and prints."""
        return self.rank == 0

    def allreduce(self, buf, what="allreduce"):
        """Sum ``buf`` (a NumPy or CuPy array) over the ranks, in place; returns it."""
        return buf

    def allreduce_sum(self, values, what="allreduce"):
        """The sum over the ranks of a small float64 vector (a new NumPy array)."""
        return numpy.array(values, dtype=numpy.float64)

    def any(self, flag, what="agreement"):
        """True on every rank when ``flag`` is true on any."""
        return bool(flag)

    def bcast(self, obj, what="bcast"):
        """Rank 0's ``obj`` (any picklable object), on every rank."""
        return obj

    def gather(self, obj, what="gather"):
        """``[obj of rank 0, obj of rank 1, ...]`` on rank 0; None on the others."""
        return [obj]

    def allgather(self, obj, what="allgather"):
        """``[obj of rank 0, obj of rank 1, ...]`` on every rank."""
        return [obj]

    def barrier(self, what="barrier"):
        """Wait until every rank has come here."""

    def agree(self, config, what="the run's configuration"):
        """Check that every rank holds the same ``config``; raise :class:`DisagreementError` on every rank if not.

        ``config`` is a dict of JSON-able values (numpy scalars and arrays
        are accepted; use :func:`scratchnet.distributed.fingerprint` for
        data). The ranks compare SHA-256 digests; only when they differ do
        they exchange the configs, so that the error names each key that
        differs, its values and the ranks holding them. Returns the digest.
        Call it before the first step, after anything that could make one
        rank fail on its own (loading the data).
        """
        digest = config_digest(config)
        digests = self.allgather(digest, what=f"agreement on {what}")
        if len(set(digests)) > 1:
            configs = self.allgather(canonical(config), what=f"agreement on {what}")
            raise DisagreementError(describe_disagreement(configs, what))
        return digest

    def abort(self, code):
        """End every rank of the job with exit status ``code`` (a world of one: nothing to end)."""

    def describe(self, batch_size):
        """The line a run prints: ranks, the per-rank batch and threads."""
        per_rank = ", ".join(str(n) for n in sorted({(r + 1) * batch_size // self.size - r * batch_size // self.size
                                                      for r in range(self.size)}, reverse=True))
        threads = f"{self.threads} thread{'s' if self.threads != 1 else ''} per rank" if self.threads else "threads not limited"
        return (f"distributed: {self.size} rank{'s' if self.size != 1 else ''} ({self.library}), "
                f"global batch {batch_size} = {per_rank} per rank, {threads}")

    def __repr__(self):
        return f"<{type(self).__name__} rank {self.rank} of {self.size}>"


class MPIWorld(World):
    """The ranks of an MPI communicator (``COMM_WORLD`` by default), through mpi4py.

    Each collective is non-blocking MPI, polled by a :class:`~.deadline.Waiter`
    against ``timeout`` seconds (default: :func:`get_timeout`).
    """

    def __init__(self, comm=None, limit_threads=True, timeout=None):
        from mpi4py import MPI

        self.MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        local = self.comm.Split_type(MPI.COMM_TYPE_SHARED)
        self.local_rank, self.local_size = local.Get_rank(), local.Get_size()
        vendor, version = MPI.get_vendor()
        self.library = f"{vendor} {'.'.join(map(str, version))} through mpi4py {_mpi4py_version()}"
        local.Free()
        self.threads = cores.limit_threads(self.local_rank, self.local_size) if limit_threads else None
        choose_gpu(self.local_rank)
        self._ring = os.environ.get("SCRATCHNET_ALLREDUCE", "mpi") == "ring"
        self._device = None
        self.waiter = Waiter(self.comm, get_timeout() if timeout is None else timeout, self.abort)
        _abort_on_uncaught_exceptions(self)

    @property
    def timeout(self):
        """Seconds a collective may wait for the last rank."""
        return self.waiter.timeout

    @timeout.setter
    def timeout(self, seconds):
        self.waiter.timeout = check_timeout(seconds)

    @property
    def step(self):
        """The training step under way, named in a timeout's message."""
        return self.waiter.step

    @step.setter
    def step(self, step):
        self.waiter.step = step

    # Each collective: start it non-blocking, then wait (self.waiter.run) against the deadline.
    # Objects travel pickled, as bytes: first their lengths, then the bytes.

    def allreduce(self, buf, what="allreduce"):
        if not isinstance(buf, numpy.ndarray):
            if self._device is None:
                self._device = device_allreduce(self)
            if self._device.path == "NCCL":  # NCCL's own wait has no deadline: check that every rank is there first
                self.barrier(what=f"arrival at the {what} (NCCL)")
            return self._device(buf)
        if self._ring:
            self.waiter.begin(what)
            buf[...] = ring_allreduce(self.comm, buf, wait=self.waiter.wait)
        else:
            self.waiter.run(what, lambda: self.comm.Iallreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM))
        return buf

    def allreduce_sum(self, values, what="allreduce"):
        buf = numpy.array(values, dtype=numpy.float64)
        self.waiter.run(what, lambda: self.comm.Iallreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM))
        return buf

    def any(self, flag, what="agreement"):
        buf = numpy.array([1 if flag else 0], dtype=numpy.int32)
        self.waiter.run(what, lambda: self.comm.Iallreduce(self.MPI.IN_PLACE, buf, op=self.MPI.MAX))
        return bool(buf[0])

    def bcast(self, obj, what="bcast"):
        data = bytearray(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)) if self.is_root else bytearray()
        length = numpy.array([len(data)], dtype=numpy.int64)
        self.waiter.run(what, lambda: self.comm.Ibcast(length, root=0))
        if not self.is_root:
            data = bytearray(int(length[0]))
        self.waiter.run(what, lambda: self.comm.Ibcast(data, root=0))
        return obj if self.is_root else pickle.loads(data)

    def gather(self, obj, what="gather"):
        data = bytearray(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
        length = numpy.array([len(data)], dtype=numpy.int64)
        lengths = numpy.zeros(self.size, dtype=numpy.int64)
        self.waiter.run(what, lambda: self.comm.Igather(length, lengths if self.is_root else None, root=0))
        received = bytearray(int(lengths.sum()))
        offsets = numpy.concatenate([[0], numpy.cumsum(lengths)[:-1]])
        into = [received, (lengths.tolist(), offsets.tolist()), self.MPI.BYTE] if self.is_root else None
        self.waiter.run(what, lambda: self.comm.Igatherv(data, into, root=0))
        if not self.is_root:
            return None
        return [pickle.loads(received[o:o + n]) for o, n in zip(offsets, lengths)]

    def allgather(self, obj, what="allgather"):
        data = bytearray(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
        length = numpy.array([len(data)], dtype=numpy.int64)
        lengths = numpy.zeros(self.size, dtype=numpy.int64)
        self.waiter.run(what, lambda: self.comm.Iallgather(length, lengths))
        received = bytearray(int(lengths.sum()))
        offsets = numpy.concatenate([[0], numpy.cumsum(lengths)[:-1]])
        into = [received, (lengths.tolist(), offsets.tolist()), self.MPI.BYTE]
        self.waiter.run(what, lambda: self.comm.Iallgatherv(data, into))
        return [pickle.loads(received[o:o + n]) for o, n in zip(offsets, lengths)]

    def barrier(self, what="barrier"):
        self.waiter.run(what, self.comm.Ibarrier)

    def abort(self, code):
        sys.stdout.flush()
        sys.stderr.flush()
        # mpiexec's proxy reads a rank's output on its own schedule: an Abort right after the rank wrote why it
        # ends the job can tear the job down before that line is forwarded (seen on a loaded 2-core machine:
        # status 1 and no message). A moment's grace lets it through; the job is ending anyway.
        time.sleep(ABORT_GRACE_S)
        self.comm.Abort(int(code))
        os._exit(int(code))  # MPICH's Abort can return (when another rank has finalized already): end this one anyway


#: Seconds between a rank's last words and its ``MPI_Abort`` (:meth:`MPIWorld.abort`).
ABORT_GRACE_S = 0.3


def world():
    """This process's :class:`World`: an :class:`MPIWorld` under ``mpiexec -n R`` (R > 1), else a world of one."""
    global _world
    if _world is None:
        _world = _connect()
    return _world


def rank():
    """This process's rank (0 outside ``mpiexec``)."""
    return world().rank


def world_size():
    """The number of ranks (1 outside ``mpiexec``)."""
    return world().size


def current_world():
    """The world if :func:`world` has connected already, else None (never connects)."""
    return _world


def _connect():
    size = launched_size()
    if size == 1:
        return World()
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        raise DistributedError(
            f"this process was launched by an MPI launcher ({size or 'several'} ranks) but mpi4py is not installed; "
            "pip install 'scratchnet[mpi]', or set SCRATCHNET_MPI=0 to run each process on its own"
        ) from None
    try:
        timeout = get_timeout()
    except ValueError as e:
        raise DistributedError(str(e)) from None
    return MPIWorld(timeout=timeout)


def _mpi4py_version():
    import mpi4py

    return mpi4py.__version__


def _abort_on_uncaught_exceptions(w):
    previous = sys.excepthook

    def hook(kind, value, traceback):
        previous(kind, value, traceback)
        print(f"rank {w.rank} of {w.size} failed; aborting the job", file=sys.stderr)
        w.abort(1)

    sys.excepthook = hook
