"""Collectives with a deadline: no rank waits forever, and the rank that gives up says for whom it waited.

A blocking ``MPI_Allreduce`` waits for every rank, for ever. A rank that is
stopped (``SIGSTOP``, a debugger), hung, or gone into other code (launched
with other arguments) leaves the others spinning at 100% of a core inside
MPI, deaf to ``SIGTERM``: Python runs its signal handlers between bytecodes,
never inside a C call. So :class:`~scratchnet.distributed.MPIWorld` starts
every collective non-blocking (``Iallreduce``, ``Ibcast``, ``Ibarrier``,
``Igather``, ...) and :meth:`Waiter.wait` polls it with ``Test``, in Python:

1. **Spin** for :attr:`Waiter.spin` seconds (0.1 s), as a blocking call
   does. When every rank is there a collective ends within microseconds to
   milliseconds; a slower rank is typically a few milliseconds late; and MPI
   moves a large buffer (LeNet's 6.65 MB of gradients) only while ``Test``
   is called, so a rank must not sleep while that happens.
2. **Doze**: then sleep between tests, each sleep half as long again as the
   last, up to :attr:`Waiter.max_sleep` (1 ms). A rank that waits seconds for
   a slower one (rank 0 evaluating, say) uses about 3% of a core.
3. **Say where it waits**: once it has waited :attr:`Waiter.announce_after`
   seconds (1 s), it tells every other rank "I am at collective #n" in an
   8-byte message on a communicator of its own. The ranks that never said so
   are those that did not arrive.
4. **Give up** after :attr:`Waiter.timeout` seconds (:data:`DEFAULT_TIMEOUT`,
   300; ``SCRATCHNET_MPI_TIMEOUT``, :func:`scratchnet.distributed.set_timeout`):
   print one line naming the collective (its number, what it is for, the
   step) and the ranks that did not arrive, then ``MPI_Abort`` the job, which
   ends every rank, the stopped one too (the launcher kills it). When a lower
   rank is waiting too, a rank leaves the report to it for 2 s, so that the
   job ends with one line rather than one per rank.
5. **Honour signals**: after a SIGINT or SIGTERM (``mpiexec`` forwards the
   ones it receives to every rank) no wait lasts more than
   :attr:`Waiter.signal_grace` seconds (5 s). When every rank got the signal
   they stop together at the same step, as usual, well within that; when one
   of them cannot answer, the job ends, with exit status ``128 + signal``.

The collectives are numbered in the order a rank makes them; ranks that run
the same code make the same ones in the same order, so ``#n`` names the
same call on every rank. To see the signals, the waiter puts a small handler
in front of the Python handler of SIGINT and SIGTERM (when there is one, e.g.
:class:`scratchnet.callbacks.StopOnSignal`'s): it notes the time and calls
the handler it replaced. It checks that it is still in front whenever a
collective has to wait, and at most once a second otherwise
(``signal.getsignal`` costs 8 us), so a handler installed later (at the
start of training) is covered from the next collective that waits. The
grace has a cost: a rank that is busy for more than 5 s after the signal
(rank 0 evaluating a large test set) cannot stop with the others, and the
job ends at that step instead (its checkpoint, written before the
evaluation, is intact).

What it costs, when the ranks are all there: a clock read and one ``Test``
per collective, a few microseconds of Python, three times per training step
(gradients, metrics, the agreement on stopping).
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time

import numpy

#: Seconds a collective may wait for the last rank before the job is ended.
DEFAULT_TIMEOUT = 300.0
#: The environment variable that sets the timeout (seconds; ``inf`` never ends a wait).
TIMEOUT_VARIABLE = "SCRATCHNET_MPI_TIMEOUT"
#: Exit status of a job ended because a rank did not arrive in time.
TIMEOUT_EXIT_CODE = 1

_ANNOUNCE_TAG = 7
_WATCHED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def check_timeout(value, name="timeout"):
    """``value`` as a positive number of seconds (``inf`` allowed); a ValueError naming ``name`` otherwise."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = float("nan")
    if not seconds > 0:  # also false for nan
        raise ValueError(f"{name} must be a positive number of seconds (or inf), got {value!r}")
    return seconds


