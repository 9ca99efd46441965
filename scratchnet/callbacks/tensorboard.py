"""``TensorBoard``: scalars, the model graph, histograms and images, in ``<logdir>/train`` and ``<logdir>/test``."""
from __future__ import annotations

import contextlib
import os

from .base import Callback, _check_update_freq


class TensorBoard(Callback):
    """Write TensorBoard event files: ``<logdir>/train`` and ``<logdir>/test``, as seed 000 does.

    ``train`` receives ``loss``, ``accuracy`` (every metric) and
    ``learning_rate``; ``test`` receives each evaluation's scalars under the
    same tags, so TensorBoard draws the two runs on one chart. The x axis is
    the global step ``model.step``. Each point is on disk when the step that
    wrote it ends (:class:`scratchnet.summary.EventFile`).

    Parameters
    ----------
    logdir : str
    update_freq : "epoch" or int
        ``"epoch"``: training scalars once per epoch (the epoch's means); an
        int ``n``: every ``n`` global steps, and at the last step.
    epoch_logs : bool
        With an int ``update_freq``, also write each epoch's means at its end
        (Keras's ``fit`` does). ``scratchnet train`` turns it off, so each
        step has one point.
    write_graph : bool
        GRAPHS: trace the first training step of each ``fit`` (forward pass
        and loss) and write its graph to ``train`` (:mod:`scratchnet.graph`).
    histogram_freq : int
        HISTOGRAMS, into ``train``: the weights, their gradients and each
        layer's activations (:func:`scratchnet.summary.histograms`), every
        ``histogram_freq`` steps when ``update_freq`` is an int, or every
        ``histogram_freq`` epochs (at the epoch's end, from its last batch)
        with ``"epoch"``, as Keras counts. 0 (the default): none.
    write_images : (x, y), optional
        IMAGES, into ``test``: at each evaluation, the predictions on these
        labelled images (e.g. 500 test digits): a grid of the first 32
        captioned predicted/true, and the most confident mistakes.

    TEXT, into ``test`` at the first evaluation: why the test curve can sit
    above the train curve for this model (:func:`why_test_beats_train`).
    """

    def __init__(self, logdir, update_freq="epoch", epoch_logs=True, write_graph=True, histogram_freq=0,
                 write_images=None):
        from ..summary import check_images

        super().__init__()
        _check_update_freq("TensorBoard", update_freq)
        if histogram_freq != 0:
            _check_update_freq("TensorBoard: histogram_freq", histogram_freq)
        self.logdir = logdir
        self.update_freq = update_freq
        self.epoch_logs = bool(epoch_logs)
        self.write_graph = bool(write_graph)
        self.histogram_freq = histogram_freq
        self.images = None if write_images is None else check_images(write_images)
        self._files = {}
        self._last = None
        self._graph_due, self._histograms_now, self._epoch = False, False, 0
        self._noted = False
        self._tracer = self._trace = None

    def event_file(self, run):
        """The :class:`scratchnet.summary.EventFile` of ``run`` (``"train"`` or ``"test"``), opened on first use."""
        if run not in self._files:
            from ..summary import EventFile

            self._files[run] = EventFile(os.path.join(self.logdir, run))
        return self._files[run]

    def write_scalars(self, run, scalars, step):
        """Write ``{tag: value}`` to ``run`` at ``step``."""
        self.event_file(run).add_scalars(scalars, step)

    def write_text(self, run, texts, step):
        """Write ``{tag: markdown}`` to ``run`` at ``step``: TensorBoard's TEXT tab."""
        from tensorboardX.summary import text

        self.event_file(run)._add_values([v for tag, body in texts.items() for v in text(tag, body).value], step)

    def on_train_begin(self, logs=None):
        self._graph_due = self.write_graph
        self._stop_trace()
        if self._step() > 0:
            # A resumed run: points an interrupted run wrote past this step are dropped by the reader.
            for run in ("train", "test"):
                if os.path.isdir(os.path.join(self.logdir, run)):
                    self.event_file(run).add_session_start(self._step())

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def _stop_trace(self):
        # A step that raised left its trace open; the next run of the loop closes it.
        if self._trace is not None:
            self._trace.close()
            self._trace = None

    def on_train_batch_begin(self, batch, logs=None):
        count = self._step() + 1 if self.update_freq != "epoch" else self._epoch + 1
        self._histograms_now = bool(self.histogram_freq) and count % self.histogram_freq == 0
        # A traced step gives the graph (the first step) and the activations (a histogram step).
        if self._graph_due or self._histograms_now:
            from ..graph import GraphTracer

            self._tracer, self._trace = GraphTracer(), contextlib.ExitStack()
            self._trace.enter_context(self._tracer.trace("", [self.model]))

    def on_train_batch_end(self, batch, logs=None):
        if self._trace is not None:
            self._stop_trace()
            if self._graph_due:
                self.event_file("train").add_graph(self._tracer.graph_def(), self._step())
                self._graph_due = False
            if self._histograms_now and self.update_freq != "epoch":
                self.write_histograms()
            elif not self._histograms_now:
                self._tracer = None
        if self.update_freq == "epoch":
            return
        self._last = (self._step(), self._scalars(logs))
        if self._step() % self.update_freq == 0:
            self.write_scalars("train", self._last[1], self._step())
            self._last = None

    def on_epoch_end(self, epoch, logs=None):
        if self._histograms_now and self.update_freq == "epoch":
            self.write_histograms()
        if self.update_freq != "epoch" and not self.epoch_logs:
            return
        train = {k: v for k, v in self._scalars(logs).items() if not k.startswith("val_")}
        self.write_scalars("train", train, self._step())
        self._last = None

    def write_histograms(self):
        """Write the weights, their gradients and the last traced step's activations to ``train``."""
        from ..summary import histograms

        activations = self._tracer.activations if self._tracer is not None else None
        self.event_file("train").add_histograms(histograms(self.model, activations), self._step())
        self._tracer = None  # let the traced step's arrays go

    def on_test_end(self, logs=None):
        self.write_scalars("test", {k: float(v) for k, v in (logs or {}).items()}, self._step())
        if not self._noted:
            self.write_text("test", {NOTE_TAG: why_test_beats_train(self.model, _on_averages(self.model))},
                            self._step())
            self._noted = True
        if self.images is not None:
            from ..summary import prediction_images

            self.event_file("test").add_images(prediction_images(self.model, self.images), self._step())

    def on_train_end(self, logs=None):
        # The last step, when it fell between two update_freq steps.
        if self._last is not None:
            self.write_scalars("train", self._last[1], self._last[0])
            self._last = None

    def close(self):
        """Close the event files (a later write opens new ones)."""
        for f in self._files.values():
            f.close()
        self._files = {}


