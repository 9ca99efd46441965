"""Both cores on one op: the batch split into one part per core, each part on its own thread.

An op whose batch rows are independent (the images of a convolution, the
sequences of an LSTM) runs :func:`split`: the rows are cut into one
contiguous part per core, and each part runs the whole op, its copies and its
GEMMs, on whichever thread takes it first (the caller takes the parts a
late worker has not started: :class:`_Job`), with a one-thread BLAS for the duration
(``blas.single_threaded``, in ``kernels/runtime/blas.py``, which owns the
BLAS and its thread count). Nothing is shared between the parts but the
read-only inputs; a part writes only its own rows of the outputs, and sums
over the batch (a weight gradient) are returned per part and added by the
caller. The kernels the parts call are ``nogil`` Numba functions and NumPy
calls, which release the GIL, so the parts do run at the same time; the
Python between them is a few calls per chunk or per time step.

Why not ``parallel=True`` or the BLAS's own threads: a Numba thread pool
woken between BLAS calls fights the BLAS's threads for the same cores, and a
multi-threaded BLAS call on a thin GEMM keeps the cores waiting on each
other while the copies around it run on one core only (the measurements are
in ``bench/RESULTS.md``, "Kernel design notes").

Where OpenBLAS's thread count cannot be set (another BLAS, another OS)
:func:`split` runs the parts one after the other, which computes the same
thing.
"""
from __future__ import annotations

import os
import threading

import numpy

from . import blas


def _affinity():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


_CORES = _affinity()


def cores():
    """CPUs this process may run on (its affinity mask when this module was imported)."""
    return _CORES


_workers = []
_lock = threading.Lock()  # one split at a time: the BLAS thread count is global


#: Polls of a flag before a thread blocks: some half a millisecond (a poll is an x86 ``pause``, ~40-140 cycles).
SPIN_POLLS = 10000
_spin = None


def _make_spin():
    """``spin(flag, polls)``: poll ``flag[0]`` until it is set or ``polls`` polls have passed, without the GIL.

    Each poll is an atomic (acquire) load, which LLVM may not hoist out of the
    loop, and a ``pause`` (``llvm.x86.sse2.pause``, the x86 spin-wait hint)
    between two polls.
    """
    from llvmlite import ir
    from numba import njit, types
    from numba.core import cgutils
    from numba.extending import intrinsic

    @intrinsic
    def pause(typingctx):
        def codegen(context, builder, signature, args):
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause")
            builder.call(fn, [])
            return context.get_dummy_value()

        return types.void(), codegen

    @intrinsic
    def load_acquire(typingctx, flag):
        def codegen(context, builder, signature, args):
            array = context.make_array(signature.args[0])(context, builder, args[0])
            return builder.load_atomic(array.data, "acquire", 8)

        return types.int64(flag), codegen

    @njit(nogil=True, cache=True)
    def spin(flag, polls):
        for _ in range(polls):
            if load_acquire(flag) != 0:
                return True
            pause()
        return False

    return spin


def _wait(flag, lock):
    """Wait for ``flag`` to be set and ``lock`` released: spin briefly first, then block.

    A part hands over through a lock, and a thread blocked on a lock wakes on a
    core that the kernel (or the hypervisor) may have put to sleep: tens of
    microseconds, paid at every split, which for the small GEMMs of an MLP is
    as long as the part itself. A short spin (``SPIN_POLLS``, about half a
    millisecond) catches the next hand-over while the core is awake; after it
    the thread blocks, so that an idle scratchnet does not keep a core busy
    (OpenMP runtimes spin the same way, for longer).
    """
    global _spin
    if _spin is None:
        _spin = _make_spin()
    _spin(flag, SPIN_POLLS)
    lock.acquire()
    flag[0] = 0


class _Worker:
    """A thread that takes parts of one :class:`_Job` at a time, handed over through a flag and a lock (:func:`_wait`).

    ``engaged`` is the job whose parts it is taking (set before it takes the
    first); ``owed`` says that it was handed a job it has not yet answered
    (the caller took every part before it woke): :meth:`ready` collects that
    answer without waiting, and the worker sits out the splits until then.
    """

    def __init__(self):
        self._go, self._done = threading.Lock(), threading.Lock()
        self._go.acquire()
        self._done.acquire()
        self._go_flag, self._done_flag = numpy.zeros(1, numpy.int64), numpy.zeros(1, numpy.int64)
        self._job = self.engaged = None
        self.owed = False
        threading.Thread(target=self._loop, name="scratchnet-part", daemon=True).start()

    def _loop(self):
        while True:
            _wait(self._go_flag, self._go)
            job, self._job = self._job, None
            job.run(self)  # records its parts' errors; never raises
            self._done_flag[0] = 1
            self._done.release()

    def ready(self):
        """Whether a job can be handed over now: collects an owed answer if it has come, never waits."""
        if self.owed:
            if not self._done_flag[0]:
                return False
            self._done.acquire()  # released just after the flag was set
            self._done_flag[0] = 0
            self.owed, self.engaged = False, None
        return True

    def start(self, job):
        self._job, self.owed = job, True
        self._go_flag[0] = 1
        self._go.release()

    def finish(self, job):
        """After the caller has found no part left: wait for this worker only if it took (or is taking) one."""
        if self.engaged is job:
            _wait(self._done_flag, self._done)
            self.owed, self.engaged = False, None


