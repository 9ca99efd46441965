"""The errors the data loaders raise when the data cannot be had or cannot be used.

- :class:`DataNotFound`: a path the caller *named* (``load_mnist(path=...)``,
  ``load_text(path)``, ``--data``, ``test_path=``) does not exist or lacks
  the files it should hold. Nothing falls back to other data then: the
  caller asked for that path. It is a :class:`FileNotFoundError`.
- :class:`MnistUnavailable`: nothing was named, and the full data set is
  neither on this machine nor downloadable (or the offline sample cannot be
  had either).
- :class:`DataError`: a file is there but its contents cannot be used: a
  malformed or truncated IDX file (:class:`~scratchnet.data.idx.IdxError`),
  labels outside 0..9, images of the wrong size, text that is empty, not
  UTF-8, too short for one batch, or larger than a stated cap.
"""
from __future__ import annotations


class DataNotFound(FileNotFoundError):
    """A path the caller named does not exist or lacks the files it should hold.

    The message is one line that names the path and says what is missing
    (for MNIST: which IDX files, under which accepted names).
    """


class MnistUnavailable(RuntimeError):
    """The full data set is not on this machine and could not be downloaded."""


class DataError(ValueError):
    """A data file's contents cannot be used; the one-line message names the file and what is wrong.

    Every size a file declares is checked against the file and a stated cap
    before anything is allocated for it, so a small crafted file fails here
    rather than exhausting memory. A ``ValueError``, as these errors were
    before they had a type of their own.
    """
