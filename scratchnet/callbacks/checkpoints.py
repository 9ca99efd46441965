"""``ModelCheckpoint`` and ``StopOnSignal``: save while training, own the folder, stop cleanly."""
from __future__ import annotations

import json
import os

from ..checkpoint import INDEX_NAME, Checkpoint, CheckpointError, parse_header, read_archive
from ..checkpoint.index import is_checkpoint_file, is_plain_name, parse_checkpoint_name, read_index
from ..folder import RUN_FILE, FolderError, TrainingFolder, free_space
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

    It also refuses, before the first step, a folder that holds another run,
    as the CLI does: a CLI run (``run.json``), checkpoints with another prefix,
    or checkpoints of this prefix that this model does not continue (other
    variables, or steps beyond the model's). Saving there would rotate that
    run's checkpoints away or mix the two runs. A run this model continues
    (restored from the folder's newest checkpoint, or the same model trained
    again) needs no option. When the folder was taken by the caller (the CLI
    locks and checks it before training), the caller's checks stand.

    Parameters
    ----------
    directory : str
    every_n_steps : int
    max_to_keep : int or None
    prefix : str
        File names are ``<prefix>-<step>``.
    save_at_end : bool
        Also save when training ends (or is stopped) on a step that was not saved.
    overwrite : bool
        Train into a folder holding another run anyway: this run's
        checkpoints become the newest, and the older checkpoints named
        ``<prefix>-<step>`` are rotated out (deleted, oldest first) as it saves.
        No other file is touched.
    allow_nonfinite : bool
        Save weights that hold NaN or Inf (``Checkpoint.save``'s option; the
        newest finite checkpoint is then kept besides the ``max_to_keep``).
        By default such a save stops training with a
        :class:`scratchnet.checkpoint.NonFiniteError`.
    """

    def __init__(self, directory, every_n_steps=1000, max_to_keep=5, prefix="model", save_at_end=True,
                 overwrite=False, allow_nonfinite=False):
        super().__init__()
        if isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ValueError(f"ModelCheckpoint: every_n_steps must be a positive int, got {every_n_steps!r}")
        if max_to_keep is not None and (isinstance(max_to_keep, bool) or not isinstance(max_to_keep, int)
                                        or max_to_keep < 1):
            raise ValueError(f"ModelCheckpoint: max_to_keep must be a positive int or None, got {max_to_keep!r}")
        if not is_plain_name(prefix):
            raise ValueError(f"ModelCheckpoint: prefix must be a plain file name other than {INDEX_NAME!r}, "
                             f"got {prefix!r}")
        self.directory = directory
        self.every_n_steps = every_n_steps
        self.max_to_keep = max_to_keep
        self.prefix = prefix
        self.save_at_end = bool(save_at_end)
        self.overwrite = bool(overwrite)
        self.allow_nonfinite = bool(allow_nonfinite)
        self.last_saved = None
        self._folder = None

    def on_train_begin(self, logs=None):
        os.makedirs(self.directory, exist_ok=True)
        folder = TrainingFolder(self.directory)
        taken_by_caller = folder.held  # the CLI: it checked the folder against its --resume/--overwrite
        folder.lock()
        self._folder = folder
        try:
            self._check_folder(checked_by_caller=taken_by_caller)
        except BaseException:
            self._give_up_folder()
            raise
        if not taken_by_caller:
            folder.claim()

    def _check_folder(self, checked_by_caller):
        """Refuse, before the first step, a folder this run must not save into (see the class docstring)."""
        try:
            read_index(self.directory)
        except CheckpointError as e:
            raise CheckpointError(f"ModelCheckpoint: {e}; every save would fail, so nothing was trained: move it "
                                  f"away (sn.checkpoint.list_checkpoints finds the checkpoints without it)") from None
        if checked_by_caller or self.overwrite:
            return
        problem = _other_run(self.directory, self.prefix, self.model)
        if problem is not None:
            raise FolderError(
                f"ModelCheckpoint: {self.directory} {problem}; saving into it would delete them or mix the runs, so "
                f"nothing was trained or written. Train into another folder, or pass overwrite=True to let this "
                f"run's checkpoints replace them (other files are never touched)")

    def on_train_batch_end(self, batch, logs=None):
        if self._step() % self.every_n_steps == 0:
            self._save()

    def on_train_end(self, logs=None):
        try:
            if self.save_at_end and self.last_saved != self._step():
                self._save()
        finally:
            self._give_up_folder()

    def _save(self):
        try:
            Checkpoint(self.model).save(self.directory, self._step(), prefix=self.prefix,
                                        max_to_keep=self.max_to_keep, allow_nonfinite=self.allow_nonfinite)
        except OSError as e:
            self._give_up_folder()  # training stops here
            raise CheckpointWriteError(
                e.errno, f"cannot save the checkpoint of step {self._step()} in {self.directory}: "
                         f"{e.strerror or e} ({free_space(self.directory)} free); the previous checkpoint is intact"
            ) from e
        except BaseException:  # a NonFiniteError, an interrupt: training stops here too
            self._give_up_folder()
            raise
        self.last_saved = self._step()

    def _give_up_folder(self):
        if self._folder is not None:
            self._folder.unlock()
            self._folder = None


def _other_run(directory, prefix, model):
    """What in ``directory`` belongs to a run other than ``model``'s, in words; None when nothing does.

    Another run is: a CLI run (``run.json``); checkpoints with another prefix;
    or checkpoints ``<prefix>-<step>`` that ``model`` does not continue: a
    newest step beyond the model's (a fresh model would write between them),
    or other variable names or shapes.
    """
    if os.path.lexists(os.path.join(directory, RUN_FILE)):
        return f"holds a run of the scratchnet command line ({RUN_FILE}{_run_model(directory)})"
    by_prefix = _checkpoints_by_prefix(directory)
    others = sorted(n for p, steps in by_prefix.items() if p != prefix for n in (f"{p}-{s}" for s in steps))
    if others:
        return f"holds checkpoints of another run ({_few(others)}; this one's are named {prefix}-<step>)"
    steps = by_prefix.get(prefix)
    if not steps:
        return None
    newest = max(steps)
    name = f"{prefix}-{newest}"
    step = int(getattr(model, "step", 0) or 0)
    if newest > step:
        return (f"holds checkpoints up to step {newest} ({name}) and this model is at step {step}: to continue that "
                f"run, restore it first (sn.Checkpoint(model).restore(sn.latest_checkpoint({directory!r})))")
    differences = _variable_differences(os.path.join(directory, name), model)
    if differences:
        return f"holds checkpoints of another model ({name}: {differences})"
    return None


def _run_model(directory):
    """``", model 'mlp'"`` from a CLI ``run.json``, or ``""`` when it cannot be read."""
    try:
        with open(os.path.join(directory, RUN_FILE), encoding="utf-8") as f:
            run = json.load(f)
    except (OSError, ValueError):
        return ""
    return f", model {run['model']!r}" if isinstance(run, dict) and isinstance(run.get("model"), str) else ""


def _checkpoints_by_prefix(directory):
    """``{prefix: [steps]}`` of the checkpoint files in ``directory`` (named ``<prefix>-<step>``, starting as a
    checkpoint does), whatever the index says."""
    found = {}
    for name in sorted(os.listdir(directory)):
        parts = parse_checkpoint_name(name)
        if parts is not None and is_checkpoint_file(os.path.join(directory, name)):
            found.setdefault(parts[0], []).append(parts[1])
    return found


def _variable_differences(path, model):
    """How the weights of the checkpoint at ``path`` differ from ``model``'s, in words; None when they agree.

    An unbuilt model (no parameters yet) cannot be compared and agrees.
    """
    in_model = {p.name: tuple(p.shape) for p in model.parameters()}
    if not in_model:
        return None
    try:
        meta, arrays = read_archive(path)
        saved = {n: tuple(arrays[n].shape) for n in parse_header(path, meta, arrays)["weights"]}
    except CheckpointError as e:
        return f"it cannot be read: {e}"
    if saved == in_model:
        return None
    only_model = sorted(set(in_model) - set(saved))
    only_saved = sorted(set(saved) - set(in_model))
    shapes = sorted(f"{n} {saved[n]} in it, {in_model[n]} in the model"
                    for n in set(saved) & set(in_model) if saved[n] != in_model[n])
    parts = ([f"it lacks the model's {_few(only_model)}"] if only_model else []) \
        + ([f"it has {_few(only_saved)}, which the model lacks"] if only_saved else []) \
        + ([f"shapes differ: {_few(shapes)}"] if shapes else [])
    return "; ".join(parts)


def _few(names, n=3):
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


class StopOnSignal(Callback):
    """Stop training cleanly on SIGINT (Ctrl-C), SIGTERM (what schedulers send before a kill) or SIGHUP
    (a closed terminal or ssh session).

    The current step finishes; the loop then ends as if its steps were done,
    so :class:`ModelCheckpoint` saves that step and the loggers flush. After
    training, :attr:`signal` holds the signal's number (None when none came)
    and :attr:`exit_code` is ``128 + signal`` (130, 143, 129). A second signal
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
        for sig in (signal.SIGINT, signal.SIGTERM, *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])):
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
