"""MPI that never hangs and never disagrees silently: real 2-rank jobs through ``mpiexec``, each with a hard timeout.

- A rank that stops answering (``SIGSTOP``, or gone) ends the job within the
  collectives' deadline (``SCRATCHNET_MPI_TIMEOUT``), with one line naming it,
  and the ranks waiting for it doze instead of spinning a core.
- ``kill -TERM <mpiexec>`` ends a job within seconds, even while a rank is
  stopped; a healthy job stops at the same step on every rank, saved.
- Ranks launched with different flags or data refuse to start: exit 2, one
  line naming the flags (or data) and the ranks.

Every job runs in its own session and is killed, whole, when it outlives its
timeout, so a hang fails the test instead of stalling CI.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

import mpi_helpers
import scratchnet as sn
from scratchnet.data import write_idx
from scratchnet.distributed.agree import config_digest, describe_disagreement, fingerprint
from scratchnet.distributed.deadline import ranks_phrase

WORKER = str(Path(__file__).with_name("mpi_worker.py"))
#: Seconds any one job may take before it counts as hung.
TIMEOUT = 60
#: The collectives' deadline in these tests, and how late past it a job may end.
DEADLINE, SLACK = 5, 10


def _run(cmd, timeout=TIMEOUT, env=None, cwd=None):
    return mpi_helpers.run(cmd, timeout, env=env, cwd=cwd)


@pytest.fixture(scope="module")
def mpiexec():
    return mpi_helpers.find_mpiexec()


def _write_digits(folder, n_train, seed=0):
    """A tiny MNIST in ``folder``: ``n_train`` training digits and 40 test digits, each a bright bar."""
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", 40)):
        y = rng.integers(0, 10, n).astype(np.uint8)
        x = (rng.random((n, 28, 28)) * 50).astype(np.uint8)
        for i, k in enumerate(y):
            x[i, 2 * k + 3:2 * k + 6] = 255
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", x)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", y)


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mnist")
    _write_digits(folder, 200)
    return str(folder)


def _train(data, logdir, steps, *extra):
    return ["train", "lenet", "--data", str(data), "--validation-size", "20", "--no-download", "--no-progress",
            "--backend", "numpy", "--batch-size", "15", "--steps", str(steps), "--checkpoint-every", "2",
            "--eval-examples", "20", "--dtype", "float32", "--logdir", str(logdir), *extra]


# ----------------------------------------------------------------------------
# A job that runs in the background, whose ranks a test can stop


class Job:
    """``python -m scratchnet ARGS`` on 2 ranks, in its own session; its ranks found by a mark in their environment.

    ``rank_0_env``: variables for rank 0 alone (``mpiexec -n 1 -env NAME VALUE ... : -n 1 ...``).
    """

    def __init__(self, mpiexec, args, rank_0_env=None):
        self.mark = uuid.uuid4().hex
        rank_0 = [arg for name, value in (rank_0_env or {}).items() for arg in ("-env", name, value)]
        command = [sys.executable, "-m", "scratchnet", *args]
        self.proc = subprocess.Popen([mpiexec, "-n", "1", *rank_0, *command, ":", "-n", "1", *command],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=mpi_helpers.launcher_free_env(SCRATCHNET_TEST_MARK=self.mark), start_new_session=True)
        self.stopped = []

    def wait_for_checkpoint(self, logdir):
        """Return once training is under way: the first checkpoint is written."""
        deadline = time.monotonic() + TIMEOUT
        while sn.latest_checkpoint(str(logdir)) is None:
            if self.proc.poll() is not None:
                pytest.fail(f"the job ended before its first checkpoint:\n{self.proc.stdout.read()}")
            assert time.monotonic() < deadline, "no checkpoint was written"
            time.sleep(0.1)

    def pid_of_rank(self, rank):
        """The pid of the process whose environment holds this job's mark and ``PMI_RANK=rank``."""
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    env = f.read().split(b"\0")
            except OSError:
                continue
            if f"SCRATCHNET_TEST_MARK={self.mark}".encode() in env and f"PMI_RANK={rank}".encode() in env:
                return int(entry)
        pytest.fail(f"rank {rank} of the job is not running")

    def stop_rank(self, rank):
        pid = self.pid_of_rank(rank)
        os.kill(pid, signal.SIGSTOP)
        self.stopped.append(pid)
        return pid

    def wait(self, timeout):
        """``(exit status, output, seconds)``; a job still running after ``timeout`` seconds fails the test."""
        start = time.monotonic()
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            out, _ = self.proc.communicate()
            pytest.fail(f"the job still ran {timeout} s later:\n{out[-3000:]}")
        return self.proc.returncode, out, time.monotonic() - start

    def kill(self):
        for pid in self.stopped:  # SIGKILL ends a stopped process too
            with _gone_already():
                os.kill(pid, signal.SIGKILL)
        with _gone_already():
            os.killpg(self.proc.pid, signal.SIGKILL)


