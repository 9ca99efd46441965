"""Checkpoints: save a training run and bring it back, safely.

A checkpoint is one file, ``<directory>/<prefix>-<step>`` (``runs/model-1000``,
the global step in the name, as ``tf.train.Saver`` writes it), holding

- the weights, by parameter name (``"layer1/weights"``);
- the moving averages, as ``"<name>/ExponentialMovingAverage"`` (TensorFlow's names);
- the optimizer's state (its iteration count and slots);
- the global step and the state of the global random generator, so that a
  resumed run continues exactly as an uninterrupted one would.

A small index file, ``<directory>/checkpoint``, names the newest checkpoint
and those kept; :func:`latest_checkpoint` reads it.

Safety
------
- Every file is written to a temporary name, flushed to disk (``fsync``) and
  renamed over its final name (``os.replace`` is atomic). A run killed while
  saving leaves the previous checkpoint and the index that names it intact
  (and, at worst, a hidden ``.<name>.*.tmp`` file, never read, safe to delete).
- The file ends with the SHA-256 of everything before it. A truncated or
  corrupted file is detected and reported before anything is loaded.
- Nothing is unpickled: the file is a JSON header plus raw little-endian
  array bytes (:mod:`scratchnet.archive`), read back with ``numpy.frombuffer``.
- :meth:`Checkpoint.restore` validates every name and shape first and only
  then changes the model: it never leaves a model half-restored.

The file format is :mod:`scratchnet.archive`'s.
"""
from __future__ import annotations

from ..archive import CheckpointError, read_archive, write_archive
from .header import FORMAT_VERSION, list_variables, load_variables, parse_header
from .index import INDEX_NAME, latest_checkpoint, list_checkpoints
from .saver import Checkpoint

__all__ = ["FORMAT_VERSION", "INDEX_NAME", "Checkpoint", "CheckpointError", "latest_checkpoint", "list_checkpoints",
           "list_variables", "load_variables", "parse_header", "read_archive", "write_archive"]
