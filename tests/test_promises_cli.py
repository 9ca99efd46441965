"""The promises of a training folder, held through the ``scratchnet`` command (issue 22).

- ``--resume`` continues from the newest *intact* checkpoint when the newest
  one, or the index, is gone, saying which and why;
- ``demo`` writes only into a folder it owns and deletes nothing it did not write;
- one owner at a time, ``--overwrite`` included: the lock comes before
  anything is read, created or moved, and only a training folder is moved aside;
- every bad input or damaged file is one line on stderr and exit 2, and a
  command that fails leaves every file as it found it (byte for byte).

In-process (``cli.main``) where that is enough; in a subprocess where signals
or a second process are involved.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import scratchnet as sn
from scratchnet import cli, training
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


def _args(data, logdir, steps, *extra, model="mlp", command="train"):
    head = ["train", model] if command == "train" else ["demo"]
    return [*head, "--data", data, "--validation-size", "50", "--steps", str(steps), "--batch-size", "10",
            "--checkpoint-every", "5", "--log-every", "1", "--logdir", str(logdir), "--backend", "numpy",
            "--no-download", "--no-progress", *extra]


def _run(argv, timeout=120, cwd=None):
    return subprocess.run([sys.executable, "-m", "scratchnet", *argv], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def _start(argv):
    return subprocess.Popen([sys.executable, "-m", "scratchnet", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _snapshot(folder, skip=()):
    """Every file under ``folder`` with its bytes (but those named in ``skip``), and every folder."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            out[os.path.relpath(os.path.join(root, name), folder) + os.sep] = None
        for name in files:
            if name in skip:
                continue
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


def _one_line_error(stderr):
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def _refused(capsys, argv, argument, code=2):
    """Run ``argv`` in-process; it must exit ``code`` with one stderr line naming ``argument``."""
    rc = cli.main(argv)
    captured = capsys.readouterr()
    assert rc == code, captured
    line = _one_line_error(captured.err)
    assert argument in line, line
    return line


def _train_steps(logdir):
    lines = (logdir / "metrics.jsonl").read_text().splitlines()
    return [r["step"] for r in map(json.loads, lines) if r["run"] == "train"]


