"""The index of a checkpoint folder: which checkpoints exist, and which is the newest.

``<directory>/checkpoint`` is a small JSON file, ``{"latest": name, "all": [names]}``,
replaced atomically after each save, so it only ever names complete files.

The index is a plain file a user can edit, damage or replace, so it is never
trusted: anything malformed is a :class:`CheckpointError` (:func:`read_index`),
and the saver deletes only what it can prove it wrote
(:func:`is_own_checkpoint`), whatever the index lists.
"""
from __future__ import annotations

import json
import os
import re
import stat

from ..archive import MAGIC, CheckpointError, atomic_write

INDEX_NAME = "checkpoint"
# ``<prefix>-<step>`` for any prefix: what list_checkpoints() recognises on disk.
_CHECKPOINT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.]*-[0-9]+")
# Exactly what a saver writes, ``f"{prefix}-{step}"``, for any plain prefix: the step with no sign, no leading zero.
_ANY_SAVER_NAME = re.compile(r"(?P<prefix>.+)-(?P<step>0|[1-9][0-9]*)")


def read_index(directory):
    """The index as ``{"latest": name or None, "all": [names]}``, or None when there is none.

    A damaged index is an error, not a guess: it is what ``latest_checkpoint``
    and ``--resume`` trust, and what rotation deletes from, so neither should
    act on a reading of it that may be wrong.

    Raises
    ------
    CheckpointError
        The index cannot be read (not UTF-8 JSON, a folder, unreadable), is not
        an object with a list ``"all"``, or names anything but a plain file name
        inside ``directory`` (``"../../etc/passwd"``, a number, ``null``).
    """
    path = os.path.join(directory, INDEX_NAME)
    try:
        with open(path, "rb") as f:
            index = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:  # a folder, unreadable, not UTF-8, not JSON
        raise CheckpointError(f"checkpoint index {path!r} is unreadable ({e})") from None
    if not isinstance(index, dict) or not isinstance(index.get("all"), list):
        raise CheckpointError(f"checkpoint index {path!r} is not a scratchnet index "
                              f"(an object with a list 'all' of checkpoint names)")
    # latest_checkpoint() opens the latest, and save() may delete what "all"
    # lists: only plain file names inside the directory are accepted, so an
    # edited index never points outside it.
    latest = index.get("latest")
    for name in index["all"] + ([] if latest is None else [latest]):
        if not is_plain_name(name):
            raise CheckpointError(
                f"checkpoint index {path!r} names {name!r}, which is not a file name inside {directory!r}"
            )
    return {"latest": latest, "all": list(index["all"])}


def is_plain_name(name):
    """Whether ``name`` is a file name directly inside a folder: no separator, not hidden, not ``..``."""
    return (isinstance(name, str) and name not in ("", ".", "..", INDEX_NAME) and not name.startswith(".")
            and os.path.basename(name) == name and (os.altsep is None or os.altsep not in name)
            and "\0" not in name)


def parse_checkpoint_name(name):
    """``(prefix, step)`` of a name a saver writes, ``"<prefix>-<step>"`` (the step as ``str(int)``); None for any
    other name."""
    match = _ANY_SAVER_NAME.fullmatch(name) if is_plain_name(name) else None  # is_plain_name: a str
    return None if match is None else (match["prefix"], int(match["step"]))


def own_name_pattern(prefix):
    """The names a saver with ``prefix`` writes: ``<prefix>-<step>``, the step as ``str(int)`` (no sign, no
    leading zero)."""
    return re.compile(re.escape(prefix) + r"-(0|[1-9][0-9]*)")


def is_regular_file(path):
    """Whether ``path`` is a regular file itself (not a link to one, not a folder)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def is_checkpoint_file(path):
    """Whether ``path`` is a regular file (not a link, not a folder) that starts as an archive does.

    The magic alone, not the checksum: cheap enough to ask before every
    deletion, and enough to tell a checkpoint from a user's file.
    """
    if not is_regular_file(path):
        return False
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def is_own_name(name, prefix):
    """Whether ``name`` is one a saver with ``prefix`` writes (a plain name, exactly ``<prefix>-<step>``)."""
    return is_plain_name(name) and own_name_pattern(prefix).fullmatch(name) is not None


def is_own_checkpoint(directory, name, prefix):
    """Whether ``directory/name`` is a checkpoint a saver with ``prefix`` wrote: its exact name pattern, and a
    checkpoint file. Only such files are ever deleted by rotation."""
    return is_own_name(name, prefix) and is_checkpoint_file(os.path.join(directory, name))


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
    if index is None or not index["latest"]:
        return None
    path = os.path.join(directory, index["latest"])
    return path if os.path.exists(path) else None


def list_checkpoints(directory):
    """Paths of the checkpoints in ``directory``, oldest first: those the index names, then any other
    ``<prefix>-<step>`` file (an index lost or damaged), by step. Never raises on a damaged index."""
    try:
        index = read_index(directory) or {"all": []}
    except CheckpointError:
        index = {"all": []}
    named = [n for n in index["all"]
             if _CHECKPOINT_NAME.fullmatch(n) and os.path.isfile(os.path.join(directory, n))]
    try:
        files = os.listdir(directory)
    except OSError:
        files = []
    others = sorted((n for n in files if _CHECKPOINT_NAME.fullmatch(n) and n not in named),
                    key=lambda n: int(n.rpartition("-")[2]))
    return [os.path.join(directory, n) for n in named + others]
