"""TensorBoard event files, written synchronously: scalars, histograms, images and the model graph.

tensorboardX's ``SummaryWriter`` queues events to a background thread, and its
``flush()`` does not wait for that queue: a reader (or a killed run) can miss
the last points. :class:`EventFile` writes each event through tensorboardX's
record writer in the calling thread and flushes it, so what a call wrote is on
disk when the call returns. The protobuf definitions are tensorboardX's; no
TensorFlow is needed.

What each TensorBoard tab shows, and which function writes it:

- SCALARS: :meth:`EventFile.add_scalars` (loss, accuracy, learning rate);
- GRAPHS: :func:`write_graph`, the graph traced from a forward pass
  (:mod:`scratchnet.graph` states the naming rules);
- HISTOGRAMS / DISTRIBUTIONS: :meth:`EventFile.add_histograms` of
  :func:`histograms` (weights, their gradients, each layer's activations);
- IMAGES: :meth:`EventFile.add_images` of :func:`prediction_images` (test
  digits with their predicted and true labels, and the most confident mistakes).

The :class:`scratchnet.callbacks.TensorBoard` callback writes all four during
``fit`` and ``scratchnet train``.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import time

import numpy

from . import image_grid
from . import random as sn_random
from .backend import to_numpy
from .graph import GraphTracer
from .layers.base import as_backend_array

#: Buckets per histogram (TensorBoard's own default is 30).
HISTOGRAM_BINS = 30
_opened = itertools.count()


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
        # tensorboardX names a file by the second and the host; two files opened in one
        # second (a graph written beside a training run) would overwrite each other.
        self._writer = EventsWriter(os.path.join(logdir, "events"), filename_suffix=f".{os.getpid()}.{next(_opened)}")

    def _write(self, step, **fields):
        from tensorboardX.proto import event_pb2

        event = event_pb2.Event(wall_time=time.time(), step=int(step), **fields)
        self._writer.write_event(event)
        self._writer.flush()

    def _add_values(self, values, step):
        from tensorboardX.proto import summary_pb2

        if values:
            self._write(step, summary=summary_pb2.Summary(value=values))

    def add_scalars(self, scalars, step):
        """Write ``{tag: value}`` at ``step``."""
        from tensorboardX.summary import scalar

        self._add_values([v for tag, value in scalars.items() for v in scalar(tag, float(value)).value], step)

    def add_histograms(self, arrays, step):
        """Write a histogram of each ``{tag: array}`` at ``step`` (non-finite values left out)."""
        from tensorboardX.proto import summary_pb2
        from tensorboardX.summary import make_histogram

        values = []
        for tag, a in arrays.items():
            a = numpy.asarray(to_numpy(a), dtype=numpy.float64).ravel()
            finite = numpy.isfinite(a)
            a = a if finite.all() else a[finite]
            if a.size:
                values.append(summary_pb2.Summary.Value(tag=tag, histo=make_histogram(a, bins=HISTOGRAM_BINS)))
        self._add_values(values, step)

    def add_images(self, pictures, step):
        """Write each ``{tag: (H, W, 3) uint8 picture}`` at ``step`` as a PNG."""
        from tensorboardX.proto import summary_pb2

        values = [summary_pb2.Summary.Value(tag=tag, image=summary_pb2.Summary.Image(
            height=p.shape[0], width=p.shape[1], colorspace=p.shape[2], encoded_image_string=image_grid.encode_png(p)))
            for tag, p in pictures.items()]
        self._add_values(values, step)

    def add_graph(self, graph_def, step=0):
        """Write a ``GraphDef`` (:meth:`scratchnet.graph.GraphTracer.graph_def`): the GRAPHS tab of this run."""
        self._write(step, graph_def=graph_def.SerializeToString())

    def add_session_start(self, step):
        """Mark a restart at ``step`` (a resumed run): TensorBoard's reader then drops the points after
        ``step`` that the interrupted run wrote, so each step is shown once."""
        from tensorboardX.proto import event_pb2

        # The reader keeps the points before a START event's step: mark step + 1 to keep ``step``.
        self._write(step + 1, session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START))

    def close(self):
        self._writer.close()


def write_graph(logdir, model, x=None, y=None, training=False, step=0):
    """Trace one forward pass and write its graph into the run ``logdir``; returns the ``GraphDef``.

    ``write_graph(logdir, model, x)`` traces ``model`` on the example batch
    ``x``. With ``y`` (labels) the model's loss is traced too (the model must
    be compiled). ``training=True`` traces the training-mode pass (dropout
    included). Several models go into one graph, each under its run scope::

        sn.summary.write_graph(logdir, {"Train": (train_model, x_train, y_train, True),
                                        "Test": (test_model, x_test)})

    Each value is ``(model, x)``, ``(model, x, y)`` or ``(model, x, y,
    training)``. A parameter the models share (``store.scope(...,
    reuse=True)``) is one node with edges into both; see :mod:`scratchnet.graph`.
    The trace leaves the models as it found them: a stateful layer's carried
    state and the global random generator are restored afterwards.
    """
    runs = model if isinstance(model, dict) else {"": (model, x, y, training)}
    tracer = GraphTracer()
    for run, spec in runs.items():
        spec = tuple(spec)
        if not 2 <= len(spec) <= 4 or spec[1] is None:
            raise ValueError(f"write_graph: run {run!r} must be (model, x), (model, x, y) or (model, x, y, training), "
                             f"with an example input x")
        m, xs, ys, train = spec + (None, training)[len(spec) - 2:]
        xs = as_backend_array(xs, m.dtype)
        inputs = {"input": xs}
        if ys is not None:
            if getattr(m, "loss", None) is None:
                raise ValueError(f"write_graph: {m.name} has no loss to trace with y; compile it, or leave y out")
            ys = as_backend_array(ys, m.dtype)
            inputs["labels"] = ys
        with _untouched(m), tracer.trace(run, [m], inputs):
            y_pred, _ = m.forward(xs, training=bool(train))
            if ys is not None:
                m.loss(ys, y_pred)
    graph_def = tracer.graph_def()
    events = EventFile(logdir)
    events.add_graph(graph_def, step)
    events.close()
    return graph_def


@contextlib.contextmanager
def _untouched(layer):
    """Put back what a forward pass changes: stateful layers' carried state and the global generator."""
    saved = [(l, l.states) for l in layer._tree() if hasattr(l, "states")]
    rng = sn_random.get_state()
    try:
        yield
    finally:
        for l, states in saved:
            l.states = states
        sn_random.set_state(rng)


