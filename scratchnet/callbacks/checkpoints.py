"""``ModelCheckpoint`` and ``StopOnSignal``: save while training, own the folder, stop cleanly."""
from __future__ import annotations

import os

from ..checkpoint import Checkpoint
from .base import Callback


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
        from ..folder import TrainingFolder

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
        from ..folder import free_space

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
