"""Removing the temporary files (``.<name>.<pid>-<8 hex>.tmp``) that a save killed mid-write left behind, and only
those whose writer is gone."""
from __future__ import annotations

import os
import re

from .index import INDEX_NAME, is_plain_name, is_regular_file, own_name_pattern


def remove_stale_temporaries(directory, prefix="model", also=()):
    """Remove the temporary files a killed save left in ``directory``; return their names.

    :func:`scratchnet.archive.atomic_write` writes ``<name>`` through
    ``.<name>.<pid>-<8 hex digits>.tmp``; a process killed mid-save leaves that
    file behind. Only temporaries of this saver's own files are removed (of
    ``<prefix>-<step>`` and of the index), only regular files, and only those
    whose writing process is gone: a live one may be saving right now. Call it
    holding the folder's lock (:meth:`scratchnet.folder.TrainingFolder.lock`).
    ``also`` names other plain file names whose temporaries go too (the
    training folder's ``run.json`` and metrics).
    """
    if not is_plain_name(prefix):
        raise ValueError(f"remove_stale_temporaries: prefix must be a plain file name, got {prefix!r}")
    names = "|".join(re.escape(n) for n in (INDEX_NAME, *also))
    pattern = re.compile(r"\.(?:" + own_name_pattern(prefix).pattern + "|" + names
                         + r")\.(?P<pid>[1-9][0-9]{0,9})-[0-9a-f]{8}\.tmp")
    removed = []
    for name in sorted(os.listdir(directory)):
        match = pattern.fullmatch(name)
        path = os.path.join(directory, name)
        if match is None or _process_alive(int(match["pid"])) or not is_regular_file(path):
            continue
        try:
            os.remove(path)
        except FileNotFoundError:
            continue
        removed.append(name)
    return removed


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's live process (or a pid we cannot ask about): leave its file
    return True