class _Job:
    """The parts of one :func:`split`, each taken once, in order, by whichever thread is free first.

    The calling thread and the workers each loop: take the next part, run
    it, store its result at its index. A worker that wakes late (its core
    busy with another process, or asleep in the hypervisor) finds the caller
    has taken its parts; one held up in the middle of a part leaves the
    later parts to the others. The results, and the order the caller adds
    them in, do not depend on which thread ran which part.
    """

    def __init__(self, fn, ranges):
        self.fn, self.ranges = fn, ranges
        self.results = [None] * len(ranges)
        self.errors = {}
        self._claim = threading.Lock()
        self._taken = 0

    def _take(self, worker):
        with self._claim:
            if worker is not None:
                worker.engaged = self  # before the part is taken: the caller then waits for this worker
            i = self._taken
            self._taken = i + 1
        return i

    def run(self, worker=None):
        while (i := self._take(worker)) < len(self.ranges):
            try:
                self.results[i] = self.fn(*self.ranges[i])
            except BaseException as e:  # raised by the caller once every part has run
                self.errors[i] = e


def available():
    """Whether :func:`split` runs its parts in parallel here (more than one core, and OpenBLAS found)."""
    return cores() > 1 and blas.thread_count_settable()


#: Multiply-adds a part should hold at least: below this, handing it to another thread
#: (tens of microseconds) costs more than it saves.
MIN_PART_MACS = 1 << 22


def rows_for(macs_per_row, min_macs=MIN_PART_MACS):
    """The ``min_rows`` of :func:`split` for rows that each cost ``macs_per_row`` multiply-adds."""
    return max(1, -(-min_macs // max(1, macs_per_row)))


def parts(n, min_rows=1):
    """``[(lo, hi), ...]``: ``range(n)`` cut into at most one contiguous part per core, each of at least ``min_rows``."""
    k = max(1, min(cores(), n // max(min_rows, 1)))
    return [(n * i // k, n * (i + 1) // k) for i in range(k)]


def split(fn, n, min_rows=1):
    """``[fn(lo, hi) for (lo, hi) in parts(n, min_rows)]``, the parts on the cores' threads, BLAS single-threaded.

    ``fn(lo, hi)`` handles rows ``lo:hi`` of the batch; it must write nothing
    outside them. The calling thread and the workers take the parts in order,
    each the next one left (:class:`_Job`): a worker that is late leaves its
    parts to the others, so that a split never waits for a thread that has
    not started (its core busy with another process, or still waking).

    With one part, or when the split cannot run in parallel (:func:`available`),
    or when another split is running (a nested call), the parts run here,
    one after the other, still with single-threaded BLAS: a part too small to
    split is too small for BLAS's threads too, and an OpenBLAS thread woken
    for it would then spin on the other core while the next split's part wants it.
    """
    ranges = parts(n, min_rows)
    if len(ranges) == 1 or not available() or not _lock.acquire(blocking=False):
        with blas.single_threaded():
            return [fn(lo, hi) for lo, hi in ranges]
    try:
        while len(_workers) < len(ranges) - 1:
            _workers.append(_Worker())
        job = _Job(fn, ranges)
        with blas.single_threaded():
            started = [w for w in _workers[: len(ranges) - 1] if w.ready()]
            for worker in started:
                worker.start(job)
            job.run()  # the calling thread takes parts too, from the first
            # Every part has run once this returns (a worker still asleep took none): BLAS is restored only then.
            for worker in started:
                worker.finish(job)
        if job.errors:
            raise job.errors[min(job.errors)]
        return job.results
    finally:
        _lock.release()


def matmul(a, b, out=None):
    """``a @ b`` for 2-D ``a`` (M, K) and ``b`` (K, N), the output cut into one block per core.

    The blocks are rows of the output (each part reads all of ``b``) when
    ``M >= N``, else columns (each part reads all of ``a``): the operand that
    every part reads whole is the smaller one. A sum much longer than the
    output is wide, ``K >= 2 (M + N)``, is cut along ``K`` instead, and the
    parts' products added in part order.
    """
    M, K = a.shape
    N = b.shape[1]
    if out is None:
        out = numpy.empty((M, N), dtype=numpy.result_type(a, b))
    if K >= 2 * (M + N) and len(parts(K, rows_for(M * N))) > 1 and available() and not _lock.locked():
        # A long sum into a small output (an LSTM's recurrent weight gradient, (H, T*N) @ (T*N, 4H)):
        # each part sums its share of K, and the partial products are added in part order. Cut by
        # rows or columns, every part would read (and pack) the whole of one operand.
        def part(lo, hi):
            return blas.matmul(a[:, lo:hi], b[lo:hi], out=out if lo == 0 else None)

        partials = split(part, K, rows_for(M * N))
        for other in partials[1:]:
            out += other
        return out
    if M >= N:
        def part(lo, hi):
            blas.matmul(a[lo:hi], b, out=out[lo:hi])

        split(part, M, rows_for(K * N))
    else:
        def part(lo, hi):
            blas.matmul(a, b[:, lo:hi], out=out[:, lo:hi])

        split(part, N, rows_for(M * K))
    return out
