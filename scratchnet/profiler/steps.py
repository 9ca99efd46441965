"""``ProfileSteps``: profile N training steps after a warm-up, from inside the training loop.

``scratchnet train MODEL --profile N`` adds one to its callbacks. The first
steps of a run compile kernels (Numba) and grow allocators, which is not
what a profile should show, so the first ``warmup`` steps run unprofiled.
Each of the next ``steps`` steps is one segment of the profile, from its
``on_train_batch_begin`` to its ``on_train_batch_end``: the wall time is the
loop's steps only, not the logging, checkpoints or evaluations between them.
Then the table is printed and ``trace.json`` written into ``logdir``.
"""
from __future__ import annotations

import os
import time

from ..callbacks import Callback
from .recorder import profile

#: Steps run before profiling begins: the first calls compile the Numba kernels.
PROFILE_WARMUP = 2
TRACE_FILE = "trace.json"


class ProfileSteps(Callback):
    """Profile training steps ``warmup + 1 .. warmup + steps`` of the run; print the table, write the trace.

    Parameters
    ----------
    steps : int
        Steps to profile.
    warmup : int
        Steps of this run to leave out first.
    logdir : str, optional
        Where ``trace.json`` goes (no trace without it).
    print_fn : callable
    sort_by, group_by : see :meth:`scratchnet.profile.table`

    Attributes
    ----------
    profile : scratchnet.profile or None
        The profile, once a step was profiled.
    step_seconds : list of float
        Host time of each profiled step, from its ``on_train_batch_begin`` to
        its ``on_train_batch_end``: the yardstick the profile's rows add up to.
    trace_path : str or None
    """

    def __init__(self, steps, warmup=PROFILE_WARMUP, logdir=None, print_fn=print, sort_by="total", group_by="op"):
        super().__init__()
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"ProfileSteps: steps must be a positive int, got {steps!r}")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f"ProfileSteps: warmup must be a non-negative int, got {warmup!r}")
        self.steps, self.warmup, self.logdir = steps, warmup, logdir
        self.print_fn, self.sort_by, self.group_by = print_fn, sort_by, group_by
        self.profile, self.step_seconds, self.trace_path = None, [], None
        self._seen, self._started, self._reported, self._first_step = 0, None, False, None

    def on_train_begin(self, logs=None):
        self._seen = 0

    def on_train_batch_begin(self, batch, logs=None):
        self._seen += 1
        if self._reported or not self.warmup < self._seen <= self.warmup + self.steps:
            return
        if self.profile is None:
            self.profile = profile()
            self._first_step = self.model.step + 1 if self.model is not None else self._seen
        self._started = time.perf_counter()
        self.profile.start(f"step {self.model.step + 1 if self.model is not None else self._seen}")

    def on_train_batch_end(self, batch, logs=None):
        if self.profile is None or not self.profile.running:
            return
        self.profile.stop()
        self.step_seconds.append(time.perf_counter() - self._started)
        if len(self.step_seconds) == self.steps:
            self.report()

    def on_train_end(self, logs=None):
        if self.profile is None:
            self.print_fn(f"profile: the run took {self._seen} steps, none after the {self.warmup} warm-up steps; "
                          "nothing was profiled")
        elif not self._reported:
            self.profile.stop()
            self.report()

    def report(self):
        """Print the table (and write the trace) of the steps profiled so far."""
        self._reported = True
        n = len(self.step_seconds)
        measured = sum(self.step_seconds)
        last = self._first_step + n - 1
        short = "" if n == self.steps else f" (the run ended after {n} of the {self.steps} asked for)"
        self.print_fn(f"profile: steps {self._first_step}-{last}, {n} steps after {self.warmup} warm-up steps{short}; "
                      f"measured {1e3 * measured:.2f} ms, {1e3 * measured / max(n, 1):.2f} ms per step")
        self.print_fn(self.profile.table(self.sort_by, self.group_by))
        if self.logdir is not None:
            self.trace_path = self.profile.export_chrome_trace(os.path.join(self.logdir, TRACE_FILE))
            self.print_fn(f"profile: wrote {self.trace_path} (Chrome trace: open it in https://ui.perfetto.dev)")
