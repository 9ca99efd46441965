"""The errors the data loaders raise when the data cannot be had.

- :class:`DataNotFound`: a path the caller *named* (``load_mnist(path=...)``,
  ``load_text(path)``, ``--data``, ``test_path=``) does not exist or lacks
  the files it should hold. Nothing falls back to other data then: the
  caller asked for that path. It is a :class:`FileNotFoundError`.
- :class:`MnistUnavailable`: nothing was named, and the full data set is
  neither on this machine nor downloadable (or the offline sample cannot be
  had either).
"""
from __future__ import annotations


class DataNotFound(FileNotFoundError):
    """A path the caller named does not exist or lacks the files it should hold.

    The message is one line that names the path and says what is missing
    (for MNIST: which IDX files, under which accepted names).
    """


class MnistUnavailable(RuntimeError):
    """The full data set is not on this machine and could not be downloaded."""
