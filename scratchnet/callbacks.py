"""Callbacks for the training loop (``fit``, ``scratchnet train``): progress bar, TensorBoard, CSV/JSONL logs, checkpoints.

The loop (:func:`scratchnet.training.train`) calls the hooks of Keras's
callback protocol, in this order::

    set_params({"epochs", "steps", "initial_step", "total_steps", ...}); set_model(model)
    on_train_begin(logs)
      on_epoch_begin(epoch, logs)
        on_train_batch_begin(batch, logs); on_train_batch_end(batch, logs)   # per batch
        on_test_begin(logs); on_test_batch_begin/end(...); on_test_end(logs) # evaluation
      on_epoch_end(epoch, logs)            # logs: loss, accuracy, val_loss, val_accuracy
    on_train_end(logs)

Batch logs hold the running means of the epoch so far. Every logger here
records the same scalars: the logs plus the optimizer's ``learning_rate``,
against the global step ``model.step``.
"""
from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import sys

from .archive import atomic_write
from .checkpoint import Checkpoint


class Callback:
    """Base class: every hook does nothing. Override the ones you need.

    Attributes
    ----------
    model : scratchnet.Model
        Set by ``fit`` through :meth:`set_model`.
    params : dict
        ``{"epochs", "steps", "batch_size", "verbose"}``, set by ``fit``.
    """

    def __init__(self):
        self.model = None
        self.params = {}

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = dict(params)

    def on_train_begin(self, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_train_batch_begin(self, batch, logs=None):
        pass

    def on_train_batch_end(self, batch, logs=None):
        pass

    def on_test_begin(self, logs=None):
        pass

    def on_test_batch_begin(self, batch, logs=None):
        pass

    def on_test_batch_end(self, batch, logs=None):
        pass

    def on_test_end(self, logs=None):
        pass

    # -- shared by the loggers ---------------------------------------------------------
    def _step(self):
        return int(getattr(self.model, "step", 0) or 0)

    def _learning_rate(self):
        optimizer = getattr(self.model, "optimizer", None)
        return getattr(optimizer, "learning_rate_now", None)

    def _scalars(self, logs):
        """The logs as plain floats, plus ``learning_rate`` when the model has an optimizer."""
        scalars = {k: float(v) for k, v in (logs or {}).items()}
        lr = self._learning_rate()
        if lr is not None:
            scalars["learning_rate"] = float(lr)
        return scalars


class ProgressBar(Callback):
    """A tqdm progress bar showing the running loss and metrics: one per epoch, or one for the whole run.

    ``fit(verbose=1)`` adds one unless a ProgressBar is given; ``verbose=0``
    or ``ProgressBar(disable=True)`` shows nothing.

    Parameters
    ----------
    per_epoch : bool
        One bar per epoch (Keras's ``fit``), or one bar from the first global
        step to the last (``scratchnet train``), which shows where a resumed
        run starts.
    desc : str, optional
        The bar's label in whole-run mode.
    disable : bool
    file : file object, optional
        Where to draw; tqdm's default (stderr) when None.
    """

    def __init__(self, per_epoch=True, desc=None, disable=False, file=None):
        super().__init__()
        self.per_epoch = bool(per_epoch)
        self.desc = desc
        self.disable = bool(disable)
        self.file = file
        self._bar = None

    def _open(self, total, desc, initial=0, unit="batch"):
        from tqdm.auto import tqdm

        self._close()
        self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=self.disable,
                         file=self.file if self.file is not None else sys.stderr, dynamic_ncols=True)

    def on_train_begin(self, logs=None):
        if not self.per_epoch:
            self._open(self.params.get("total_steps"), self.desc, self.params.get("initial_step", 0), unit="step")

    def on_epoch_begin(self, epoch, logs=None):
        if self.per_epoch:
            epochs = self.params.get("epochs")
            self._open(self.params.get("steps"), f"Epoch {epoch + 1}/{epochs}" if epochs else f"Epoch {epoch + 1}")

    def on_train_batch_end(self, batch, logs=None):
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(_short(logs), refresh=False)

    def on_epoch_end(self, epoch, logs=None):
        if self.per_epoch and self._bar is not None:
            self._bar.set_postfix(_short(logs), refresh=True)
            self._close()

    def on_train_end(self, logs=None):
        self._close()

    def _close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _short(logs):
    return {k: f"{float(v):.4g}" for k, v in (logs or {}).items()}


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
    """

    def __init__(self, logdir, update_freq="epoch", epoch_logs=True, write_graph=True, histogram_freq=0,
                 write_images=None):
        from .summary import check_images

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
        self._tracer = self._trace = None

    def event_file(self, run):
        """The :class:`scratchnet.summary.EventFile` of ``run`` (``"train"`` or ``"test"``), opened on first use."""
        if run not in self._files:
            from .summary import EventFile

            self._files[run] = EventFile(os.path.join(self.logdir, run))
        return self._files[run]

    def write_scalars(self, run, scalars, step):
        """Write ``{tag: value}`` to ``run`` at ``step``."""
        self.event_file(run).add_scalars(scalars, step)

    def on_train_begin(self, logs=None):
        self._graph_due = self.write_graph
        self._stop_trace()

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
            from .graph import GraphTracer

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
        from .summary import histograms

        activations = self._tracer.activations if self._tracer is not None else None
        self.event_file("train").add_histograms(histograms(self.model, activations), self._step())
        self._tracer = None  # let the traced step's arrays go

    def on_test_end(self, logs=None):
        self.write_scalars("test", {k: float(v) for k, v in (logs or {}).items()}, self._step())
        if self.images is not None:
            from .summary import prediction_images

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


def _check_update_freq(name, update_freq):
    if update_freq != "epoch" and (isinstance(update_freq, bool) or not isinstance(update_freq, int) or update_freq < 1):
        raise ValueError(f"{name}: update_freq must be 'epoch' or a positive int, got {update_freq!r}")


class _EpochLogger(Callback):
    """One record per epoch: ``epoch``, ``step``, the logs and ``learning_rate``.

    With ``update_freq=N`` (steps) instead of ``"epoch"`` it writes a
    ``run="train"`` record every N steps and a ``run="test"`` record at each
    ``on_test_end``, for a step-based loop such as ``scratchnet train``.

    With ``append`` the file is kept, minus any records past the model's
    global step at the start of training: a run resumed from the checkpoint
    of step ``s`` writes the steps after ``s`` again, so each step is logged
    once.
    """

    def __init__(self, path, append=False, update_freq="epoch"):
        super().__init__()
        _check_update_freq(type(self).__name__, update_freq)
        self.path = path
        self.append = bool(append)
        self.update_freq = update_freq
        self._last = None

    def on_train_begin(self, logs=None):
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        if not self.append and os.path.exists(self.path):
            os.remove(self.path)
        elif self.append:
            self.discard_after(self._step())

    def on_epoch_end(self, epoch, logs=None):
        if self.update_freq == "epoch":
            self._record({"epoch": int(epoch), "step": self._step(), **self._scalars(logs)})

    def on_train_batch_end(self, batch, logs=None):
        if self.update_freq == "epoch":
            return
        self._last = (self._step(), self._scalars(logs))
        if self._step() % self.update_freq == 0:
            self.write_scalars("train", self._last[1], self._step())
            self._last = None

    def on_test_end(self, logs=None):
        if self.update_freq != "epoch":
            self.write_scalars("test", logs, self._step())

    def on_train_end(self, logs=None):
        # The last step, when it fell between two update_freq steps.
        if self._last is not None:
            self.write_scalars("train", self._last[1], self._last[0])
            self._last = None

    def write_scalars(self, run, scalars, step):
        """Append one ``{"run", "step", **scalars}`` record (the signature of :meth:`TensorBoard.write_scalars`)."""
        self._record({"run": run, "step": int(step), **{k: float(v) for k, v in (scalars or {}).items()}})

    def discard_after(self, step):
        """Drop the records of steps after ``step`` (a run resumed from the checkpoint of ``step`` will
        write them again) and a torn last line (a run killed mid-write); the file is replaced atomically."""
        if not os.path.exists(self.path):
            return
        kept = "".join(self._keep(_complete_lines(self.path), step)).encode("utf-8")
        atomic_write(self.path, lambda f: f.write(kept))

    def _record(self, record):
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        # Opened per record, so the file is complete even if training is killed.
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            self._write(f, record)


class CSVLogger(_EpochLogger):
    """A CSV file with one row per epoch (Keras's ``CSVLogger``, plus ``step`` and ``learning_rate``).

    The columns are fixed by the first row (or by the header of the file
    appended to); a missing value is written as an empty cell.
    """

    def _write(self, f, record):
        columns = self._columns(record)
        writer = csv.DictWriter(f, fieldnames=columns, restval="", extrasaction="ignore")
        if f.tell() == 0:
            writer.writeheader()
        writer.writerow(record)

    def _columns(self, record):
        if os.path.getsize(self.path) > 0:
            with open(self.path, newline="", encoding="utf-8") as f:
                return next(csv.reader(f))
        first = [k for k in ("epoch", "run", "step") if k in record]
        rest = sorted(k for k in record if k not in (*first, "learning_rate"))
        # In step mode a test row may come first; train rows still bring a rate.
        rate = "learning_rate" in record or "run" in record
        return [*first, *rest] + (["learning_rate"] if rate else [])

    def _read(self):
        return [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(_complete_lines(self.path))]

    def _keep(self, lines, step):
        if not lines:
            return []
        column = next(csv.reader(lines[:1])).index("step")
        return lines[:1] + [line for line in lines[1:] if int(next(csv.reader([line]))[column]) <= step]


class JSONLLogger(_EpochLogger):
    """A JSON Lines file: one ``{"epoch", "step", "loss", ..., "learning_rate"}`` object per epoch."""

    def _write(self, f, record):
        # NaN and infinities are not JSON; write them as null.
        clean = {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in record.items()}
        f.write(json.dumps(clean) + "\n")

    def _read(self):
        return [json.loads(line) for line in _complete_lines(self.path) if line.strip()]

    def _keep(self, lines, step):
        return [line for line in lines if line.strip() and int(json.loads(line)["step"]) <= step]


def _complete_lines(path):
    """The file's lines, each ending in a newline; a torn last line (a write cut short) is not data."""
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        lines = f.readlines()
    if lines and not lines[-1].endswith("\n"):
        lines.pop()
    return lines


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, I/O error); the previous one and its index are intact."""


class ModelCheckpoint(Callback):
    """Save a :class:`scratchnet.Checkpoint` every ``every_n_steps`` global steps, and at the end.

    The model's optimizer and moving averages (``model.optimizer``,
    ``model.ema``) are saved with it; resume with
    ``sn.Checkpoint(model).restore(sn.latest_checkpoint(directory))``.

    While training, the callback owns ``directory`` (:class:`scratchnet.folder.TrainingFolder`):
    a second process training into it is refused, naming this one. A failed
    save (``ENOSPC``, ``EIO``) leaves the previous checkpoint and the index
    that names it intact, removes the temporary file, and stops training with
    a :class:`CheckpointWriteError` naming the folder and its free space.

    Parameters
    ----------
    directory : str
    every_n_steps : int
    max_to_keep : int or None
    prefix : str
        File names are ``<prefix>-<step>``.
    save_at_end : bool
        Also save when training ends (or is stopped) on a step that was not saved.
    """

    def __init__(self, directory, every_n_steps=1000, max_to_keep=5, prefix="model", save_at_end=True):
        super().__init__()
        if isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ValueError(f"ModelCheckpoint: every_n_steps must be a positive int, got {every_n_steps!r}")
        self.directory = directory
        self.every_n_steps = every_n_steps
        self.max_to_keep = max_to_keep
        self.prefix = prefix
        self.save_at_end = bool(save_at_end)
        self.last_saved = None
        self._folder = None

    def on_train_begin(self, logs=None):
        from .folder import TrainingFolder

        os.makedirs(self.directory, exist_ok=True)
        self._folder = TrainingFolder(self.directory)
        self._folder.lock()

    def on_train_batch_end(self, batch, logs=None):
        if self._step() % self.every_n_steps == 0:
            self._save()

    def on_train_end(self, logs=None):
        try:
            if self.save_at_end and self.last_saved != self._step():
                self._save()
        finally:
            if self._folder is not None:
                self._folder.unlock()
                self._folder = None

    def _save(self):
        from .folder import free_space

        try:
            Checkpoint(self.model).save(self.directory, self._step(), prefix=self.prefix, max_to_keep=self.max_to_keep)
        except OSError as e:
            if self._folder is not None:  # training stops here: give the folder up
                self._folder.unlock()
                self._folder = None
            raise CheckpointWriteError(
                e.errno, f"cannot save the checkpoint of step {self._step()} in {self.directory}: "
                         f"{e.strerror or e} ({free_space(self.directory)} free); the previous checkpoint is intact"
            ) from e
        self.last_saved = self._step()


class StopOnSignal(Callback):
    """Stop training cleanly on SIGINT (Ctrl-C) or SIGTERM (what schedulers send before a kill).

    The current step finishes; the loop then ends as if its steps were done,
    so :class:`ModelCheckpoint` saves that step and the loggers flush. After
    training, :attr:`signal` holds the signal's number (None when none came)
    and :attr:`exit_code` is ``128 + signal`` (130, 143). A second signal
    stops at once (``os._exit``): still safe, as after ``kill -9``, since
    every file is replaced atomically.
    """

    def __init__(self):
        super().__init__()
        self.signal = None
        self._previous = {}

    @property
    def exit_code(self):
        return None if self.signal is None else 128 + self.signal

    def on_train_begin(self, logs=None):
        import signal
        import threading

        self.signal = None
        if threading.current_thread() is not threading.main_thread():
            return  # signals reach the main thread only
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.signal is not None:
            os._exit(128 + signum)
        self.signal = signum
        if self.model is not None:
            self.model.stop_training = True

    def on_train_batch_end(self, batch, logs=None):
        if self.signal is not None:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        import signal

        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
