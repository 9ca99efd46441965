"""Image data sets in memory: reading an IDX split, scaling it, splitting it and batching it.

:class:`DataSet` holds examples and labels and hands out ``next_batch``
like TensorFlow 1.x; :class:`Datasets` bundles ``train``, ``validation``
and ``test``. :func:`read_split`, :func:`prepare` and :func:`split` turn
raw uint8 digits into those, for both the full data sets
(:mod:`scratchnet.data.mnist`) and the offline sample
(:mod:`scratchnet.data.sample`).
"""
from __future__ import annotations

import numpy

from ._rng import generator
from .errors import DataError
from .idx import read_idx, read_idx_header

#: The size of an MNIST or Fashion-MNIST image; the lessons' models expect it.
IMAGE_SHAPE = (28, 28)
#: The number of classes: labels are 0..9.
NUM_CLASSES = 10


class DataSet:
    """Examples and labels with TensorFlow 1.x's ``next_batch``.

    Parameters
    ----------
    images : ndarray of shape (N, ...)
    labels : ndarray of shape (N,) or (N, K)
    seed : int, optional
        Seeds this data set's own shuffling. Without it, shuffling draws from
        ``scratchnet.random.generator()`` at each epoch, so ``sn.random.seed``
        makes a run repeatable.
    source : str
        Where the examples came from, for printing.
    """

    def __init__(self, images, labels, seed=None, source=""):
        if len(images) != len(labels):
            raise ValueError(
                f"DataSet: {len(images)} images but {len(labels)} labels "
                f"(images: {images.shape}, labels: {labels.shape})"
            )
        self._images = images
        self._labels = labels
        self._rng = None if seed is None else numpy.random.default_rng(seed)
        self.source = source
        self.epochs_completed = 0
        self._index_in_epoch = 0
        self._order = None

    images = property(lambda self: self._images, doc="All examples, (N, ...), in their stored order.")
    labels = property(lambda self: self._labels, doc="All labels, (N,) or (N, K), in their stored order.")
    num_examples = property(lambda self: len(self._images), doc="N, the number of examples.")

    def __len__(self):
        return len(self._images)

    def __repr__(self):
        shapes = f"images {self._images.shape[1:]}, labels {self._labels.shape[1:]}"
        return f"DataSet({self.num_examples} examples, {shapes})"

    def _permutation(self):
        rng = self._rng if self._rng is not None else generator()
        return rng.permutation(self.num_examples)

    def next_batch(self, batch_size, shuffle=True):
        """The next ``batch_size`` examples ``(images, labels)``.

        Every example is seen once per epoch. The order is reshuffled at the
        start of each epoch; a batch that crosses the end of an epoch takes
        the rest of the old epoch and the start of the new one, as TensorFlow
        does.

        Parameters
        ----------
        batch_size : int
            In ``[1, N]``.
        shuffle : bool
            Shuffle each epoch; otherwise the stored order.

        Returns
        -------
        images : ndarray of shape (batch_size, ...)
        labels : ndarray of shape (batch_size,) or (batch_size, K)
        """
        n = self.num_examples
        if not 1 <= batch_size <= n:
            raise ValueError(f"next_batch: batch_size must be in [1, {n}] for this data set, got {batch_size}")
        if self._order is None:
            self._order = self._permutation() if shuffle else numpy.arange(n)
        start = self._index_in_epoch
        if start + batch_size <= n:
            self._index_in_epoch += batch_size
            idx = self._order[start:self._index_in_epoch]
        else:
            rest = self._order[start:]
            self.epochs_completed += 1
            self._order = self._permutation() if shuffle else numpy.arange(n)
            self._index_in_epoch = batch_size - len(rest)
            idx = numpy.concatenate([rest, self._order[:self._index_in_epoch]])
        return self._images[idx], self._labels[idx]


class Datasets:
    """``train``, ``validation`` and ``test`` :class:`DataSet` s, and where they came from.

    Parameters
    ----------
    train, validation, test : DataSet
    source : str
        One line that says which data was used and how much, e.g.
        ``MNIST from ~/.cache/scratchnet/mnist: train 55,000, validation 5,000, test 10,000``.
    reason : str, optional
        Why a fallback (the sample) was used; None for the real thing.
    """

    def __init__(self, train, validation, test, source, reason=None):
        self.train, self.validation, self.test, self.source = train, validation, test, source
        self.reason = reason

    def __iter__(self):
        return iter((self.train, self.validation, self.test))

    def __repr__(self):
        return f"Datasets({self.source})"


