"""The MNIST IDX files: their names, where each kind is looked for, and finding them on disk.

MNIST and Fashion-MNIST share the four file names of :data:`FILES`; each
file may be gzipped (``*.gz``) or not. :data:`KINDS` says, per kind, which
subfolder holds its files, which system folders may hold them, and where to
download them from (base URLs and SHA-256 digests).

Folders are searched in the order of :func:`search_dirs`; a folder the
caller names is checked by :func:`named_folder`, which raises
:class:`~scratchnet.data.errors.DataNotFound` rather than look elsewhere.
"""
from __future__ import annotations

import os
from pathlib import Path

from .download import cache_dir
from .errors import DataNotFound

#: The four files of a data set, by key, without their optional ``.gz``.
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
#: The keys of the test split alone.
TEST_FILES = ("test_images", "test_labels")

#: Per kind: its title, its subfolder, system folders, download mirrors and SHA-256 digests.
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

_COUNT = {1: "one", 2: "two", 3: "three", 4: "four"}


def kind_spec(kind):
    """The :data:`KINDS` entry of ``kind``.

    Raises
    ------
    ValueError
        ``kind`` is not ``"mnist"`` or ``"fashion"``.
    """
    if kind not in KINDS:
        raise ValueError(f"load_mnist: kind must be one of {', '.join(map(repr, KINDS))}, got {kind!r}")
    return KINDS[kind]


def short_path(path):
    """``path`` as a string, with the home folder written ``~``, for messages."""
    home = os.path.expanduser("~")
    path = str(path)
    return "~" + path[len(home):] if home != "/" and path.startswith(home + os.sep) else path


def accepted_names(keys=tuple(FILES)):
    """The accepted file names of ``keys``, for messages: ``"train-images-idx3-ubyte[.gz], ..."``."""
    return ", ".join(f"{FILES[key]}[.gz]" for key in keys)


def search_dirs(kind="mnist", path=None):
    """Folders searched for ``kind``'s files, in order (existing or not).

    Parameters
    ----------
    kind : {"mnist", "fashion"}
    path : str or os.PathLike, optional
        A caller's folder, put first (itself, then its ``kind`` subfolder).

    Returns
    -------
    list of pathlib.Path
    """
    spec = kind_spec(kind)
    dirs = []
    if path is not None:
        dirs += [Path(path).expanduser(), Path(path).expanduser() / spec["folder"]]
    if os.environ.get("SCRATCHNET_DATA"):
        dirs.append(Path(os.environ["SCRATCHNET_DATA"]).expanduser() / spec["folder"])
    dirs.append(cache_dir() / spec["folder"])
    dirs += [Path(d) for d in spec["system_dirs"]]
    return dirs


def find_one(folder, key):
    """The file of ``key`` in ``folder`` (the ``.gz`` first, then the raw file), or None."""
    for name in (FILES[key] + ".gz", FILES[key]):
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    return None


def find_in(folder, keys=tuple(FILES)):
    """``{key: path}`` when ``folder`` holds every file of ``keys`` (gzipped or raw), else None."""
    found = {key: find_one(folder, key) for key in keys}
    return found if all(found.values()) else None


def find_files(kind="mnist", path=None, keys=tuple(FILES)):
    """The first folder of :func:`search_dirs` holding all of ``keys``.

    Returns
    -------
    (pathlib.Path, dict) or None
        The folder and ``{key: path}``; None when no folder holds them all.
    """
    for folder in search_dirs(kind, path):
        found = find_in(folder, keys)
        if found:
            return folder, found
    return None


def named_folder(path, kind="mnist", keys=tuple(FILES), caller="load_mnist", argument=""):
    """The files of ``keys`` in a folder the caller named: the folder itself, then its ``kind`` subfolder.

    Parameters
    ----------
    path : str or os.PathLike
        The folder as the caller named it.
    kind : {"mnist", "fashion"}
    keys : sequence of str
        Keys of :data:`FILES` that must all be there.
    caller : str
        Starts the error message, e.g. ``"load_mnist"``.
    argument : str
        Written before the path in the message, e.g. ``"test_path"``.

    Returns
    -------
    (pathlib.Path, dict)
        The folder that holds them all and ``{key: path}``.

    Raises
    ------
    DataNotFound
        ``path`` does not exist, is not a folder, or neither it nor its
        subfolder holds every file; the one-line message names the folder,
        the missing files and the accepted names.
    """
    spec = kind_spec(kind)
    shown = os.fspath(path)
    caller = f"{caller}: {argument}" if argument else f"{caller}:"
    top = Path(path).expanduser()
    sub = top / spec["folder"]
    for folder in (top, sub):
        found = find_in(folder, keys)
        if found:
            return folder, found
    wanted = f"the {_COUNT.get(len(keys), len(keys))} {spec['title']} IDX files {accepted_names(keys)}"
    where = f"directly or in its {spec['folder']}/ subfolder"
    if not top.exists():
        raise DataNotFound(f"{caller} {shown} does not exist; name a folder that holds {wanted}, {where}")
    if not top.is_dir():
        raise DataNotFound(f"{caller} {shown} is a file, not a folder; name a folder that holds {wanted}, {where}")
    # Report the folder that came closer: the named one, unless its subfolder holds more of the files.
    present = {folder: [key for key in keys if find_one(folder, key)] for folder in (top, sub)}
    best, label = (sub, os.path.join(shown, spec["folder"])) if len(present[sub]) > len(present[top]) else (top, shown)
    missing = [key for key in keys if key not in present[best]]
    raise DataNotFound(f"{caller} {label} lacks {accepted_names(missing)}; it should hold {wanted}, {where}")
