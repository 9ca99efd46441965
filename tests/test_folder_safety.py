"""Nothing lost in a training folder: mistaken, failed, interrupted and concurrent commands leave it intact.

Run as a user would: through the ``scratchnet`` command, in a subprocess where
signals, locks and kills are involved.
"""
from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import scratchnet as sn
from scratchnet import cli
from scratchnet.checkpoint import load_variables
from scratchnet.data import write_idx


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory):
    d = tmp_path_factory.mktemp("mnist")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 300), ("t10k", 40)):
        write_idx(d / f"{prefix}-images-idx3-ubyte.gz", (rng.random((n, 28, 28)) * 255).astype(np.uint8))
        write_idx(d / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n).astype(np.uint8))
    return str(d)


def _args(data, logdir, steps, *extra, model="mlp"):
    return ["train", model, "--data", data, "--validation-size", "50", "--steps", str(steps), "--batch-size", "10",
            "--checkpoint-every", "5", "--log-every", "1", "--logdir", str(logdir), "--backend", "numpy",
            "--no-download", "--no-progress", *extra]


def _start(argv):
    return subprocess.Popen([sys.executable, "-m", "scratchnet", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _run(argv, timeout=120):
    return subprocess.run([sys.executable, "-m", "scratchnet", *argv], capture_output=True, text=True, timeout=timeout)


def _snapshot(folder):
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


def _weights(logdir):
    return load_variables(sn.latest_checkpoint(str(logdir)))


def _train_steps(logdir):
    """The train steps logged in metrics.jsonl, in order."""
    lines = (logdir / "metrics.jsonl").read_text().splitlines()
    return [r["step"] for r in map(json.loads, lines) if r["run"] == "train"]


def _wait_for_steps(logdir, n, proc, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if len(_train_steps(logdir)) >= n:
                return
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError("training did not get going")


def _one_line_error(stderr):
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.fixture(scope="module")
def straight(tiny_mnist, tmp_path_factory):
    """An uninterrupted run of 200 steps: the weights every interrupted run must end with."""
    logdir = tmp_path_factory.mktemp("straight")
    assert cli.main(_args(tiny_mnist, logdir, 200)) == 0
    return logdir


# -- mistaken commands: refused, with every file as it was ------------------------------


def test_training_again_into_a_run_needs_resume_or_overwrite(tiny_mnist, tmp_path):
    logdir = tmp_path / "run"
    assert cli.main(_args(tiny_mnist, logdir, 10)) == 0
    before = _snapshot(logdir)
    proc = _run(_args(tiny_mnist, logdir, 20))
    assert proc.returncode == 2
    line = _one_line_error(proc.stderr)
    assert "--resume" in line and "--overwrite" in line
    assert _snapshot(logdir) == before


def test_overwrite_moves_the_old_run_aside_instead_of_deleting_it(tiny_mnist, tmp_path, capsys):
    logdir = tmp_path / "run"
    assert cli.main(_args(tiny_mnist, logdir, 10)) == 0
    before = _snapshot(logdir)
    assert cli.main(_args(tiny_mnist, logdir, 5, "--overwrite", model="lenet")) == 0
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(moved) == 1 and f"moved the old run aside to {moved[0]}" in capsys.readouterr().out
    assert _snapshot(moved[0]) == before
    assert json.loads((logdir / "run.json").read_text())["model"] == "lenet"


@pytest.mark.parametrize("mistake", [["--resume", "--dtype", "float64"], ["--resume", "--overwrite"]])
def test_a_failed_resume_changes_nothing(tiny_mnist, tmp_path, mistake):
    logdir = tmp_path / "run"
    assert cli.main(_args(tiny_mnist, logdir, 10)) == 0
    before = _snapshot(logdir)
    proc = _run(_args(tiny_mnist, logdir, 20, *mistake))
    assert proc.returncode == 2, proc.stderr
    _one_line_error(proc.stderr)
    assert _snapshot(logdir) == before


def test_resuming_another_models_run_is_refused_before_anything_is_written(tiny_mnist, tmp_path):
    logdir = tmp_path / "run"
    assert cli.main(_args(tiny_mnist, logdir, 10, model="lenet")) == 0
    before = _snapshot(logdir)
    proc = _run(_args(tiny_mnist, logdir, 20, "--resume"))
    assert proc.returncode == 2 and "holds a 'lenet' run, not 'mlp'" in _one_line_error(proc.stderr)
    assert _snapshot(logdir) == before
    proc = _run(["eval", "lenet", "--logdir", str(logdir), "--data", tiny_mnist, "--validation-size", "50",
                 "--backend", "numpy", "--no-download"])
    assert proc.returncode == 0 and "After 10 training step(s)" in proc.stdout


# -- corrupt checkpoints: a clear stop, and the way on -----------------------------------


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_corrupt_newest_checkpoint_stops_resume_and_names_the_intact_one(tiny_mnist, tmp_path, damage):
    logdir = tmp_path / "run"
    assert cli.main(_args(tiny_mnist, logdir, 10)) == 0
    newest = logdir / "model-10"
    blob = bytearray(newest.read_bytes())
    if damage == "flip":
        blob[len(blob) // 2] ^= 0xFF
    else:
        del blob[len(blob) // 3:]
    newest.write_bytes(bytes(blob))
    before = _snapshot(logdir)
    proc = _run(_args(tiny_mnist, logdir, 20, "--resume"))
    assert proc.returncode == 2
    line = _one_line_error(proc.stderr)
    assert str(newest) in line and ("SHA-256" in line or "truncated" in line)
    older = logdir / "model-5"
    assert f"--resume-from {older}" in line
    assert _snapshot(logdir) == before
    proc = _run(_args(tiny_mnist, logdir, 20, "--resume-from", str(older)))
    assert proc.returncode == 0, proc.stderr
    assert "continuing from step 5" in proc.stdout and sn.latest_checkpoint(str(logdir)).endswith("model-20")


def test_eval_watch_skips_a_corrupt_checkpoint_and_keeps_watching(tiny_mnist, tmp_path):
    logdir = tmp_path / "run"
    assert cli.main(_args(tiny_mnist, logdir, 10)) == 0
    newest = logdir / "model-10"
    newest.write_bytes(newest.read_bytes()[:-10])
    watcher = _start(["eval", "mlp", "--logdir", str(logdir), "--data", tiny_mnist, "--validation-size", "50",
                      "--backend", "numpy", "--no-download", "--watch", "0.1", "--max-evals", "1", "--timeout", "60"])
    time.sleep(2)
    assert cli.main(_args(tiny_mnist, logdir, 15, "--resume-from", str(logdir / "model-5"))) == 0
    out, err = watcher.communicate(timeout=90)
    assert watcher.returncode == 0, err
    assert "warning: skipped" in err and "model-10" in err
    assert "After 15 training step(s)" in out


# -- interrupted runs --------------------------------------------------------------------


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_at_a_checkpoint_and_resume_ends_as_an_uninterrupted_run(tiny_mnist, tmp_path, straight,
                                                                                  sig, code):
    logdir = tmp_path / "run"
    proc = _start(_args(tiny_mnist, logdir, 200))
    _wait_for_steps(logdir, 20, proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    stopped = int(out.split("stopped at step ")[1].split(";")[0])
    assert 20 <= stopped < 200 and "continue with --resume" in out
    assert sn.latest_checkpoint(str(logdir)).endswith(f"model-{stopped}")
    assert _train_steps(logdir) == list(range(1, stopped + 1))
    assert cli.main(_args(tiny_mnist, logdir, 200, "--resume")) == 0
    for name, value in _weights(straight).items():
        np.testing.assert_array_equal(_weights(logdir)[name], value, err_msg=name)
    assert _train_steps(logdir) == _train_steps(straight)


def test_killed_again_and_again_a_run_resumes_to_the_uninterrupted_weights(tiny_mnist, tmp_path, straight):
    logdir = tmp_path / "run"
    rng = random.Random(0)
    first, kills, logged = True, 0, 0
    while kills < 4:
        proc = _start(_args(tiny_mnist, logdir, 200, *([] if first else ["--resume"])))
        first = False
        target = logged + rng.randint(8, 40)  # a random moment, a few steps into this attempt
        while proc.poll() is None:
            try:
                if len(_train_steps(logdir)) >= target:
                    break
            except (FileNotFoundError, json.JSONDecodeError):
                pass
            time.sleep(0.005)
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        logged = len(_train_steps(logdir))
    assert kills >= 2
    proc = _run(_args(tiny_mnist, logdir, 200, "--resume"))
    assert proc.returncode == 0, proc.stderr
    for name, value in _weights(straight).items():
        np.testing.assert_array_equal(_weights(logdir)[name], value, err_msg=name)
    steps = _train_steps(logdir)
    assert steps == sorted(set(steps)) == list(range(1, 201))  # each step once, in order
    assert not (logdir / "train.pid").exists()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(logdir / "train"))
    board.Reload()
    assert [e.step for e in board.Scalars("loss")] == list(range(1, 201))  # as TensorBoard reads it


def test_a_torn_last_metrics_line_is_not_read_as_data(tiny_mnist, tmp_path):
    logdir = tmp_path / "run"
    assert cli.main(_args(tiny_mnist, logdir, 10)) == 0
    with open(logdir / "metrics.jsonl", "a") as f:
        f.write('{"run": "train", "step": 11, "lo')  # a write cut short by a kill
    with open(logdir / "metrics.csv", "a") as f:
        f.write("train,11,0.5")
    assert cli.main(_args(tiny_mnist, logdir, 12, "--resume")) == 0
    assert _train_steps(logdir) == list(range(1, 13))
    rows = (logdir / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[1] for r in rows[1:] if r.startswith("train,")] == [str(s) for s in range(1, 13)]


# -- one owner at a time -----------------------------------------------------------------


def test_a_second_train_into_a_live_runs_folder_is_refused_naming_the_process(tiny_mnist, tmp_path):
    logdir = tmp_path / "run"
    first = _start(_args(tiny_mnist, logdir, 100000))
    try:
        _wait_for_steps(logdir, 3, first)
        before = (logdir / "run.json").read_bytes()
        second = _run(_args(tiny_mnist, logdir, 50, "--resume"))
        assert second.returncode == 2
        line = _one_line_error(second.stderr)
        assert f"is being trained into by process {first.pid}" in line and "scratchnet" in line
        assert (logdir / "run.json").read_bytes() == before
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)
    assert first.returncode == 143


def test_a_lock_left_by_a_killed_process_is_taken_over(tiny_mnist, tmp_path):
    logdir = tmp_path / "run"
    proc = _start(_args(tiny_mnist, logdir, 100000))
    _wait_for_steps(logdir, 3, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert int((logdir / "train.pid").read_text()) == proc.pid  # stale: its process is gone
    again = _run(_args(tiny_mnist, logdir, 10, "--resume"))
    assert again.returncode == 0, again.stderr
    assert not (logdir / "train.pid").exists()


def test_fit_with_a_model_checkpoint_owns_its_folder_too(tiny_mnist, tmp_path):
    from scratchnet.folder import FolderBusy

    logdir = tmp_path / "run"
    proc = _start(_args(tiny_mnist, logdir, 100000))
    try:
        _wait_for_steps(logdir, 3, proc)
        model = sn.Sequential([sn.layers.Dense(2)])
        model.compile("sgd", sn.losses.SparseCategoricalCrossentropy(from_logits=True))
        with pytest.raises(FolderBusy, match=f"process {proc.pid}"):
            model.fit(np.zeros((4, 3)), np.zeros(4, int), callbacks=[sn.callbacks.ModelCheckpoint(str(logdir))],
                      verbose=0)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)


def test_fit_stops_cleanly_on_a_signal_with_a_checkpoint_of_that_step(tmp_path):
    class SignalAtStep3(sn.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if self.model.step == 3:
                os.kill(os.getpid(), signal.SIGINT)

    stop = sn.callbacks.StopOnSignal()
    model = sn.Sequential([sn.layers.Dense(2)])
    model.compile("sgd", sn.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(np.zeros((40, 3)), np.zeros(40, int), batch_size=4, epochs=5, verbose=0,
              callbacks=[SignalAtStep3(), sn.callbacks.ModelCheckpoint(str(tmp_path), every_n_steps=100), stop])
    assert stop.signal == signal.SIGINT and stop.exit_code == 130 and model.step == 3
    assert sn.latest_checkpoint(str(tmp_path)).endswith("model-3")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back


# -- a full disk ----------------------------------------------------------------------------


def test_a_full_disk_during_a_save_keeps_the_previous_checkpoint_and_stops_with_one_line(tiny_mnist, tmp_path,
                                                                                         monkeypatch, capsys):
    from scratchnet import archive

    logdir = tmp_path / "run"
    real = archive.write_archive.__globals__["os"].fsync
    saves = {"n": 0}

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").rsplit("/", 1)[-1].startswith(".model-"):
            saves["n"] += 1
            if saves["n"] == 3:  # the third checkpoint: step 15
                raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(archive.os, "fsync", fsync)
    assert cli.main(_args(tiny_mnist, logdir, 30)) == 1
    line = _one_line_error(capsys.readouterr().err)
    assert "No space left on device" in line and str(logdir) in line and "free" in line
    assert sn.latest_checkpoint(str(logdir)).endswith("model-10")
    assert load_variables(str(logdir / "model-10"))
    assert not [f for f in os.listdir(logdir) if f.endswith(".tmp")]
    assert not (logdir / "train.pid").exists()


def test_a_real_full_filesystem(tiny_mnist, tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(mount)], capture_output=True,
                            text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {result.stderr.strip() or result.returncode}")
    try:
        logdir = mount / "run"
        proc = _run(_args(tiny_mnist, logdir, 200))
        assert proc.returncode == 1, proc.stderr
        line = _one_line_error(proc.stderr)
        assert "No space left on device" in line and str(logdir) in line
        newest = sn.latest_checkpoint(str(logdir))
        if newest is not None:
            assert load_variables(newest)
        assert not [f for f in os.listdir(logdir) if f.endswith(".tmp")]
    finally:
        subprocess.run(["umount", str(mount)], check=False)
