"""Verified downloads, against a local HTTP server on 127.0.0.1 (never the internet)."""
from __future__ import annotations

import hashlib
import http.server
import threading

import numpy as np
import pytest

from scratchnet.data import load_mnist, mnist, sample
from scratchnet.data.download import DownloadError, cache_dir, download
from test_data_mnist import write_fake_mnist


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files``; under ``/broken/`` it promises the full length, sends half and hangs up."""

    def do_GET(self):
        broken = self.path.startswith("/broken/")
        name = self.path.rsplit("/", 1)[-1]
        data = self.server.files.get(name)
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2] if broken else data)
        if broken:
            self.close_connection = True

    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture
def server(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files = {}
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()


PAYLOAD = bytes(range(256)) * 400
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


def _files_in(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_verifies_and_moves_the_file_into_place(server, tmp_path):
    server.files["data.bin"] = PAYLOAD
    path = download("data.bin", [f"{server.url}/m1/data.bin"], DIGEST, tmp_path / "cache", progress=False)
    assert path == tmp_path / "cache" / "data.bin" and path.read_bytes() == PAYLOAD
    assert _files_in(tmp_path / "cache") == ["data.bin"]  # no temporary file left over


def test_a_missing_file_on_the_first_mirror_falls_back_to_the_second(server, tmp_path):
    server.files["data.bin"] = PAYLOAD
    urls = ["http://127.0.0.1:9/data.bin", f"{server.url}/m2/nope.bin", f"{server.url}/m3/data.bin"]
    path = download("data.bin", urls, DIGEST, tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD and _files_in(tmp_path) == ["data.bin"]


def test_a_broken_connection_on_the_first_mirror_falls_back_to_the_second(server, tmp_path):
    server.files["data.bin"] = PAYLOAD
    urls = [f"{server.url}/broken/data.bin", f"{server.url}/ok/data.bin"]
    assert download("data.bin", urls, DIGEST, tmp_path, progress=False).read_bytes() == PAYLOAD


def test_checksum_mismatch_is_an_error_and_leaves_nothing_behind(server, tmp_path):
    server.files["data.bin"] = PAYLOAD[:-1] + b"X"
    with pytest.raises(DownloadError, match=f"SHA-256 mismatch \\(got [0-9a-f]{{64}}, expected {DIGEST}\\)"):
        download("data.bin", [f"{server.url}/data.bin"], DIGEST, tmp_path / "cache", progress=False)
    assert _files_in(tmp_path / "cache") == []


def test_truncated_download_is_an_error_and_leaves_nothing_behind(server, tmp_path):
    server.files["data.bin"] = PAYLOAD
    with pytest.raises(DownloadError, match=r"could not fetch data\.bin:\n  .*/broken/data\.bin: IncompleteRead"):
        download("data.bin", [f"{server.url}/broken/data.bin"], DIGEST, tmp_path / "cache", progress=False)
    assert _files_in(tmp_path / "cache") == []


def test_a_bad_download_does_not_replace_a_good_cached_file(server, tmp_path):
    (tmp_path / "data.bin").write_bytes(b"old and good")
    server.files["data.bin"] = b"corrupt"
    with pytest.raises(DownloadError):
        download("data.bin", [f"{server.url}/data.bin"], DIGEST, tmp_path, progress=False)
    assert (tmp_path / "data.bin").read_bytes() == b"old and good"


def test_every_mirror_failing_lists_every_mirror(server, tmp_path):
    urls = [f"{server.url}/a/none.bin", f"{server.url}/b/none.bin"]
    with pytest.raises(DownloadError) as e:
        download("none.bin", urls, DIGEST, tmp_path, progress=False)
    assert "/a/none.bin: HTTPError: HTTP Error 404" in str(e.value)
    assert "/b/none.bin: HTTPError: HTTP Error 404" in str(e.value)


def test_cache_dir_follows_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "scratchnet"


def test_load_mnist_downloads_into_the_cache_when_nothing_is_on_disk(server, tmp_path, monkeypatch):
    arrays = write_fake_mnist(tmp_path / "upstream", n_train=16, n_test=6)
    digests = {}
    for key, stem in mnist.FILES.items():
        data = (tmp_path / "upstream" / (stem + ".gz")).read_bytes()
        server.files[stem + ".gz"] = data
        digests[key] = (hashlib.sha256(data).hexdigest(),)
    monkeypatch.setitem(mnist.KINDS["mnist"], "sha256", digests)
    monkeypatch.setitem(mnist.KINDS["mnist"], "system_dirs", ())
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("SCRATCHNET_DATA", raising=False)
    monkeypatch.setattr(sample, "installed_sample", lambda: None)

    d = load_mnist(validation_size=4, mirrors=[f"{server.url}/broken/", f"{server.url}/good/"], progress=False)
    cached = tmp_path / "cache" / "scratchnet" / "mnist"
    assert _files_in(cached) == sorted(stem + ".gz" for stem in mnist.FILES.values())
    assert d.source == f"MNIST from {cached}: train 12, validation 4, test 6"
    np.testing.assert_array_equal(d.test.labels, arrays["test_labels"])
    # The second load reads the cache; the server is not asked again.
    server.files.clear()
    assert load_mnist(validation_size=4, progress=False).source == d.source
