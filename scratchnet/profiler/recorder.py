"""The profile: a recorder of op calls, regions and layer scopes, timed exclusively."""
from __future__ import annotations

import os
import threading

from .. import recording
from ..backend import get_backend, use_backend
from . import calibration, report
from .clocks import clock_for

_ROW_KINDS = ("forward", "backward", "region")


class _Span:
    """One timed interval: an op's forward or backward, a region, a layer's scope, or a profiled segment."""

    __slots__ = ("kind", "info", "begin", "end", "parent", "child_s", "exclusive_s")

    def __init__(self, kind, info, begin, parent):
        self.kind, self.info, self.begin, self.end, self.parent = kind, info, begin, None, parent
        self.child_s = self.exclusive_s = 0.0


class _OpInfo:
    """What a profile keeps of one op call: names, shapes and cost; never the arrays themselves."""

    __slots__ = ("name", "backend", "_dtype", "shapes", "params", "cost", "layer", "scope", "open")

    def __init__(self, call, backend, scopes):
        """``scopes``: the open layer-scope spans, outermost first."""
        self.name, self.backend = call.name, backend
        shapes, params, dtype = [], [], None
        for key, value in call.inputs.items():
            if hasattr(value, "shape") and hasattr(value, "dtype"):
                shapes.append((key, tuple(value.shape)))
                if dtype is None or (value.dtype.kind == "f" and dtype.kind != "f"):
                    dtype = value.dtype
            elif value is not None:
                params.append((key, value if isinstance(value, (int, float, str, bool, tuple)) else repr(value)))
        self.shapes, self.params = tuple(shapes), tuple(params)
        self._dtype = dtype  # its name is looked up when read: numpy's dtype.name is slow Python
        self.cost = call.cost()
        self.layer = scopes[-1].info if scopes else None
        self.scope = "/".join(span.info for span in scopes) if scopes else None
        self.open = None  # the backward span being timed

    @property
    def dtype(self):
        return None if self._dtype is None else self._dtype.name