#: The TEXT tab's tag of :func:`why_test_beats_train` (TensorBoard shows it as ``about/test_vs_train/text_summary``).
NOTE_TAG = "about/test_vs_train"


def _on_averages(model):
    """Whether ``model``'s weights are its moving averages right now (an evaluation inside ``ema.averaged``)."""
    ema = getattr(model, "ema", None)
    if ema is None:
        return False
    params = [p for p in model.trainable_parameters if ema.tracks([p])]
    return bool(params) and all(bool((p.value == ema.average(p)).all()) for p in params[:1])


def why_test_beats_train(model, averaged):
    """Why ``model``'s test accuracy can be above its training accuracy, as a paragraph of Markdown.

    The train points are measured on training batches while the model trains:
    with dropout on, and on the weights of that moment. The test points are
    measured with dropout off and, where the model keeps moving averages and
    the evaluation used them (``averaged``), on those steadier weights.
    """
    from ..layers import Dropout

    dropouts = [f"`{layer.name}` drops {layer.rate:.0%} of its inputs" for layer in model.walk()
                if isinstance(layer, Dropout) and layer.rate > 0]
    train = ["measured on each training batch while the model trains, on the weights of that step"]
    test = []
    if dropouts:
        train.append(f"with dropout on ({'; '.join(dropouts)})")
        test.append("with dropout off, so every unit contributes")
    if averaged:
        test.append(f"on the moving averages of the weights (decay {model.ema.decay:g}), which are "
                    f"steadier than the weights of any one step")
    verdict = "So test accuracy above training accuracy is expected here"
    if not test:
        test.append("between training steps, on the weights of that moment")
        verdict = "Test accuracy can still be above training accuracy"
    return (
        "**Why the test curve can sit above the train curve.** "
        f"The train points are {', '.join(train)}. The test points are measured {', and '.join(test)}. "
        f"{verdict}, and it is not a sign that test examples leaked into training. Overfitting shows as the test loss rising "
        "while the train loss keeps falling."
    )
