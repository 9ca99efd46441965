"""A training folder (``--logdir``): what it holds, who owns it, and how it is kept intact.

A folder holds ``run.json`` (which model, hyperparameters, dtype, data), the
checkpoints and their index, ``metrics.csv``/``metrics.jsonl`` and the
TensorBoard runs ``train/`` and ``test/``. The promises:

- **One owner at a time.** :meth:`TrainingFolder.lock` takes an exclusive
  ``flock`` on the folder itself (no lock file is created), and writes the
  owner's pid to ``train.pid`` so a second process can be told who it is. The
  kernel drops a ``flock`` when its process dies, so ``kill -9`` never leaves
  a folder locked: a stale ``train.pid`` is simply taken over.
- **Nothing written before everything is checked.** The command reads and
  validates (:meth:`TrainingFolder.read_run`, :meth:`newest_intact_checkpoint`)
  and only then writes, and ``run.json`` is replaced atomically.
- **No silent overwrite.** :meth:`TrainingFolder.move_aside` renames an old run
  to ``<folder>.old-<time>`` instead of deleting it.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import time

from .archive import CheckpointError, atomic_write, read_archive
from .checkpoint import INDEX_NAME, latest_checkpoint, list_checkpoints

RUN_FILE = "run.json"
PID_FILE = "train.pid"

# Locks this process holds: {real path: [fd, count]}, so that the CLI and the
# ModelCheckpoint callback inside it can both ask for the same folder.
_held = {}


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


class TrainingFolder:
    """The training folder at ``path`` (it may not exist yet)."""

    def __init__(self, path):
        self.path = path

    @property
    def exists(self):
        return os.path.isdir(self.path)

    # -- what it holds -----------------------------------------------------------------
    def read_run(self):
        """``run.json`` as a dict, or None when the folder holds no run."""
        path = os.path.join(self.path, RUN_FILE)
        try:
            with open(path, encoding="utf-8") as f:
                run = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise FolderError(f"{path} cannot be read ({e}); move it away to start a new run") from None
        if not isinstance(run, dict) or not isinstance(run.get("model"), str):
            raise FolderError(f"{path} is not a scratchnet run file (no 'model')")
        return run

    def write_run(self, run):
        """Replace ``run.json`` atomically."""
        text = json.dumps(run, indent=1, default=list).encode("utf-8")
        atomic_write(os.path.join(self.path, RUN_FILE), lambda f: f.write(text))

    def has_checkpoints(self):
        return self.exists and (os.path.exists(os.path.join(self.path, INDEX_NAME)) or bool(list_checkpoints(self.path)))

    def newest_intact_checkpoint(self):
        """``(newest, problem, intact)``: the newest checkpoint, what is wrong with it (None when it reads), and the
        newest one that reads (None when none does). Each is verified by its checksum."""
        newest = latest_checkpoint(self.path)
        candidates = list_checkpoints(self.path)
        if newest is None and not candidates:
            return None, None, None
        problem = None
        if newest is not None:
            try:
                read_archive(newest)
                return newest, None, newest
            except CheckpointError as e:
                problem = str(e)
        for path in reversed(candidates):
            if path == newest:
                continue
            try:
                read_archive(path)
                return newest, problem, path
            except CheckpointError:
                continue
        return newest, problem, None

    # -- ownership ---------------------------------------------------------------------
    @property
    def held(self):
        """True when this process holds the folder's lock."""
        return os.path.realpath(self.path) in _held

    def lock(self):
        """Take the folder for this process (re-entrant); raise :class:`FolderBusy` naming the owner.

        The folder must exist. Release with :meth:`unlock`.
        """
        key = os.path.realpath(self.path)
        if key in _held:
            _held[key][1] += 1
            return
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise FolderBusy(f"{self.path} is being trained into by {self._owner()}; wait for it to finish, "
                             f"or train into another --logdir") from None
        _held[key] = [fd, 1]

    def claim(self):
        """Record this process as the owner (``train.pid``); call once holding the lock, before training."""
        atomic_write(os.path.join(self.path, PID_FILE), lambda f: f.write(f"{os.getpid()}\n".encode()))

    def unlock(self):
        key = os.path.realpath(self.path)
        entry = _held.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            try:
                pid_file = os.path.join(self.path, PID_FILE)
                if _read_pid(pid_file) == os.getpid():
                    os.remove(pid_file)
            except OSError:
                pass
            os.close(entry[0])
            del _held[key]

    def release(self):
        """Give the folder up whatever the count (the command that took it is ending)."""
        entry = _held.get(os.path.realpath(self.path))
        if entry is not None:
            entry[1] = 1
            self.unlock()

    def _owner(self):
        pid = _read_pid(os.path.join(self.path, PID_FILE))
        if pid is None:
            return "another process"
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            command = ""
        return f"process {pid}" + (f" ({command})" if command else "")

    # -- moving an old run aside -------------------------------------------------------
    def remove(self):
        """Delete the folder (only for what scratchnet itself made to be replaced: an earlier demo's output)."""
        shutil.rmtree(self.path)

    def move_aside(self):
        """Rename the folder to ``<path>.old-<YYYYmmdd-HHMMSS>``; return the new name."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = f"{self.path.rstrip(os.sep)}.old-{stamp}"
        n = 1
        while os.path.exists(target):
            n += 1
            target = f"{self.path.rstrip(os.sep)}.old-{stamp}-{n}"
        os.rename(self.path, target)
        return target


def _read_pid(path):
    try:
        with open(path, encoding="ascii") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None