class profile:
    """Record every op call until the block ends: ``with sn.profile() as prof: ...``.

    Parameters
    ----------
    peaks : dict, optional
        ``{"sgemm_gflops", "copy_gbs"}`` to measure the rows against; by
        default :meth:`calibrate`'s (cached) numbers for this machine.

    A profile may also be started and stopped by hand, several times
    (:class:`ProfileSteps` records one segment per training step); its wall
    time is the sum of the segments. It records the thread that starts it
    (recorders are per thread).

    Attributes
    ----------
    backend : str
        The backend the block ran on.
    clock : HostClock or CudaClock
    wall_s : float
        Seconds inside the block (all segments).
    """

    calibrate = staticmethod(calibration.calibrate)

    def __init__(self, peaks=None):
        self.peaks = dict(peaks) if peaks is not None else None
        self.backend = None
        self.clock = None
        self.wall_s = 0.0
        self.spans = []  # resolved: begin/end in seconds since the first start
        self._pending, self._stack, self._scopes = [], [], []
        self._origin = self._segment = self._recording = None
        self._pid, self._tid = os.getpid(), threading.get_native_id()

    # -- starting and stopping ---------------------------------------------------------------
    @property
    def running(self):
        return self._segment is not None

    def start(self, label="profile"):
        """Begin a segment named ``label`` (the Chrome trace shows it); ops are recorded until :meth:`stop`."""
        if self.running:
            raise RuntimeError("profile: already recording; stop() before start() again")
        if self.clock is None:
            self.backend = get_backend().name
            self.clock = clock_for(self.backend)
        mark = self.clock.mark()
        if self._origin is None:
            self._origin = mark
        self._segment = _Span("step", label, mark, None)
        self._stack, self._scopes = [], []
        self._recording = recording.recorder(self)
        self._recording.__enter__()
        return self

    def stop(self):
        """End the segment: stop recording, wait for the device, and turn its marks into seconds."""
        if not self.running:
            return self
        self._recording.__exit__(None, None, None)
        segment, self._segment, self._recording = self._segment, None, None
        segment.end = self.clock.mark()
        self.clock.wait(segment.end)
        seconds, origin = self.clock.seconds, self._origin
        closed = [s for s in [segment, *self._pending] if s.end is not None]
        self._pending, self._stack, self._scopes = [], [], []
        for span in closed:
            span.begin, span.end = seconds(origin, span.begin), seconds(origin, span.end)
        for span in closed:
            if span.parent is not None and span.parent.end is not None:
                span.parent.child_s += span.end - span.begin
        for span in closed:
            span.exclusive_s = max(0.0, span.end - span.begin - span.child_s)
        self.wall_s += segment.end - segment.begin
        self.spans.extend(closed)
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    # -- the recorder protocol of scratchnet.recording ---------------------------------------
    def _open(self, kind, info):
        row = kind in _ROW_KINDS
        span = _Span(kind, info, self.clock.mark(), self._stack[-1] if row and self._stack else None)
        self._pending.append(span)
        if row:
            self._stack.append(span)
        return span

    def _close(self, span):
        span.end = self.clock.mark()
        if self._stack and self._stack[-1] is span:
            self._stack.pop()
        elif span in self._stack:  # an exception unwound a child without closing it
            del self._stack[self._stack.index(span):]

    def op_begin(self, call):
        if not self.running:
            return None
        info = _OpInfo(call, get_backend().name, self._scopes)
        return info, self._open("forward", info)

    def op_end(self, token, outputs):
        if token is not None and self.running:
            self._close(token[1])

    def backward_begin(self, token):
        if token is not None and self.running:
            token[0].open = self._open("backward", token[0])

    def backward_end(self, token, grads):
        if token is not None and self.running and token[0].open is not None:
            self._close(token[0].open)
            token[0].open = None

    def scope_begin(self, name, obj):
        if self.running:
            self._scopes.append(self._open("layer", name))

    def scope_end(self, name, obj):
        if self.running and self._scopes:
            self._close(self._scopes.pop())

    def region_begin(self, name):
        if self.running:
            self._open("region", name)

    def region_end(self, name):
        if self.running:
            region = next((s for s in reversed(self._stack) if s.kind == "region"), None)
            if region is not None:
                self._close(region)

    # -- results -----------------------------------------------------------------------------
    def _peaks(self):
        if self.peaks is None:
            with use_backend(self.backend or get_backend().name):
                self.peaks = calibration.calibrate()
        return self.peaks

    def summary(self, sort_by="total", group_by="op"):
        """The rows as dicts: one per op and direction (or per layer and direction), then ``other``.

        Keys: ``name`` ("conv2d backward"), ``kind`` ("forward", "backward",
        "region" or "other"), ``op``, ``layer``, ``calls``, ``total_ms``,
        ``mean_ms``, ``percent`` (of the wall time), ``flops``, ``bytes``,
        ``gflops``, ``gbs``, ``bound`` ("compute", "memory" or None),
        ``percent_of_peak``, ``dtype``, ``backend``, ``shapes``. The
        ``total_ms`` of all rows, ``other`` included, add up to the wall time.
        """
        if self.running:
            raise RuntimeError("profile: still recording; read the rows after the block (or stop())")
        return report.rows(self.spans, self.wall_s, self._peaks(), sort_by, group_by)

    @property
    def rows(self):
        """:meth:`summary` sorted by total time, by op."""
        return self.summary()

    def table(self, sort_by="total", group_by="op"):
        """The rows as a text table: ``sort_by`` in {"total", "calls", "mean", "name"}, ``group_by`` in {"op", "layer"}."""
        rows = self.summary(sort_by, group_by)
        ops = sum(r["calls"] for r in rows if r["kind"] in ("forward", "backward"))
        dtypes = sorted({r["dtype"] for r in rows if r["dtype"]})
        title = (f"profile: {1e3 * self.wall_s:.2f} ms wall, backend {self.backend}, {', '.join(dtypes) or 'no ops'}, "
                 f"{ops} op calls (forward and backward), timed with {self.clock.name if self.clock else 'no clock'}")
        return report.table(rows, self.wall_s, self._peaks(), title)

    def events(self):
        """The Chrome-trace events (see :meth:`export_chrome_trace`)."""
        return report.trace_events(self.spans, self._pid, self._tid, self.backend)

    def export_chrome_trace(self, path):
        """Write the spans as Chrome trace JSON (``{"traceEvents": [...]}``) for Perfetto or chrome://tracing.

        Complete events (``"ph": "X"``, ``ts`` and ``dur`` in microseconds):
        ``cat`` is "forward", "backward" or "region" for the rows, "layer"
        for a layer's scope and "step" for a profiled segment; ``args``
        hold the op, shapes, dtype, FLOPs, bytes and layer.
        """
        return report.write_trace(os.fspath(path), self.events())

    def __repr__(self):
        state = "recording" if self.running else f"{1e3 * self.wall_s:.2f} ms"
        return f"<profile {self.backend or 'not started'}: {state}, {len(self.spans)} spans>"