def histograms(model, activations=None):
    """``{tag: array}`` for HISTOGRAMS: ``weights/<name>``, ``gradients/<name>`` and ``activations/<layer>``.

    Gradients are the parameters' accumulated ``.grad`` (left by the last
    training step); ``activations`` is :attr:`GraphTracer.activations` of a
    traced step (each layer's last op output).
    """
    out = {}
    for p in model.parameters():
        out[f"weights/{p.name}"] = p.value
    for p in model.parameters():
        if p.grad is not None:
            out[f"gradients/{p.name}"] = p.grad
    for scope, a in (activations or {}).items():
        out[f"activations/{scope}"] = a
    return out


def check_images(examples, who="TensorBoard"):
    """``(x, y, images)`` of labelled examples ``(x, y)`` whose ``x`` holds images; ValueError otherwise."""
    try:
        x, y = examples
    except (TypeError, ValueError):
        raise ValueError(f"{who}: write_images must be (x, y), labelled test examples, got {type(examples).__name__}") from None
    images = image_grid.as_images(x)
    if images is None:
        raise ValueError(f"{who}: write_images needs images, (N, H, W), (N, H, W, 1) or square (N, H*W) floats; "
                         f"got x of shape {numpy.shape(x)} and dtype {numpy.asarray(x).dtype}")
    if len(y) != len(images):
        raise ValueError(f"{who}: write_images has {len(images)} images but {len(y)} labels")
    return x, y, images


def prediction_images(model, examples):
    """``{"predictions": picture, "confident_mistakes": picture}``: ``model``'s predictions on ``(x, y, images)``.

    ``examples`` is what :func:`check_images` returned; see
    :func:`scratchnet.image_grid.prediction_grids`.
    """
    x, y, images = examples
    return image_grid.prediction_grids(images, to_numpy(y), model.predict(x, batch_size=250))