def _wait_for_steps(logdir, n, proc, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if len(_train_steps(logdir)) >= n:
                return
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            pass
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError("training did not get going")


def _dead_pid():
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.fixture(scope="module")
def run20(tiny_mnist, tmp_path_factory):
    """A finished 20-step run (checkpoints at 5, 10, 15, 20), copied by each test that changes it."""
    logdir = tmp_path_factory.mktemp("run20") / "run"
    assert cli.main(_args(tiny_mnist, logdir, 20)) == 0
    return logdir


@pytest.fixture(scope="module")
def straight30(tiny_mnist, tmp_path_factory):
    """30 steps in one go: the weights a resumed run must end with."""
    logdir = tmp_path_factory.mktemp("straight30") / "run"
    assert cli.main(_args(tiny_mnist, logdir, 30)) == 0
    return logdir


@pytest.fixture
def run(run20, tmp_path, capsys):
    logdir = tmp_path / "run"
    shutil.copytree(run20, logdir)
    capsys.readouterr()
    return logdir


# -- 1. resume from the newest intact checkpoint --------------------------------------------


def _delete_newest(logdir):
    (logdir / "model-20").unlink()


def _delete_index(logdir):
    (logdir / "checkpoint").unlink()


def _index_names_a_missing_file(logdir):
    index = json.loads((logdir / "checkpoint").read_text())
    index["latest"] = "model-25"
    index["all"].append("model-25")
    (logdir / "checkpoint").write_text(json.dumps(index))


@pytest.mark.parametrize("damage, note, resumed_at", [
    (_delete_newest, "resume: model-20 is missing; resuming from model-15", 15),
    (_delete_index, "resume: the checkpoint index is missing", 20),
    (_index_names_a_missing_file, "resume: model-25 is missing; resuming from model-20", 20),
])
def test_resume_continues_from_the_newest_intact_checkpoint_when_the_newest_or_the_index_is_gone(
        tiny_mnist, run, straight30, capsys, damage, note, resumed_at):
    damage(run)
    assert cli.main(_args(tiny_mnist, run, 30, "--resume")) == 0
    out = capsys.readouterr().out
    assert note in out and f"continuing from step {resumed_at}" in out and "starting from step 0" not in out
    assert _train_steps(run) == list(range(1, 31))  # each step once: the records past the checkpoint dropped
    for name, value in load_variables(str(straight30 / "model-30")).items():
        np.testing.assert_array_equal(load_variables(str(run / "model-30"))[name], value, err_msg=name)


def test_resume_with_every_checkpoint_missing_is_refused_and_changes_nothing(tiny_mnist, run, capsys):
    for name in ("model-5", "model-10", "model-15", "model-20"):
        (run / name).unlink()
    before = _snapshot(run)
    line = _refused(capsys, _args(tiny_mnist, run, 30, "--resume"), "argument --resume")
    assert "all missing" in line and "--overwrite" in line
    assert _snapshot(run) == before


# -- 2. demo writes only into a folder it owns -------------------------------------------------


def _demo(data, logdir):
    return _args(data, logdir, 2, command="demo")


def test_demo_run_again_replaces_its_own_run_and_keeps_what_it_did_not_write(tiny_mnist, tmp_path, capsys):
    logdir = tmp_path / "demo"
    assert cli.main(_demo(tiny_mnist, logdir)) == 0
    (logdir / "notes.txt").write_text("mine")
    (logdir / "train" / "my-events.txt").write_text("also mine")
    assert cli.main(_demo(tiny_mnist, logdir)) == 0
    assert "demo: replaced the earlier demo run" in capsys.readouterr().out
    assert (logdir / "notes.txt").read_text() == "mine"
    assert (logdir / "train" / "my-events.txt").read_text() == "also mine"
    assert json.loads((logdir / "run.json").read_text())["command"] == "demo"
    assert sn.latest_checkpoint(str(logdir)).endswith("model-2")


def test_demo_refuses_a_folder_it_does_not_own_and_changes_nothing(tiny_mnist, tmp_path, capsys, monkeypatch):
    tree = tmp_path / "src"
    (tree / "pkg").mkdir(parents=True)
    (tree / "setup.py").write_text("print('hi')\n")
    (tree / "pkg" / "__init__.py").write_text("")
    before = _snapshot(tree)
    line = _refused(capsys, _demo(tiny_mnist, tree), "argument --logdir")
    assert "not empty" in line
    monkeypatch.chdir(tree)
    _refused(capsys, _demo(tiny_mnist, "."), "argument --logdir")  # `scratchnet demo --logdir .`
    assert _snapshot(tree) == before


def test_demo_refuses_a_training_folder(tiny_mnist, run, capsys):
    before = _snapshot(run)
    line = _refused(capsys, _demo(tiny_mnist, run), "argument --logdir")
    assert "not a demo's" in line
    assert _snapshot(run) == before


# -- 3. one owner at a time, --overwrite included ---------------------------------------------

_HOLDER = textwrap.dedent("""
    import os, sys, time
    from scratchnet.folder import FolderBusy, TrainingFolder
    folder = TrainingFolder(sys.argv[1])
    try:
        folder.lock(create=True)
    except FolderBusy as e:
        print("busy:", e, flush=True)
        sys.exit(0)
    with open(os.path.join(sys.argv[1], "run.json"), "w") as f:
        f.write('{"model": "mlp", "command": "train"}')
    print("locked", flush=True)
    time.sleep(120)
""")


def _hold(path):
    """A second process that takes ``path`` as a training run does (and writes its run.json); its first line says
    whether it got it."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path)], stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


def test_an_overwrite_started_as_another_train_creates_the_folder_does_not_move_it_aside(tiny_mnist, tmp_path,
                                                                                          monkeypatch, capsys):
    cli_train = sys.modules["scratchnet.cli.train"]  # the module (scratchnet.cli.train is also its function)

    logdir = tmp_path / "run"
    real_load, seen = cli_train.load, {}

    def load_while_another_train_starts(*args, **kwargs):
        seen["proc"], seen["first"] = _hold(logdir)  # the other train arrives while this one loads its data
        return real_load(*args, **kwargs)

    monkeypatch.setattr(cli_train, "load", load_while_another_train_starts)
    try:
        assert cli.main(_args(tiny_mnist, logdir, 5, "--overwrite")) == 0
    finally:
        if "proc" in seen:
            seen["proc"].kill()
            seen["proc"].wait()
    assert seen["first"].startswith("busy:") and f"process {os.getpid()}" in seen["first"]
    assert not [p for p in tmp_path.iterdir() if ".old-" in p.name]
    assert json.loads((logdir / "run.json").read_text())["model"] == "mlp"


def test_overwrite_of_a_live_runs_folder_is_refused_naming_its_pid(tiny_mnist, run, capsys):
    proc, first = _hold(run)
    try:
        assert first == "locked"
        before = _snapshot(run.parent)
        line = _refused(capsys, _args(tiny_mnist, run, 5, "--overwrite"), "argument --logdir")
        assert f"is being trained into by process {proc.pid}" in line
        assert _snapshot(run.parent) == before
    finally:
        proc.kill()
        proc.wait()


def test_move_aside_keeps_the_lock_and_takes_the_new_folder(tmp_path):
    from scratchnet.folder import TrainingFolder

    logdir = tmp_path / "run"
    folder = TrainingFolder(str(logdir))
    folder.lock(create=True)
    try:
        (logdir / "run.json").write_text('{"model": "mlp"}')
        aside = folder.move_aside()
        assert json.loads(open(os.path.join(aside, "run.json")).read())["model"] == "mlp"
        assert folder.held and logdir.is_dir() and not os.listdir(logdir)
        proc, first = _hold(logdir)
        proc.wait()
        assert first.startswith("busy:") and f"process {os.getpid()}" in first
    finally:
        folder.release()


def test_overwrite_refuses_a_folder_that_is_not_a_training_folder(tiny_mnist, tmp_path, capsys):
    tree = tmp_path / "src"
    tree.mkdir()
    (tree / "main.py").write_text("print('a source tree')\n")
    (tree / "notes-2").write_text("not a checkpoint")
    before = _snapshot(tmp_path)
    line = _refused(capsys, _args(tiny_mnist, tree, 5, "--overwrite"), "argument --overwrite")
    assert "only a training folder" in line
    assert _snapshot(tmp_path) == before


# -- damaged and crafted files: one line, exit 2, nothing changed -------------------------------

CRAFTED = {
    "empty": b"",
    "garbage": b"\xff\xfe\x00garbage",
    "a list": b"[1, 2]",
    "a path outside": json.dumps({"latest": "../../etc/passwd", "all": ["../../etc/passwd"]}).encode(),
}


@pytest.mark.parametrize("content", CRAFTED.values(), ids=CRAFTED.keys())
def test_a_crafted_index_is_one_line_for_resume_and_eval(tiny_mnist, run, capsys, content):
    (run / "checkpoint").write_bytes(content)
    before = _snapshot(run)
    line = _refused(capsys, _args(tiny_mnist, run, 30, "--resume"), "argument --resume")
    assert "checkpoint" in line
    _refused(capsys, ["eval", "mlp", "--logdir", str(run), "--data", tiny_mnist, "--validation-size", "50",
                      "--backend", "numpy", "--no-download"], "argument --logdir")
    assert _snapshot(run) == before


RUN_FILES = {
    "empty": b"",
    "garbage": b"\xff\xfe\x00garbage",
    "a list": b'["mlp"]',
    "float16": None,  # the real run.json with "dtype": "float16"
}


@pytest.mark.parametrize("content", RUN_FILES.values(), ids=RUN_FILES.keys())
def test_a_crafted_run_json_is_one_line_for_train_eval_and_sample(tiny_mnist, run, capsys, content):
    if content is None:
        record = json.loads((run / "run.json").read_text())
        content = json.dumps({**record, "dtype": "float16"}).encode()
    (run / "run.json").write_bytes(content)
    before = _snapshot(run)
    line = _refused(capsys, _args(tiny_mnist, run, 30, "--resume"), "argument --logdir")
    assert "run.json" in line
    _refused(capsys, ["eval", "mlp", "--logdir", str(run), "--data", tiny_mnist, "--validation-size", "50",
                      "--backend", "numpy", "--no-download"], "argument --logdir")
    _refused(capsys, ["sample", "--logdir", str(run), "--backend", "numpy"], "argument --logdir")
    assert _snapshot(run) == before


def test_a_newest_checkpoint_that_is_a_folder_stops_resume_naming_the_intact_one(tiny_mnist, run, capsys):
    (run / "model-20").unlink()
    (run / "model-20").mkdir()
    before = _snapshot(run)
    line = _refused(capsys, _args(tiny_mnist, run, 30, "--resume"), "argument --resume")
    assert "model-20" in line and "folder" in line and f"--resume-from {run / 'model-15'}" in line
    assert _snapshot(run) == before


def test_an_unreadable_newest_checkpoint_stops_resume_naming_the_intact_one(tiny_mnist, run, capsys, monkeypatch):
    (run / "model-20").chmod(0)
    if os.geteuid() == 0:  # root reads a file of mode 000: refuse the read as the kernel would refuse another user
        import builtins

        real_open = builtins.open

        def refusing_open(file, *args, **kwargs):
            if os.path.basename(os.fspath(file)) == "model-20":
                raise PermissionError(errno.EACCES, "Permission denied", os.fspath(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", refusing_open)
    try:
        before = {k: v for k, v in _snapshot_readable(run).items()}
        line = _refused(capsys, _args(tiny_mnist, run, 30, "--resume"), "argument --resume")
        assert "model-20" in line and f"--resume-from {run / 'model-15'}" in line
        assert _snapshot_readable(run) == before
    finally:
        (run / "model-20").chmod(0o644)


def _snapshot_readable(folder):
    return _snapshot(str(folder), skip=("model-20",))


def test_resume_from_a_folder_is_one_line(tiny_mnist, run, capsys):
    before = _snapshot(run)
    line = _refused(capsys, _args(tiny_mnist, run, 30, "--resume-from", str(run / "train")), "argument --resume-from")
    assert "is a folder" in line
    assert _snapshot(run) == before


@pytest.mark.parametrize("where", ["/proc/scratchnet-run", "/sys/scratchnet-run", "/proc/self/scratchnet-run"])
def test_a_logdir_on_a_kernel_filesystem_is_one_line(tiny_mnist, capsys, where):
    line = _refused(capsys, _args(tiny_mnist, where, 2), "argument --logdir")
    assert "kernel" in line
    assert not os.path.exists(where)


def test_a_negative_seed_is_one_line(tiny_mnist, tmp_path, capsys):
    _refused(capsys, _args(tiny_mnist, tmp_path / "run", 2, "--seed", "-1"), "argument --seed")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("size", ["-1", "300", "1000"])
def test_a_validation_size_out_of_range_is_one_line(tiny_mnist, tmp_path, capsys, size):
    argv = _args(tiny_mnist, tmp_path / "run", 2) + ["--validation-size", size]
    _refused(capsys, argv, "argument --validation-size")
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def charlm_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("charlm")
    (d / "text.txt").write_text("hello world, this is a small text. " * 200)
    logdir = d / "run"
    assert cli.main(["train", "charlm", "--data", str(d / "text.txt"), "--steps", "1", "--batch-size", "4",
                     "--logdir", str(logdir), "--backend", "numpy", "--no-progress"]) == 0
    return logdir


@pytest.mark.parametrize("prime", ["\u2603", "", "hello \u2603"])
def test_sample_refuses_a_prime_outside_the_vocabulary_or_empty(charlm_run, capsys, prime):
    capsys.readouterr()
    _refused(capsys, ["sample", "--logdir", str(charlm_run), "--prime", prime, "--backend", "numpy"],
             "argument --prime")


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_sample_refuses_a_temperature_that_is_not_finite(charlm_run, capsys, value):
    capsys.readouterr()
    _refused(capsys, ["sample", "--logdir", str(charlm_run), "--temperature", value], "argument --temperature")


# -- a full disk at the start, Ctrl-C at the start ------------------------------------------------


@pytest.fixture
def full_disk(monkeypatch):
    """Every fsync fails with ENOSPC: the first file a command writes cannot be kept."""

    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize("extra", [["--resume"], ["--overwrite"]])
def test_a_full_disk_at_the_start_is_one_line_and_changes_nothing(tiny_mnist, run, capsys, full_disk, extra):
    before = _snapshot(run.parent)
    line = _refused(capsys, _args(tiny_mnist, run, 30, *extra), "No space left on device", code=1)
    assert str(run) in line and "free" in line and "OSError" not in line
    assert _snapshot(run.parent) == before  # a run moved aside by --overwrite is put back


def test_a_full_disk_at_the_start_of_a_new_run_leaves_no_folder(tiny_mnist, tmp_path, capsys, full_disk):
    logdir = tmp_path / "new" / "run"
    line = _refused(capsys, _args(tiny_mnist, logdir, 5), "No space left on device", code=1)
    assert str(logdir) in line and "free" in line
    assert not (tmp_path / "new").exists()


def test_ctrl_c_before_training_begins_is_one_line_exit_130(tiny_mnist, tmp_path, capsys, monkeypatch):
    cli_train = sys.modules["scratchnet.cli.train"]  # the module (scratchnet.cli.train is also its function)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_train, "load", interrupted)
    _refused(capsys, _args(tiny_mnist, tmp_path / "run", 5), "interrupted", code=130)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("delay", [0.3, 0.8])
def test_ctrl_c_in_the_first_moments_prints_no_traceback(tiny_mnist, tmp_path, delay):
    # A run far longer than the test, so that the signal never lands in the interpreter's own shutdown.
    proc = _start(_args(tiny_mnist, tmp_path / "run", 100_000))
    time.sleep(delay)  # while NumPy and the package load, or the command starts (Python itself starts in ~0.05 s)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert len(err.strip().splitlines()) <= 1, err  # one line, or none where training had begun (its stop is printed)


def test_imported_as_a_library_scratchnet_leaves_ctrl_c_alone():
    code = "import signal, scratchnet.cli; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "True"


# -- resume: the record stays as it was ---------------------------------------------------------


@pytest.mark.parametrize("flag, value, recorded", [
    ("--batch-size", "20", "10"), ("--seed", "3", "0"), ("--fashion", None, "False"), ("--data", "OTHER", None),
])
def test_resume_with_other_data_or_batches_than_recorded_is_refused(tiny_mnist, run, tmp_path, capsys, flag, value,
                                                                    recorded):
    argv = _args(tiny_mnist, run, 30, "--resume")
    if flag == "--data":
        other = tmp_path / "other-mnist"
        shutil.copytree(tiny_mnist, other)
        argv[argv.index("--data") + 1] = value = str(other)
        recorded = repr(os.path.abspath(tiny_mnist))
    elif value is None:
        argv.append(flag)
    else:
        argv += [flag, value]
    before = _snapshot(run)
    line = _refused(capsys, argv, f"argument {flag}")
    assert f"{flag} {recorded}" in line and (value is None or value in line)
    assert _snapshot(run) == before


def test_resume_without_the_flags_keeps_the_recorded_ones_and_the_record(tiny_mnist, run, capsys):
    before = (run / "run.json").read_bytes()
    argv = ["train", "mlp", "--steps", "25", "--logdir", str(run), "--resume", "--backend", "numpy", "--no-progress",
            "--no-download", "--checkpoint-every", "5"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "batch 10" in out and f"MNIST from {os.path.abspath(tiny_mnist)}: train 250, validation 50" in out
    assert (run / "run.json").read_bytes() == before


def test_a_resume_that_fails_in_training_has_not_rewritten_run_json(tiny_mnist, run, monkeypatch):
    before = (run / "run.json").read_bytes()

    def crash(*args, **kwargs):
        raise RuntimeError("a crash in the first step")

    monkeypatch.setattr(training, "train", crash)
    argv = [a for a in _args(tiny_mnist, run, 30, "--resume") if a not in ("--batch-size", "10")]
    with pytest.raises(RuntimeError, match="first step"):
        cli.main(argv)
    assert (run / "run.json").read_bytes() == before
    assert not (run / "train.pid").exists()


def test_stale_temporaries_of_a_killed_save_are_removed_and_nothing_else(tiny_mnist, run, capsys):
    dead = _dead_pid()
    stale = [f".model-25.{dead}-0123abcd.tmp", f".checkpoint.{dead}-0123abcd.tmp", f".run.json.{dead}-89abcdef.tmp"]
    kept = [".model-25.notes.tmp", f".notes.{dead}-0123abcd.tmp", "model-25.tmp", f".model-25.{os.getpid()}-01.tmp"]
    for name in stale + kept:
        (run / name).write_bytes(b"partial")
    assert cli.main(_args(tiny_mnist, run, 22, "--resume")) == 0
    assert "removed 3 temporary file(s) left by an interrupted save" in capsys.readouterr().out
    assert not [n for n in stale if (run / n).exists()]
    assert all((run / n).read_bytes() == b"partial" for n in kept)


# -- signals, non-finite values, metrics ----------------------------------------------------------


def test_sighup_stops_at_a_saved_step_exit_129(tiny_mnist, tmp_path):
    logdir = tmp_path / "run"
    proc = _start(_args(tiny_mnist, logdir, 100000))
    _wait_for_steps(logdir, 8, proc)
    proc.send_signal(signal.SIGHUP)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 129, err
    stopped = int(out.split("stopped at step ")[1].split(";")[0])
    assert "continue with --resume" in out
    assert sn.latest_checkpoint(str(logdir)).endswith(f"model-{stopped}")
    assert _train_steps(logdir) == list(range(1, stopped + 1))


@pytest.fixture
def nan_at_step_8(monkeypatch):
    """The 8th training batch holds a NaN."""
    recipe_class = sn.zoo.recipe_class("mlp")
    real = recipe_class.batches

    def batches(self, start_step=0):
        for step, (epoch, x, y) in enumerate(real(self, start_step), start_step + 1):
            if step == 8:
                x = np.array(x, dtype=np.float32)
                x[0, 0] = np.nan
            yield epoch, x, y

    monkeypatch.setattr(recipe_class, "batches", batches)


@pytest.mark.skipif(not hasattr(training, "NonFiniteError"), reason="scratchnet.training.NonFiniteError has not "
                                                                    "landed yet")
def test_a_non_finite_step_stops_train_naming_it_and_the_last_finite_checkpoint(tiny_mnist, tmp_path, capsys,
                                                                               nan_at_step_8):
    logdir = tmp_path / "run"
    line = _refused(capsys, _args(tiny_mnist, logdir, 20), "train: stopped at step 8: ", code=1)
    last = line.rsplit("the last finite checkpoint is ", 1)[1]
    assert last.startswith("model-") and int(last[6:]) < 8
    weights = load_variables(str(logdir / last))
    assert all(np.isfinite(v).all() for v in weights.values())
    assert not (logdir / "train.pid").exists()


def test_allow_nonfinite_asks_the_loop_not_to_check(tiny_mnist, tmp_path, monkeypatch):
    real, seen = training.train, {}

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "train", spy)
    assert cli.main(_args(tiny_mnist, tmp_path / "run", 2, "--allow-nonfinite")) == 0
    assert seen["check_finite"] is False
    assert cli.main(_args(tiny_mnist, tmp_path / "checked", 2)) == 0
    assert seen["check_finite"] is True


def test_a_torn_middle_line_of_metrics_does_not_block_resume(tiny_mnist, run, capsys):
    lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    lines[3] = lines[3][:10] + "\n"  # a record cut short, then more records after it
    (run / "metrics.jsonl").write_text("".join(lines))
    assert cli.main(_args(tiny_mnist, run, 25, "--resume")) == 0
    steps = _train_steps_lenient(run)
    assert steps == sorted(set(steps)) and steps[-1] == 25


def _train_steps_lenient(logdir):
    steps = []
    for line in (logdir / "metrics.jsonl").read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record["run"] == "train":
            steps.append(record["step"])
    return steps
