"""Verified downloads into the user cache: mirrors in order, SHA-256, atomic move.

A file reaches its final name only after every byte has arrived and its
SHA-256 matches a known value, so a cache never holds a half-written or
corrupted file: a partial download lives under a hidden temporary name in
the same folder and is deleted on any failure.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

_CHUNK = 1 << 16


class DownloadError(RuntimeError):
    """No mirror delivered the file intact; the message lists what each one did."""


def cache_dir():
    """The user cache folder: ``$XDG_CACHE_HOME/scratchnet``, else ``~/.cache/scratchnet``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "scratchnet"


def sha256_of(path):
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _fetch_one(url, tmp, name, progress, timeout):
    """Stream ``url`` into the open file ``tmp``; return the SHA-256 of what arrived."""
    from tqdm.auto import tqdm

    h = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        received = 0
        with tqdm(total=length, unit="B", unit_scale=True, desc=name, disable=not progress, leave=False) as bar:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                tmp.write(chunk)
                h.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    # http.client raises IncompleteRead for most cut connections, but not
    # all (a chunked reply, or a reply whose length was never declared).
    if length is not None and received != length:
        raise http.client.IncompleteRead(b"", length - received)
    if received == 0:
        raise OSError("the server sent an empty file")
    return h.hexdigest()


def download(name, urls, sha256, dest_dir, progress=True, timeout=60):
    """Download ``name`` from the first mirror that delivers it intact.

    Parameters
    ----------
    name : str
        File name in ``dest_dir`` (and shown on the progress bar).
    urls : sequence of str
        Full URLs of the file, tried in order.
    sha256 : str or collection of str
        Accepted hex SHA-256 digests (several where mirrors serve byte-different
        copies of the same data).
    dest_dir : str or os.PathLike
        Created if missing.
    progress : bool
        Show a tqdm progress bar.
    timeout : float
        Seconds to wait on a stalled connection.

    Returns
    -------
    path : pathlib.Path
        ``dest_dir / name``, verified.

    Raises
    ------
    DownloadError
        Every mirror failed: unreachable, cut off, or a checksum mismatch.
        Nothing is left behind in ``dest_dir``.
    """
    accepted = {sha256.lower()} if isinstance(sha256, str) else {s.lower() for s in sha256}
    if not urls:
        raise DownloadError(f"download: no mirror given for {name}")
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / name
    failures = []
    for url in urls:
        # Same folder as the final file, so the rename below is atomic.
        fd, tmp_name = tempfile.mkstemp(dir=dest_dir, prefix=f".{name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as tmp:
                digest = _fetch_one(url, tmp, name, progress, timeout)
            if digest not in accepted:
                failures.append(f"{url}: SHA-256 mismatch (got {digest}, expected {' or '.join(sorted(accepted))})")
                continue
            os.replace(tmp_name, final)
            return final
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
            failures.append(f"{url}: {type(e).__name__}: {e}")
        finally:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
    raise DownloadError(f"download: could not fetch {name}:\n  " + "\n  ".join(failures))