def timeout_from_environment():
    """``SCRATCHNET_MPI_TIMEOUT`` in seconds, or :data:`DEFAULT_TIMEOUT` when it is unset or empty."""
    text = os.environ.get(TIMEOUT_VARIABLE, "").strip()
    return check_timeout(text, TIMEOUT_VARIABLE) if text else DEFAULT_TIMEOUT


def ranks_phrase(ranks):
    """``"rank 1"``, ``"ranks 1, 3"``, ``"ranks 2-9, 12"``: a list of ranks for a message."""
    ranks = sorted(ranks)
    runs, start = [], None
    for i, r in enumerate(ranks):
        if start is None:
            start = r
        if i + 1 == len(ranks) or ranks[i + 1] != r + 1:
            runs.append(str(start) if start == r else f"{start}-{r}" if r > start + 1 else f"{start}, {r}")
            start = None
    return f"rank{'s' if len(ranks) > 1 else ''} {', '.join(runs)}"


class _NoteSignal:
    """A signal handler that notes the signal for the waiter, then calls the handler it replaced."""

    def __init__(self, waiter, handler):
        self.waiter, self.handler = waiter, handler

    def __call__(self, signum, frame):
        self.waiter.signalled = (signum, time.monotonic())
        return self.handler(signum, frame)


