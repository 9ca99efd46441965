"""Which checkpoints a save keeps and which it deletes: only ever the files this saver wrote, and never the newest
finite one (:func:`first_nonfinite` finds a NaN or Inf among the arrays)."""
from __future__ import annotations

import os
import warnings

import numpy

from ..archive import CheckpointError, read_archive
from .index import is_checkpoint_file, is_own_checkpoint, parse_checkpoint_name


# -- non-finite values ---------------------------------------------------------------------


def first_nonfinite(arrays):
    """The name of the first float array of ``{name: numpy.ndarray}`` holding NaN or Inf, or None."""
    for name, a in arrays.items():
        if a.dtype.kind == "f" and not numpy.isfinite(a).all():
            return name
    return None


def _is_finite_checkpoint(path):
    """Whether the checkpoint at ``path`` reads (checksum included) and holds only finite values."""
    try:
        _, arrays = read_archive(path)
    except CheckpointError:
        return False
    return first_nonfinite(arrays) is None


# -- rotation: only ever among the files this saver wrote -------------------------------------


def _rotate(directory, listed, name, prefix, max_to_keep, finite):
    """``(kept, dropped)``: the index's names after saving ``name``, and the names to delete.

    ``listed`` is what the index lists now (plain names: :func:`read_index` checked them).

    Only this saver's checkpoints rotate: the newest ``max_to_keep`` are kept.
    When the new checkpoint is not finite (``allow_nonfinite``), the newest
    finite one is kept as well, so that a run gone to NaN never rotates its
    last good checkpoint away. Another saver's checkpoints in the index (another
    prefix) stay in it, untouched.
    """
    own, others = _sort_listed(directory, listed, prefix)
    names = [n for n in own if n != name] + [name]
    dropped = names[:-max_to_keep] if max_to_keep else []
    if not finite and dropped:
        last_good = next((n for n in reversed(names[:-1]) if _is_finite_checkpoint(os.path.join(directory, n))), None)
        if last_good in dropped:
            dropped.remove(last_good)
    return others + [n for n in names if n not in dropped], dropped


def _sort_listed(directory, listed, prefix):
    """``(own, others)``: the checkpoints of ``listed`` this saver wrote (:func:`is_own_checkpoint`) and those
    of savers with other prefixes, oldest first, each once.

    Any other file listed (``"notes.txt"``, ``"run.json"``, a user's file named
    ``<prefix>-<step>``) is left out, with a warning: the index is a file anyone
    can edit, and the saver deletes what it lists.
    """
    own, others, ignored = [], [], []
    for n in listed:
        parts = parse_checkpoint_name(n)  # None for anything but "<prefix>-<step>"
        if n in own or n in others:
            continue
        if parts is not None and is_checkpoint_file(os.path.join(directory, n)):
            (own if parts[0] == prefix else others).append(n)
        elif parts is None or os.path.lexists(os.path.join(directory, n)):
            ignored.append(n)
        # else: a checkpoint deleted by hand leaves the index quietly
    if ignored:
        warnings.warn(f"checkpoint index in {directory!r} lists {', '.join(map(repr, ignored))}, which are not "
                      f"checkpoints a saver wrote; they are left out of the index and never deleted", stacklevel=4)
    return own, others


def _delete_own_checkpoint(directory, name, prefix):
    """Delete ``directory/name`` if it is still a checkpoint this saver wrote; anything else stays."""
    if not is_own_checkpoint(directory, name, prefix):
        return
    try:
        os.remove(os.path.join(directory, name))
    except FileNotFoundError:
        pass
