"""Taking a training folder: the ``flock`` on the folder itself, the locks this process holds, and finding the
owner (``/proc/locks``, ``train.pid``) that a second process is told about. :class:`TrainingFolder`'s
``lock``/``unlock``/``move_aside`` use these."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from .common import FolderError

# How often lock() tries again when the folder is moved away between opening and locking it.
_LOCK_ATTEMPTS = 20


@dataclass
class _Lock:
    fd: int
    count: int = 1
    made: list = field(default_factory=list)  # folders lock(create=True) made, outermost first


# Locks this process holds: {real path: _Lock}, so that the CLI and the
# ModelCheckpoint callback inside it can both ask for the same folder.
_held = {}


def _make_folders(path):
    """Create ``path`` and any missing parents; return those this call made, outermost first."""
    missing = []
    while path and not os.path.lexists(path):
        missing.append(path)
        parent = os.path.dirname(path.rstrip(os.sep))
        if parent == path:
            break
        path = parent
    made = []
    for folder in reversed(missing):
        try:
            os.mkdir(folder)
        except FileExistsError:  # another process made it first: it is not ours to remove
            continue
        made.append(folder)
    return made


def _remove_empty(folders):
    """Remove the folders of ``folders`` (outermost first) that are still empty, innermost first."""
    for folder in reversed(folders):
        try:
            os.rmdir(folder)
        except OSError:
            return


def _open_folder(path):
    try:
        return os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except NotADirectoryError:
        raise FolderError(f"{path} exists and is not a folder") from None


def _same_folder(fd, path):
    """Whether the open folder ``fd`` is still the one at ``path`` (not renamed away or replaced)."""
    try:
        now = os.stat(path)
    except OSError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino)


def _flock_owner(path):
    """The pid holding a ``flock`` on ``path``, from the kernel's table (``/proc/locks``), or None."""
    try:
        st = os.stat(path)
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in lines:
        parts = line.split()
        # "1: FLOCK  ADVISORY  WRITE 5040 fe:00:2146514 0 EOF" (a waiter's line has "->" after the number)
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == device and parts[4].isdigit():
            pid = int(parts[4])
            if pid > 0 and pid != os.getpid():
                return pid
    return None


def _aside_name(path):
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = path.rstrip(os.sep)
    target, n = f"{base}.old-{stamp}", 1
    while os.path.lexists(target):
        n += 1
        target = f"{base}.old-{stamp}-{n}"
    return target


def _read_pid(path):
    try:
        with open(path, encoding="ascii") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None
