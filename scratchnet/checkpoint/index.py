"""The index of a checkpoint folder: which checkpoints exist, and which is the newest.

``<directory>/checkpoint`` is a small JSON file, ``{"latest": name, "all": [names]}``,
replaced atomically after each save, so it only ever names complete files.
"""
from __future__ import annotations

import json
import os
import re

from ..archive import CheckpointError, atomic_write

INDEX_NAME = "checkpoint"
_CHECKPOINT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.]*-[0-9]+")


def read_index(directory):
    path = os.path.join(directory, INDEX_NAME)
    try:
        with open(path, encoding="utf-8") as f:
            index = json.load(f)
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"checkpoint index {path!r} is unreadable ({e})") from None
    if not isinstance(index, dict) or not isinstance(index.get("all"), list):
        raise CheckpointError(f"checkpoint index {path!r} is not a scratchnet index")
    # save() deletes the oldest names listed here, and latest_checkpoint()
    # opens one: only plain file names inside the directory are accepted, so
    # an edited or foreign index can never point outside it.
    latest = index.get("latest")
    for name in index["all"] + ([] if latest is None else [latest]):
        if not is_plain_name(name):
            raise CheckpointError(
                f"checkpoint index {path!r} names {name!r}, which is not a file name inside {directory!r}"
            )
    return index


def is_plain_name(name):
    return (isinstance(name, str) and name not in ("", ".", "..", INDEX_NAME) and not name.startswith(".")
            and os.path.basename(name) == name and (os.altsep is None or os.altsep not in name))


def write_index(directory, latest, kept):
    text = json.dumps({"latest": latest, "all": kept}, indent=1).encode("utf-8")
    atomic_write(os.path.join(directory, INDEX_NAME), lambda f: f.write(text))


def latest_checkpoint(directory):
    """The path of the newest checkpoint in ``directory``, or None if there is none.

    As ``tf.train.latest_checkpoint``: read from the index, so a checkpoint
    whose save was interrupted is never returned. An unreadable index, or one
    that names a file outside ``directory``, is a :class:`CheckpointError`.
    """
    index = read_index(directory)
    if index is None or not index.get("latest"):
        return None
    path = os.path.join(directory, index["latest"])
    return path if os.path.exists(path) else None


def list_checkpoints(directory):
    """Paths of the checkpoints in ``directory``, oldest first: those the index names, then any other
    ``<prefix>-<step>`` file (an index lost or damaged), by step."""
    try:
        index = read_index(directory) or {"all": []}
    except CheckpointError:
        index = {"all": []}
    named = [n for n in index["all"] if os.path.isfile(os.path.join(directory, n))]
    try:
        files = os.listdir(directory)
    except OSError:
        files = []
    others = sorted((n for n in files if _CHECKPOINT_NAME.fullmatch(n) and n not in named),
                    key=lambda n: int(n.rpartition("-")[2]))
    return [os.path.join(directory, n) for n in named + others]
