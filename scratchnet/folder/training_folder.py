"""``TrainingFolder``: one training folder (``--logdir``), what it holds, who owns it, and moving an old run aside.

The promises it keeps are :mod:`scratchnet.folder`'s docstring; the checks and the locking it builds on are in
``contents.py`` and ``locking.py`` beside it.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import re

from ..archive import CheckpointError, atomic_write
from ..checkpoint import INDEX_NAME, list_checkpoints
from ..checkpoint.index import is_regular_file, read_index
from ..checkpoint.temporaries import remove_stale_temporaries
from .common import METRICS_FILES, PID_FILE, PREFIX, RUN_FILE, FolderBusy, FolderError, _reason, checkpoint_step
from .contents import _damage, _is_real_folder, _remove_event_files, _run_problem
from .locking import (_LOCK_ATTEMPTS, _aside_name, _flock_owner, _held, _Lock, _make_folders, _open_folder, _read_pid,
                      _remove_empty, _same_folder)


class TrainingFolder:
    """The training folder at ``path`` (it may not exist yet)."""

    def __init__(self, path):
        self.path = path

    @property
    def exists(self):
        return os.path.isdir(self.path)

    # -- what it holds -----------------------------------------------------------------
    def read_run(self):
        """``run.json`` as a dict, or None when the folder holds no run.

        Every field the commands use is checked here, once: a damaged or edited
        file (empty, not JSON, a list, ``"dtype": "float16"``) is a
        :class:`FolderError` naming the file and the field, never a traceback
        later on.
        """
        path = os.path.join(self.path, RUN_FILE)
        try:
            with open(path, "rb") as f:
                run = json.loads(f.read().decode("utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:  # unreadable, a folder, not UTF-8, not JSON
            raise FolderError(f"{path} cannot be read ({_reason(e)}); move it away to start a new run") from None
        problem = _run_problem(run)
        if problem:
            raise FolderError(f"{path} is not a scratchnet run file ({problem}); it was edited or is damaged: "
                              f"move it away to start a new run")
        return run

    def write_run(self, run):
        """Replace ``run.json`` atomically."""
        text = json.dumps(run, indent=1, default=list).encode("utf-8")
        atomic_write(os.path.join(self.path, RUN_FILE), lambda f: f.write(text))

    def has_checkpoints(self):
        return self.exists and (os.path.exists(os.path.join(self.path, INDEX_NAME)) or bool(list_checkpoints(self.path)))

    def is_training_folder(self):
        """Whether the folder holds a run (``run.json`` or checkpoints): the only kind ``--overwrite`` moves."""
        if not self.exists:
            return False
        pattern = re.compile(re.escape(PREFIX) + r"-[0-9]+")
        return any(n in (RUN_FILE, INDEX_NAME) or pattern.fullmatch(n) for n in os.listdir(self.path))

    def is_empty(self):
        return not self.exists or not os.listdir(self.path)

    def check_index(self):
        """The checkpoint index as a dict (None when there is none); a damaged or crafted one is a
        :class:`FolderError`, so that a run never starts that would fail at its first save."""
        try:
            return read_index(self.path)
        except (CheckpointError, OSError, ValueError) as e:
            raise FolderError(f"{_reason(e)}; move it away: --resume finds the checkpoints without it") from None

    def resume_checkpoint(self):
        """``(path, notes)``: the checkpoint ``--resume`` continues from, and why it is not simply the newest.

        The candidates, newest first, are the one the index names as latest,
        then every ``model-<step>`` the index lists or the folder holds (the
        index may be gone). A *missing* one is passed over, and ``notes`` says
        so: a user who deletes ``model-20`` asks to go on from ``model-15``. A
        *damaged* one (bad checksum, truncated, a folder, unreadable) stops
        the command with a :class:`FolderError` naming it and the newest intact
        one, which ``--resume-from`` continues from: a damaged file is never
        passed over silently, nor overwritten by the next save.

        ``path`` is None when the folder holds no checkpoint at all; when it
        names checkpoints and none of them is there, that is a FolderError too
        (starting from step 0 would overwrite the run's metrics).
        """
        index = self.check_index()
        names = self._checkpoint_names(index)
        notes = [] if index is not None or not names else ["the checkpoint index is missing; "
                                                           "the checkpoints were found by their names"]
        missing = []
        for i, name in enumerate(names):
            path = os.path.join(self.path, name)
            if not os.path.lexists(path):
                missing.append(name)
                continue
            problem = _damage(path)
            if problem is None:
                if missing:
                    notes.append(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing; "
                                 f"resuming from {name}")
                return path, notes
            intact = next((p for p in (os.path.join(self.path, n) for n in names[i + 1:])
                           if os.path.lexists(p) and _damage(p) is None), None)
            way_on = (f"the newest intact one is {intact}: continue from it with --resume-from {intact}" if intact
                      else "no intact checkpoint is left; start again with --overwrite (the run is moved aside)")
            raise FolderError(f"{problem}; {way_on}")
        if missing:
            raise FolderError(f"the checkpoints of {self.path} ({', '.join(missing)}) are all missing, so there is "
                              f"nothing to resume from; start again with --overwrite (the run is moved aside)")
        return None, notes

    def _checkpoint_names(self, index):
        """Checkpoint names, newest first: the index's latest, then the others it lists or the folder holds."""
        pattern = re.compile(re.escape(PREFIX) + r"-[0-9]+")
        listed = [n for n in (index or {}).get("all", []) if pattern.fullmatch(n)]
        try:
            on_disk = [n for n in os.listdir(self.path) if pattern.fullmatch(n)]
        except OSError:
            on_disk = []
        others = sorted(set(listed) | set(on_disk), key=checkpoint_step, reverse=True)
        latest = (index or {}).get("latest")
        return [latest] + [n for n in others if n != latest] if latest else others

    # -- ownership ---------------------------------------------------------------------
    @property
    def held(self):
        """True when this process holds the folder's lock."""
        return os.path.realpath(self.path) in _held

    def lock(self, create=False):
        """Take the folder for this process (re-entrant); raise :class:`FolderBusy` naming the owner.

        With ``create``, a missing folder (and missing parents) is made first;
        :meth:`release` removes what it made if the command ends before
        writing anything there. Without it, the folder must exist. Release
        with :meth:`unlock`.

        Another process may rename the folder aside (``--overwrite``) between
        our opening it and locking it: the lock would then be on its old run.
        So once locked, the folder is checked to still be the one at ``path``,
        and if it is not, it is unlocked and taken again.
        """
        key = os.path.realpath(self.path)
        if key in _held:
            _held[key].count += 1
            return
        for _ in range(_LOCK_ATTEMPTS):
            made = _make_folders(self.path) if create else []
            fd = _open_folder(self.path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                raise FolderBusy(f"{self.path} is being trained into by {self._owner()}; wait for it to finish, "
                                 f"or train into another --logdir") from None
            if _same_folder(fd, self.path):
                _held[os.path.realpath(self.path)] = _Lock(fd, 1, made)
                return
            os.close(fd)  # it was moved away under us: take the folder now at path
        raise FolderError(f"{self.path} kept being replaced while this command tried to lock it")

    def claim(self):
        """Record this process as the owner (``train.pid``); call once holding the lock, before training."""
        atomic_write(os.path.join(self.path, PID_FILE), lambda f: f.write(f"{os.getpid()}\n".encode()))

    def unlock(self):
        key = os.path.realpath(self.path)
        entry = _held.get(key)
        if entry is None:
            return
        entry.count -= 1
        if entry.count == 0:
            try:
                pid_file = os.path.join(self.path, PID_FILE)
                if _read_pid(pid_file) == os.getpid():
                    os.remove(pid_file)
            except OSError:
                pass
            _remove_empty(entry.made)  # still holding the lock, so no one has started using them
            os.close(entry.fd)
            del _held[key]

    def release(self):
        """Give the folder up whatever the count (the command that took it is ending)."""
        entry = _held.get(os.path.realpath(self.path))
        if entry is not None:
            entry.count = 1
            self.unlock()

    def _owner(self):
        pid = _flock_owner(self.path) or _read_pid(os.path.join(self.path, PID_FILE))
        if pid is None:
            return "another process"
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            command = ""
        return f"process {pid}" + (f" ({command})" if command else "")

    # -- moving an old run aside, clearing the demo's own --------------------------------
    def move_aside(self):
        """Rename the run to ``<path>.old-<YYYYmmdd-HHMMSS>``, put a new, empty, locked folder in its place, and
        return the old run's new name.

        The caller must hold the lock, and keeps holding it through the rename:
        no process can be training into the folder as it moves. One that opened
        it just before finds, once it gets its lock, that its folder is no
        longer at ``path`` (:meth:`lock` re-checks), and meets this one's.
        """
        key = os.path.realpath(self.path)
        old = _held.get(key)
        if old is None:
            raise FolderError(f"{self.path}: moving a run aside needs the folder's lock")
        target = _aside_name(self.path)
        os.rename(self.path, target)
        del _held[key]
        try:
            self.lock(create=True)
        except BaseException:
            if not os.path.lexists(self.path):  # put the run back, locked as it was
                os.rename(target, self.path)
                _held[key] = old
                raise
            os.close(old.fd)
            raise
        _held[os.path.realpath(self.path)].count = old.count
        os.close(old.fd)
        return target

    def move_back(self, aside):
        """Undo :meth:`move_aside` after a failure: the new folder (still empty) goes, the run at ``aside`` comes
        back, and the lock is given up. Returns False when the new folder is no longer empty (then nothing moves)."""
        pid_file = os.path.join(self.path, PID_FILE)
        if _read_pid(pid_file) == os.getpid():
            os.remove(pid_file)
        try:
            os.rmdir(self.path)
        except OSError:
            return False
        os.rename(aside, self.path)
        entry = _held.pop(os.path.realpath(self.path), None)
        if entry is not None:
            os.close(entry.fd)
        return True

    def remove_run_files(self):
        """Delete the files a run wrote here, and nothing else; return the names of the others, which stay.

        For the demo, which replaces its own earlier run: ``run.json``, the
        ``model-<step>`` checkpoints and their index, the metrics, the plot,
        the trace and TensorBoard's event files in ``train/`` and ``test/``.
        A user's notes beside them are kept. Call holding the lock.
        """
        ours = re.compile(re.escape(PREFIX) + r"-[0-9]+|" + "|".join(
            re.escape(n) for n in (RUN_FILE, INDEX_NAME, *METRICS_FILES, "curves.png", "trace.json")))
        kept = []
        for name in sorted(os.listdir(self.path)):
            path = os.path.join(self.path, name)
            if name in ("train", "test") and _is_real_folder(path):
                _remove_event_files(path)
                if os.listdir(path):
                    kept.append(name)
                else:
                    os.rmdir(path)
            elif ours.fullmatch(name) and is_regular_file(path):
                os.remove(path)
            elif name != PID_FILE:
                kept.append(name)
        return kept

    def remove_stale_temporaries(self):
        """Remove the temporary files that saves killed mid-write left here; return their names.

        :func:`scratchnet.archive.atomic_write` writes ``NAME`` through
        ``.NAME.<pid>-<8 hex>.tmp``. Only the temporaries of this folder's own
        files are removed (checkpoints, the index, ``run.json``, ``train.pid``
        and the metrics: the saver's ``remove_stale_temporaries``), and only
        those whose writer is gone. Call holding the lock.
        """
        return remove_stale_temporaries(self.path, prefix=PREFIX, also=(RUN_FILE, PID_FILE, *METRICS_FILES))