class Waiter:
    """Waits for the non-blocking collectives of one communicator, against a deadline.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
        The communicator of the collectives (it is duplicated once, for the
        announcements).
    timeout : float
        Seconds a collective may wait (:attr:`timeout`).
    abort : callable
        ``abort(exit_code)``: end the job (``MPI_Abort``); called after the
        one-line report.

    Attributes
    ----------
    count : int
        The collectives started so far; the current one is ``#count``.
    what : str
        What the current collective is for ("allreduce of gradients").
    step : int or None
        The training step, when the caller says (``DataParallel`` does).
    signalled : tuple or None
        ``(signal number, time.monotonic())`` of the last SIGINT or SIGTERM.
    """

    spin = 0.1
    max_sleep = 0.001
    announce_after = 1.0
    signal_grace = 5.0
    defer = 2.0

    def __init__(self, comm, timeout, abort):
        from mpi4py import MPI

        self.MPI = MPI
        self.comm = comm
        self.side = comm.Dup()  # the announcements travel apart from the collectives
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.timeout = check_timeout(timeout)
        self.abort = abort
        self.count, self.what, self.step, self.signalled = 0, None, None, None
        self.reached = [0] * self.size  # the highest collective each rank said it waits at
        self._sends = []
        self._inbox = numpy.zeros(1, dtype=numpy.int64)
        self._main_thread = threading.main_thread().ident
        self._next_signal_check = 0.0

    def run(self, what, start):
        """Start collective ``what`` (``start()`` returns its request, or a list of requests) and wait for it."""
        self.begin(what)
        self.wait(start())

    def begin(self, what):
        """Number the next collective (``#count``) and record what it is for; returns its number."""
        self.count += 1
        self.what = what
        if time.monotonic() >= self._next_signal_check:  # signal.getsignal costs 8 us: once a second is enough
            self._note_signals()
        return self.count

    def wait(self, requests):
        """Return when ``requests`` (one ``MPI.Request`` or a list) complete; end the job past the deadline."""
        if isinstance(requests, self.MPI.Request):
            test = requests.Test
        else:
            def test():
                return self.MPI.Request.Testall(requests)
        if test():
            return
        self._note_signals()
        start = time.monotonic()
        spin_until = start + min(self.spin, self.timeout)
        while time.monotonic() < spin_until:
            if test():
                return
        sleep, announced, deferred_until = 20e-6, False, None
        while not test():
            now = time.monotonic()
            if not announced and now - start >= min(self.announce_after, self.timeout / 4):
                self._announce()
                announced = True
            if now >= self._deadline(start) and (deferred_until is None or now >= deferred_until):
                self._read_announcements()
                missing, lower_waiting = self._missing(), self._lower_ranks_waiting()
                if lower_waiting and deferred_until is None:
                    deferred_until = now + self.defer  # a lower rank waits too: it reports
                else:
                    self._give_up(start, now, missing)
                    return  # only when abort returned (a test's stand-in)
            time.sleep(sleep)
            sleep = min(sleep * 1.5, self.max_sleep)

    # -- which ranks arrived ----------------------------------------------------------------
    def _announce(self):
        """Tell every other rank that this one waits at collective #count."""
        self._sends = [(request, buf) for request, buf in self._sends if not request.Test()]
        for r in range(self.size):
            if r != self.rank:
                buf = numpy.array([self.count], dtype=numpy.int64)
                self._sends.append((self.side.Isend(buf, dest=r, tag=_ANNOUNCE_TAG), buf))
        self._read_announcements()

    def _read_announcements(self):
        status = self.MPI.Status()
        while self.side.Iprobe(source=self.MPI.ANY_SOURCE, tag=_ANNOUNCE_TAG, status=status):
            source = status.Get_source()
            self.side.Recv(self._inbox, source=source, tag=_ANNOUNCE_TAG)
            self.reached[source] = max(self.reached[source], int(self._inbox[0]))

    def _missing(self):
        """The other ranks that have not said they reached the current collective."""
        return [r for r in range(self.size) if r != self.rank and self.reached[r] < self.count]

    def _lower_ranks_waiting(self):
        return [r for r in range(self.rank) if self.reached[r] >= self.count]

    # -- the deadline -----------------------------------------------------------------------
    def _deadline(self, start):
        deadline = start + self.timeout
        if self.signalled is not None:
            deadline = min(deadline, max(self.signalled[1], start) + self.signal_grace)
        return deadline

    def where(self):
        """``collective #37 (allreduce of gradients, step 12)``."""
        step = f", step {self.step}" if self.step is not None else ""
        return f"collective #{self.count} ({self.what}{step})"

    def _give_up(self, start, now, missing):
        waited = f"{now - start:.1f} s"
        if missing:
            who = ranks_phrase(missing)
            them = "it" if len(missing) == 1 else "they"
        if self.signalled is not None and max(self.signalled[1], start) + self.signal_grace < start + self.timeout:
            signum = self.signalled[0]
            name = signal.Signals(signum).name
            if missing:
                why = f"{who} did not answer within {self.signal_grace:g} s of it"
            else:
                why = "it did not complete (the ranks are in different collectives)"
            line = (f"scratchnet: rank {self.rank} got {name} while waiting at {self.where()}: {why}; "
                    f"ending the job")
            code = 128 + signum
        else:
            if missing:
                why = (f"{who} stopped answering: {them} did not reach {self.where()} within {waited} "
                       f"(stopped, hung, gone, or running other code)")
            else:
                why = (f"every rank reached {self.where()} but it did not complete within {waited}: the ranks "
                       f"are in different collectives (launched with different code or arguments?)")
            line = (f"scratchnet: {why}; rank {self.rank} is ending the job "
                    f"(the timeout is {self.timeout:g} s: {TIMEOUT_VARIABLE} to change it)")
            code = TIMEOUT_EXIT_CODE
        print(line, file=sys.stderr, flush=True)
        self.abort(code)

    # -- signals ----------------------------------------------------------------------------
    def _note_signals(self):
        """Put :class:`_NoteSignal` in front of the Python handlers of SIGINT and SIGTERM (main thread only)."""
        self._next_signal_check = time.monotonic() + 1.0
        if threading.get_ident() != self._main_thread:
            return
        for sig in _WATCHED_SIGNALS:
            handler = signal.getsignal(sig)
            if callable(handler) and not isinstance(handler, _NoteSignal):
                signal.signal(sig, _NoteSignal(self, handler))