def read_split(images_path, labels_path):
    """Read one images/labels IDX pair and check it is MNIST-shaped.

    Both headers are checked first (uint8 images of 28 x 28, uint8 labels,
    the same count), so a wrong file is refused before its data is read.

    Parameters
    ----------
    images_path, labels_path : str or os.PathLike
        IDX files, gzipped or not.

    Returns
    -------
    images : ndarray of shape (N, 28, 28), uint8
    labels : ndarray of shape (N,), uint8
        Digits 0..9.

    Raises
    ------
    DataError
        The files are malformed IDX files (:class:`~scratchnet.data.idx.IdxError`),
        or do not hold uint8 images of 28 x 28 and labels 0..9 of the same length.
    """
    images_dtype, images_shape = read_idx_header(images_path)
    labels_dtype, labels_shape = read_idx_header(labels_path)
    if len(images_shape) != 3 or images_dtype != numpy.uint8:
        raise DataError(
            f"load_mnist: {images_path} must hold uint8 images (N, H, W), got {images_dtype} {images_shape}"
        )
    if images_shape[1:] != IMAGE_SHAPE:
        raise DataError(f"load_mnist: {images_path} holds images of {images_shape[1]} x {images_shape[2]}; "
                        f"MNIST's are {IMAGE_SHAPE[0]} x {IMAGE_SHAPE[1]}, as the models expect")
    if len(labels_shape) != 1 or labels_dtype != numpy.uint8:
        raise DataError(f"load_mnist: {labels_path} must hold uint8 labels (N,), got {labels_dtype} {labels_shape}")
    if images_shape[0] != labels_shape[0]:
        raise DataError(
            f"load_mnist: {images_path} has {images_shape[0]} images but {labels_path} has {labels_shape[0]} labels"
        )
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if labels.size and labels.max() >= NUM_CLASSES:
        at = int(numpy.argmax(labels >= NUM_CLASSES))
        raise DataError(f"load_mnist: {labels_path} has label {labels[at]} (example {at}); "
                        f"MNIST labels are 0..{NUM_CLASSES - 1}")
    return images, labels


def check_dtype(dtype):
    """``dtype`` as a ``numpy.dtype``, which must be float32 or float64 (else ValueError)."""
    dtype = numpy.dtype(dtype)
    if dtype not in (numpy.float32, numpy.float64):
        raise ValueError(f"load_mnist: dtype must be float32 or float64, got {dtype}")
    return dtype


def prepare(images, labels, one_hot, nhwc, dtype):
    """Raw digits as a network takes them: pixels scaled to [0, 1], labels as ids or one-hot rows.

    Parameters
    ----------
    images : ndarray of shape (N, H, W), uint8
    labels : ndarray of shape (N,), uint8
    one_hot : bool
        Labels as one-hot rows (N, 10) in ``dtype``; otherwise int64 ids (N,).
    nhwc : bool
        Images as (N, H, W, 1); otherwise flat (N, H*W).
    dtype : numpy.dtype
        float32 or float64.

    Returns
    -------
    X : ndarray of shape (N, H*W) or (N, H, W, 1)
    Y : ndarray of shape (N,) or (N, 10)
    """
    n, h, w = images.shape
    X = images.astype(dtype) / dtype.type(255)
    X = X.reshape(n, h, w, 1) if nhwc else X.reshape(n, h * w)
    if one_hot:
        Y = numpy.zeros((n, 10), dtype=dtype)
        Y[numpy.arange(n), labels] = 1
    else:
        Y = labels.astype(numpy.int64)
    return X, Y


def split(train_x, train_y, test_x, test_y, validation_size, seed, names):
    """Train, validation and test :class:`DataSet` s; validation is the first ``validation_size`` training examples.

    Parameters
    ----------
    train_x : ndarray of shape (N, ...)
    train_y : ndarray of shape (N,) or (N, K)
    test_x : ndarray of shape (M, ...)
    test_y : ndarray of shape (M,) or (M, K)
    validation_size : int
        In ``[0, N]``.
    seed : int, optional
        Seeds the three data sets' shuffling (``seed``, ``seed + 1``,
        ``seed + 2``); None draws from ``scratchnet.random.generator()``.
    names : tuple of 3 str
        The ``source`` of each data set.

    Returns
    -------
    train, validation, test : DataSet
        Of N - validation_size, validation_size and M examples.
    """
    n = len(train_x)
    if not 0 <= validation_size <= n:
        raise ValueError(f"load_mnist: validation_size must be in [0, {n}], got {validation_size}")
    # Distinct seeds per split, so that the three do not shuffle in lockstep.
    seeds = (None, None, None) if seed is None else (seed, seed + 1, seed + 2)
    train = DataSet(train_x[validation_size:], train_y[validation_size:], seeds[0], names[0])
    validation = DataSet(train_x[:validation_size], train_y[:validation_size], seeds[1], names[1])
    test = DataSet(test_x, test_y, seeds[2], names[2])
    return train, validation, test
