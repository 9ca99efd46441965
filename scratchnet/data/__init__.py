"""Data sets: MNIST and Fashion-MNIST (IDX files, verified downloads, an offline sample) and text corpora.

>>> mnist = sn.data.load_mnist(one_hot=True, allow_sample=True)
>>> print(mnist.source)
>>> x, y = mnist.train.next_batch(100)

>>> corpus = sn.data.load_text(level="char")      # Python's help topics
>>> for x, y in corpus.batches(32, 50): ...
"""
from __future__ import annotations

from .download import DownloadError, cache_dir, download
from .idx import IdxError, read_idx, write_idx
from .mnist import DataSet, Datasets, MnistUnavailable, load_fashion_mnist, load_mnist
from .sample import load_sample
from .text import TextBatches, TextCorpus, load_text

__all__ = [
    "DataSet", "Datasets", "DownloadError", "IdxError", "MnistUnavailable", "TextBatches", "TextCorpus",
    "cache_dir", "download", "load_fashion_mnist", "load_mnist", "load_sample", "load_text", "read_idx", "write_idx",
]
