"""TensorBoard event files, written synchronously.

tensorboardX's ``SummaryWriter`` queues events to a background thread, and its
``flush()`` does not wait for that queue: a reader (or a killed run) can miss
the last points. :class:`EventFile` writes each event through tensorboardX's
record writer in the calling thread and flushes it, so what a call wrote is on
disk when the call returns. The protobuf definitions are tensorboardX's; no
TensorFlow is needed.
"""
from __future__ import annotations

import os
import time


class EventFile:
    """One TensorBoard event file in ``logdir`` (a run, such as ``runs/lenet/train``).

    Parameters
    ----------
    logdir : str
        Created if missing.
    """

    def __init__(self, logdir):
        from tensorboardX.event_file_writer import EventsWriter

        os.makedirs(logdir, exist_ok=True)
        self.logdir = logdir
        self._writer = EventsWriter(os.path.join(logdir, "events"))

    def _write(self, step, **fields):
        from tensorboardX.proto import event_pb2

        event = event_pb2.Event(wall_time=time.time(), step=int(step), **fields)
        self._writer.write_event(event)
        self._writer.flush()

    def add_scalars(self, scalars, step):
        """Write ``{tag: value}`` at ``step``."""
        from tensorboardX.summary import scalar

        from tensorboardX.proto import summary_pb2

        values = [v for tag, value in scalars.items() for v in scalar(tag, float(value)).value]
        self._write(step, summary=summary_pb2.Summary(value=values))

    def close(self):
        self._writer.close()
