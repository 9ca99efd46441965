"""``sn.profile()``: where the time goes, op by op, against this machine's own limits.

::

    with sn.profile() as prof:
        for _ in range(5):
            model.train_on_batch(x, y)
    print(prof.table())                     # by op; prof.table(group_by="layer") by layer
    prof.export_chrome_trace("trace.json")  # open in https://ui.perfetto.dev

Inside the block the profile is a recorder of :mod:`scratchnet.recording`:
every op call is timed, its forward and its backward apart, with the op's
name, backend, dtype, input shapes, layer scope (``layer1-conv1``) and its
FLOPs and bytes from the op's cost formula; the training step's regions
(``optimizer``, ``regularizer``, ``moving_average``) are timed as rows of
their own. Times are *exclusive*: a row that contains another (an op inside
a region) is charged only for the time outside it, so the rows never count
a microsecond twice, and ``other`` (the block's wall time minus every row)
is the Python, data and bookkeeping between them.

Each row is set against the machine's roofs (:mod:`.calibration`): a
compute-bound row against the measured float32 sgemm rate, a memory-bound
row against the measured copy rate (:func:`.report.roofline`). On CuPy the
times are the GPU's own, from CUDA events (:mod:`.clocks`).

With no profile active the ops pay one check of an empty list per call
(:func:`scratchnet.recording.op`): nothing is recorded or kept.
"""
from __future__ import annotations

from . import calibration, report
from .clocks import CudaClock, HostClock, clock_for
from .recorder import profile
from .steps import PROFILE_WARMUP, ProfileSteps

__all__ = ["PROFILE_WARMUP", "CudaClock", "HostClock", "ProfileSteps", "calibration", "clock_for", "profile", "report"]
