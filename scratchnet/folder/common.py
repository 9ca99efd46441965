"""A training folder's file names and errors, and the small helpers every module of :mod:`scratchnet.folder` uses."""
from __future__ import annotations

import os
import shutil

RUN_FILE = "run.json"
PID_FILE = "train.pid"
METRICS_FILES = ("metrics.csv", "metrics.jsonl")
PREFIX = "model"  # the checkpoints' names: model-<step>
DTYPES = ("float32", "float64")


class FolderError(Exception):
    """A training folder cannot be used as asked; the message says why and what to do."""


class FolderBusy(FolderError):
    """Another live process is training into the folder."""


def free_space(path):
    """Free bytes on the filesystem holding ``path`` (its nearest existing parent), as ``"1.2 GB"``."""
    while path and not os.path.exists(path):
        path = os.path.dirname(path)
    try:
        free = shutil.disk_usage(path or ".").free
    except OSError:
        return "unknown"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if free < 1024 or unit == "TB":
            return f"{free:.0f} {unit}" if unit == "B" else f"{free:.1f} {unit}"
        free /= 1024


def checkpoint_step(name):
    """The step in a checkpoint's name: ``"model-1000"`` -> 1000."""
    return int(name.rpartition("-")[2])


def _reason(e):
    """An exception as a short phrase: ``Permission denied``, ``Expecting value: line 1 column 1 (char 0)``."""
    return e.strerror if isinstance(e, OSError) and e.strerror else str(e)
