"""What a training folder holds, checked: ``run.json``'s fields, a checkpoint's damage, and the TensorBoard event
files the demo removes when it replaces its own run."""
from __future__ import annotations

import os
import stat

from ..archive import CheckpointError, read_archive
from ..checkpoint.index import is_regular_file
from .common import DTYPES, _reason

def _run_problem(run):
    """What is wrong with a parsed ``run.json`` (a short phrase naming the field), or None."""
    if not isinstance(run, dict):
        return f"a JSON {type(run).__name__}, not an object"
    if not isinstance(run.get("model"), str) or not run["model"]:
        return "no 'model'"
    checks = {
        "command": lambda v: isinstance(v, str),
        "hparams": lambda v: isinstance(v, dict),
        "dtype": lambda v: v in DTYPES,
        "data": lambda v: isinstance(v, str),
        "batch_size": lambda v: _is_int(v) and v > 0,
        "seed": lambda v: _is_int(v) and v >= 0,
        "vocab": lambda v: isinstance(v, list) and v and all(isinstance(t, str) for t in v),
        "level": lambda v: v in ("char", "word"),
        "data_path": lambda v: v is None or isinstance(v, str),
        "fashion": lambda v: isinstance(v, bool),
        "validation_size": lambda v: v is None or (_is_int(v) and v >= 0),
    }
    for name, ok in checks.items():
        if name in run and not ok(run[name]):
            return f"{name!r} is {run[name]!r}" if len(repr(run[name])) < 60 else f"{name!r} is malformed"
    return None


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _damage(path):
    """What is wrong with the checkpoint at ``path`` (a phrase naming it), or None when it reads intact."""
    try:
        read_archive(path)
    except CheckpointError as e:
        return str(e)
    except IsADirectoryError:
        return f"{path!r} is a folder, not a checkpoint file"
    except OSError as e:
        return f"{path!r} cannot be read ({_reason(e)})"
    return None


def _is_real_folder(path):
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _remove_event_files(folder):
    """Delete TensorBoard's event files (``events.out.tfevents.*``) in ``folder``; leave anything else."""
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if name.startswith("events.out.tfevents.") and is_regular_file(path):
            os.remove(path)