class _gone_already:
    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        return kind is not None and issubclass(kind, ProcessLookupError)


@pytest.fixture
def job(mpiexec):
    """Start a :class:`Job` (``job(args, rank_0_env)``); whatever is left of it is killed after the test."""
    jobs = []

    def start(args, rank_0_env=None):
        jobs.append(Job(mpiexec, args, rank_0_env))
        return jobs[-1]

    yield start
    for j in jobs:
        if j.proc.poll() is None:
            j.kill()
            j.proc.communicate()


def _cpu_seconds(pid):
    """User and system CPU seconds of process ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------------------
# A rank that stops answering


def test_a_stopped_rank_ends_the_job_within_the_deadline_and_the_waiting_rank_dozes_and_names_it(
        job, tiny_mnist, tmp_path):
    # The short deadline for rank 0 only: rank 1 waits several seconds at the first step, while rank 0
    # loads TensorBoard's writer, and keeps the default.
    run = job(_train(tiny_mnist, tmp_path, 100000), rank_0_env={"SCRATCHNET_MPI_TIMEOUT": str(DEADLINE)})
    run.wait_for_checkpoint(tmp_path)
    waiting = run.pid_of_rank(0)
    run.stop_rank(1)
    time.sleep(1.0)  # rank 0 finishes its step and waits for rank 1
    before, start = _cpu_seconds(waiting), time.monotonic()
    time.sleep(2.0)
    busy = (_cpu_seconds(waiting) - before) / (time.monotonic() - start)
    rc, out, seconds = run.wait(DEADLINE + SLACK)
    assert rc != 0, out
    assert re.search(r"rank 1 stopped answering: it did not reach collective #\d+ "
                     r"\(allreduce of gradients, step \d+\) within 5\.\d s", out), out
    assert "rank 0 is ending the job" in out and "SCRATCHNET_MPI_TIMEOUT" in out, out
    assert busy < 0.25, f"the waiting rank used {busy:.0%} of a core"
    assert sn.latest_checkpoint(str(tmp_path)) is not None  # what was saved is intact


def test_a_rank_that_leaves_early_is_named_and_the_job_ends(mpiexec):
    """Rank 0 makes two barriers and exits; rank 1 waits at its third (as with a shorter --steps on rank 0)."""
    start = time.monotonic()
    rc, out = _run([mpiexec, "-n", "2", sys.executable, WORKER, "uneven"],
                   env=mpi_helpers.launcher_free_env(SCRATCHNET_MPI_TIMEOUT="3"))
    assert time.monotonic() - start < 3 + SLACK
    assert rc == 1, out
    assert ("rank 0 stopped answering: it did not reach collective #3 (barrier of the test) within 3.0 s"
            in out and "rank 1 is ending the job" in out), out


# ----------------------------------------------------------------------------
# SIGTERM to mpiexec


def test_sigterm_to_mpiexec_ends_a_job_whose_rank_is_stopped_within_seconds(job, tiny_mnist, tmp_path):
    """mpiexec forwards SIGTERM to every rank; rank 0, waiting for the stopped rank 1, gives up 5 s later."""
    run = job(_train(tiny_mnist, tmp_path, 100000))  # the default deadline, 300 s: only the signal ends it
    run.wait_for_checkpoint(tmp_path)
    run.stop_rank(1)
    time.sleep(0.5)
    run.proc.send_signal(signal.SIGTERM)
    rc, out, seconds = run.wait(5 + SLACK)
    assert rc == 128 + signal.SIGTERM, out
    assert re.search(r"rank 0 got SIGTERM while waiting at collective #\d+ \([a-z ]+, step \d+\): "
                     r"rank 1 did not answer within 5 s of it; ending the job", out), out


def test_sigterm_to_mpiexec_stops_a_healthy_job_at_the_same_step_on_every_rank_saved(job, tiny_mnist, tmp_path):
    run = job(_train(tiny_mnist, tmp_path, 100000))
    run.wait_for_checkpoint(tmp_path)
    run.proc.send_signal(signal.SIGTERM)
    rc, out, seconds = run.wait(SLACK)
    assert rc == 128 + signal.SIGTERM, out
    stopped = re.findall(r"stopped at step (\d+); continue with --resume", out)
    assert len(stopped) == 1, out  # rank 0 prints; rank 1 stopped with it (or rank 0 would have waited)
    assert sn.latest_checkpoint(str(tmp_path)).endswith(f"model-{stopped[0]}")


# ----------------------------------------------------------------------------
# Ranks launched differently refuse to start (the CLI calls World.agree)


def _mpmd(mpiexec, *ranks):
    """``mpiexec -n 1 A : -n 1 B``: one rank per ``(args, working folder)``."""
    cmd = [mpiexec]
    for i, (args, cwd) in enumerate(ranks):
        cmd += ([":"] if i else []) + ["-n", "1", "-wdir", str(cwd), sys.executable, "-m", "scratchnet", *args]
    return cmd


def test_ranks_launched_with_different_steps_and_batch_size_refuse_to_start_naming_both(
        mpiexec, tiny_mnist, tmp_path):
    logdir = tmp_path / "run"
    first = _train(tiny_mnist, logdir, 4)
    second = [*_train(tiny_mnist, logdir, 6)[:-2], "--batch-size", "16", "--logdir", str(logdir)]
    rc, out = _run(_mpmd(mpiexec, (first, tmp_path), (second, tmp_path)))
    assert rc == 2, out
    errors = [line for line in out.splitlines() if "error:" in line]
    assert errors == [
        "scratchnet train: error: the ranks disagree on the command line: --steps is 4 on rank 0 but 6 on rank 1; "
        "--batch-size is 15 on rank 0 but 16 on rank 1 (every rank must run the same command on the same data)"], out
    assert not logdir.exists()  # nothing was written


def test_a_rank_with_fewer_examples_refuses_to_start_naming_the_data(mpiexec, tmp_path):
    """The same flags (``--data data``), but each rank's working folder holds other files: 200 digits and 190."""
    for name, n in (("a", 200), ("b", 190)):
        (tmp_path / name / "data").mkdir(parents=True)
        _write_digits(tmp_path / name / "data", n)
    args = _train("data", tmp_path / "run", 4)
    rc, out = _run(_mpmd(mpiexec, (args, tmp_path / "a"), (args, tmp_path / "b")))
    assert rc == 2, out
    errors = [line for line in out.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("scratchnet train: error: the ranks disagree on the data: "), out
    assert re.search(r'data\.train\.images is "180x784 float32 sha256:\w+" on rank 0 '
                     r'but "170x784 float32 sha256:\w+" on rank 1', errors[0]), out
    assert not (tmp_path / "run").exists()


def test_world_agree_names_each_differing_key_with_its_ranks_and_passes_equal_configs(mpiexec, tmp_path):
    def agree(*ranks):
        cmd = [mpiexec]
        for i, settings in enumerate(ranks):
            cmd += ([":"] if i else []) + ["-n", "1", sys.executable, WORKER, "agree", *settings]
        return _run(cmd)

    rc, out = agree(["seed=1", "examples=50"], ["seed=1", "examples=50"])
    digests = re.findall(r"rank \d agrees: ([0-9a-f]{64})", out)
    assert rc == 0 and len(digests) == 2 and len(set(digests)) == 1, out
    rc, out = agree(["seed=1", "examples=50"], ["seed=2", "examples=49"])
    assert rc == 2, out
    said = dict(re.findall(r"rank (\d): (the ranks disagree .*?data\))", out))  # the two lines may interleave
    assert sorted(said) == ["0", "1"] and said["0"] == said["1"], out
    assert re.fullmatch(r'the ranks disagree on the run\'s configuration: seed is "1" on rank 0 but "2" on rank 1; '
                        r'data\.train is "50x4 float32 sha256:\w+" on rank 0 but "49x4 float32 sha256:\w+" on rank 1 '
                        r'\(every rank must run the same command on the same data\)', said["0"]), out


def test_data_parallel_refuses_ranks_that_built_different_models_naming_the_variables(mpiexec):
    rc, out = _run([mpiexec, "-n", "1", sys.executable, WORKER, "model", "4", ":",
                    "-n", "1", sys.executable, WORKER, "model", "5"])
    assert rc == 2, out
    said = dict(re.findall(r"rank (\d): (the ranks disagree .*?data\))", out))
    assert sorted(said) == ["0", "1"] and said["0"] == said["1"], out
    assert re.match(r'the ranks disagree on the model\'s variables: \S+ is "\(3, 4\) float32" on rank 0 '
                    r'but "\(3, 5\) float32" on rank 1; \S+ is "\(4,\) float32" on rank 0 but "\(5,\) float32"',
                    said["0"]), out


# ----------------------------------------------------------------------------
# Without MPI: the pieces


def test_describe_disagreement_groups_the_ranks_by_value_and_names_missing_keys():
    configs = [{"steps": 10, "data": {"train": "a"}}, {"steps": 20, "data": {"train": "a"}},
               {"steps": 10, "data": {"train": "b"}}, {"steps": 20, "data": {"train": "a"}, "seed": 3}]
    assert describe_disagreement(configs) == (
        "the ranks disagree on the run's configuration: steps is 10 on ranks 0, 2 but 20 on ranks 1, 3; "
        "data.train is \"a\" on ranks 0, 1, 3 but \"b\" on rank 2; seed is missing on ranks 0-2 but 3 on rank 3 "
        "(every rank must run the same command on the same data)")
    assert ranks_phrase([7, 1, 2, 3, 5]) == "ranks 1-3, 5, 7"


def test_config_digests_ignore_key_order_and_fingerprints_see_one_changed_byte():
    assert config_digest({"a": 1, "b": [1, 2]}) == config_digest({"b": [1, 2], "a": 1})
    assert config_digest({"a": 1}) != config_digest({"a": 2})
    x = np.zeros((10, 3), dtype=np.float32)
    y = x.copy()
    y[9, 2] = 1
    assert fingerprint(x) == fingerprint(x.copy()) != fingerprint(y)
    assert fingerprint(x) != fingerprint(x.reshape(3, 10)) != fingerprint(x.astype(np.float64))
    splits = fingerprint({"train": x, "test": y})
    assert list(splits) == ["train", "test"] and splits["train"].startswith("10x3 float32 sha256:")


def test_the_timeout_is_300_s_by_default_and_set_by_set_timeout_or_the_environment():
    code = ("import scratchnet.distributed as d; print(d.get_timeout()); d.set_timeout(7.5); print(d.get_timeout())\n"
            "for bad in (0, -1, 'abc', float('nan')):\n"
            "    try:\n        d.set_timeout(bad)\n    except ValueError as e:\n        print(e)")
    rc, out = _run([sys.executable, "-c", code])
    assert rc == 0 and out.splitlines()[:2] == ["300.0", "7.5"], out
    assert out.count("timeout must be a positive number of seconds (or inf)") == 4, out
    rc, out = _run([sys.executable, "-c", "import scratchnet.distributed as d; print(d.get_timeout())"],
                   env=mpi_helpers.launcher_free_env(SCRATCHNET_MPI_TIMEOUT="12"))
    assert rc == 0 and out.strip() == "12.0", out
    # Under a launcher, a bad value is an error naming the variable before MPI starts.
    code = "import scratchnet.distributed as d\ntry:\n    d.world()\nexcept d.DistributedError as e:\n    print(e)"
    rc, out = _run([sys.executable, "-c", code],
                   env=mpi_helpers.launcher_free_env(PMI_SIZE="2", PMI_RANK="0", SCRATCHNET_MPI_TIMEOUT="soon"))
    assert rc == 0 and out.strip() == "SCRATCHNET_MPI_TIMEOUT must be a positive number of seconds (or inf), got 'soon'"
