"""The ``scratchnet`` command refuses bad input: one line naming the argument, exit code 2, nothing written."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from scratchnet import cli
from scratchnet.backend import cupy_unavailable_reason
from scratchnet.data import write_idx


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory):
    d = tmp_path_factory.mktemp("mnist")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 120), ("t10k", 20)):
        write_idx(d / f"{prefix}-images-idx3-ubyte.gz", (rng.random((n, 28, 28)) * 255).astype(np.uint8))
        write_idx(d / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n).astype(np.uint8))
    return str(d)


def _train(data, logdir, *extra):
    return ["train", "mlp", "--data", data, "--validation-size", "20", "--steps", "2", "--batch-size", "20",
            "--logdir", str(logdir), "--backend", "numpy", "--no-download", "--no-progress", *extra]


def _snapshot(folder):
    """Every file under ``folder`` with its bytes."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


def _refused(capsys, argv, argument):
    """Run ``argv``; it must exit 2 with one stderr line that names ``argument`` and no traceback."""
    rc = cli.main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert rc == 2, captured
    assert len(lines) == 1, captured.err
    assert argument in lines[0] and "Traceback" not in captured.err
    return lines[0]


@pytest.mark.parametrize("flag, value", [
    ("--steps", "0"), ("--steps", "-5"), ("--epochs", "0"), ("--epochs", "-1"),
    ("--batch-size", "0"), ("--batch-size", "-3"), ("--steps", "many"),
])
def test_train_refuses_a_count_that_is_not_positive(tiny_mnist, tmp_path, capsys, flag, value):
    argv = _train(tiny_mnist, tmp_path / "run") + [flag, value]
    line = _refused(capsys, argv, f"argument {flag}")
    assert f"must be a positive int, got {value!r}" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flag, value", [("--length", "0"), ("--length", "-2"), ("--temperature", "0"),
                                         ("--temperature", "-1")])
def test_sample_refuses_a_length_or_temperature_that_is_not_positive(tmp_path, capsys, flag, value):
    _refused(capsys, ["sample", "--logdir", str(tmp_path), flag, value], f"argument {flag}")


def test_a_data_folder_that_does_not_exist_is_an_error_not_a_fallback(tmp_path, capsys):
    line = _refused(capsys, _train(str(tmp_path / "no" / "such"), tmp_path / "run"), "argument --data")
    assert "does not exist" in line
    assert not (tmp_path / "run").exists()


def test_a_data_folder_without_the_idx_files_is_an_error(tiny_mnist, tmp_path, capsys):
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in os.listdir(tiny_mnist):
        if not name.startswith("t10k-labels"):
            (partial / name).write_bytes(open(os.path.join(tiny_mnist, name), "rb").read())
    line = _refused(capsys, _train(str(partial), tmp_path / "run"), "argument --data")
    assert "t10k-labels-idx1-ubyte" in line


def test_a_logdir_that_cannot_be_created_is_an_error(tiny_mnist, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    line = _refused(capsys, _train(tiny_mnist, blocker / "run"), "argument --logdir")
    assert "cannot be created" in line
    _refused(capsys, _train(tiny_mnist, blocker), "argument --logdir")


@pytest.mark.skipif(cupy_unavailable_reason() is None, reason="cupy runs here, so it is available")
def test_an_unavailable_backend_is_an_error(tiny_mnist, tmp_path, capsys):
    line = _refused(capsys, _train(tiny_mnist, tmp_path / "run") + ["--backend", "cupy"], "argument --backend")
    assert "backend 'cupy' cannot run here" in line
    assert not (tmp_path / "run").exists()


def test_an_unknown_backend_is_an_error(tiny_mnist, tmp_path, capsys):
    _refused(capsys, _train(tiny_mnist, tmp_path / "run") + ["--backend", "tpu"], "argument --backend")


def test_training_another_model_into_a_runs_folder_is_refused_and_changes_nothing(tiny_mnist, tmp_path, capsys):
    logdir = tmp_path / "run"
    assert cli.main(_train(tiny_mnist, logdir)) == 0
    before = _snapshot(logdir)
    capsys.readouterr()
    for extra in ([], ["--resume"]):
        argv = ["train", "lenet", *_train(tiny_mnist, logdir)[2:], *extra]
        line = _refused(capsys, argv, "argument --logdir")
        assert "holds a 'mlp' run, not 'lenet'" in line
        assert _snapshot(logdir) == before
    assert json.loads((logdir / "run.json").read_text())["model"] == "mlp"


def test_the_installed_command_prints_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "scratchnet", "train", "mlp", "--steps", "0",
                           "--logdir", str(tmp_path / "run")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["scratchnet train: error: argument --steps: must be a positive int, got '0'"]
