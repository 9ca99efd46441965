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
  then changes the model: it never leaves a model half-restored. Every array
  restored takes the dtype of the parameter it goes into (weights, optimizer
  slots and moving averages alike), so a float32 checkpoint makes a float64
  model float64 throughout.
- Rotation (``max_to_keep``) deletes only files the saver wrote: exactly
  ``<prefix>-<step>``, inside the folder, starting as a checkpoint does. An
  edited index can make it delete nothing else: another prefix's checkpoints
  stay listed and untouched, any other file it lists is dropped from it with a
  warning. A damaged index (not JSON, not an object, naming ``../x``) is a
  :class:`CheckpointError`, before a save writes anything.
- A checkpoint of NaN or Inf values is refused (:class:`NonFiniteError`), so
  the newest checkpoint is the last finite one; with ``allow_nonfinite=True``
  it is written and rotation still keeps the newest finite one.
- :func:`remove_stale_temporaries` removes what a killed save left behind,
  and nothing else.

The file format is :mod:`scratchnet.archive`'s.
"""
from __future__ import annotations

from ..archive import CheckpointError, read_archive, write_archive
from .header import FORMAT_VERSION, list_variables, load_variables, parse_header
from .index import INDEX_NAME, latest_checkpoint, list_checkpoints
from .saver import Checkpoint, NonFiniteError
from .temporaries import remove_stale_temporaries

__all__ = ["FORMAT_VERSION", "INDEX_NAME", "Checkpoint", "CheckpointError", "NonFiniteError", "latest_checkpoint",
           "list_checkpoints", "list_variables", "load_variables", "parse_header", "read_archive",
           "remove_stale_temporaries", "write_archive"]
