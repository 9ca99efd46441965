"""A training folder (``--logdir``): what it holds, who owns it, and how it is kept intact.

A folder holds ``run.json`` (which model, hyperparameters, dtype, data), the
checkpoints and their index, ``metrics.csv``/``metrics.jsonl`` and the
TensorBoard runs ``train/`` and ``test/``. The promises:

- **One owner at a time.** :meth:`TrainingFolder.lock` takes an exclusive
  ``flock`` on the folder itself (no lock file is created), *before* anything
  in it is read, created or moved: a command that must create the folder
  creates it and locks it in one step (:meth:`lock` with ``create=True``),
  and ``--overwrite`` moves an old run aside holding that lock. The owner's
  pid is found from the kernel's lock table (and ``train.pid``, written once
  training starts), so a second process is told who it is. The kernel drops a
  ``flock`` when its process dies, so ``kill -9`` never leaves a folder
  locked: a stale ``train.pid`` is simply taken over.
- **Nothing written before everything is checked.** The command reads and
  validates (:meth:`TrainingFolder.read_run`, :meth:`resume_checkpoint`) and
  only then writes, and ``run.json`` is replaced atomically. A folder the
  command created is removed again if it ends before writing into it.
- **No silent overwrite.** :meth:`TrainingFolder.move_aside` renames an old run
  to ``<folder>.old-<time>`` instead of deleting it; only a training folder
  (one holding ``run.json`` or checkpoints) is ever moved.
"""
from __future__ import annotations

# The package's modules, by concern: common.py (the file names, the errors),
# locking.py (the flock and who holds it), contents.py (checking run.json and
# the checkpoints, removing the demo's files) and training_folder.py (the
# TrainingFolder that puts them together).
from .common import DTYPES, METRICS_FILES, PID_FILE, PREFIX, RUN_FILE, FolderBusy, FolderError, checkpoint_step, free_space
from .training_folder import TrainingFolder

__all__ = ["DTYPES", "METRICS_FILES", "PID_FILE", "PREFIX", "RUN_FILE", "FolderBusy", "FolderError", "TrainingFolder",
           "checkpoint_step", "free_space"]
