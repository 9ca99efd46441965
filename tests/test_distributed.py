"""Data-parallel training over MPI: 2 ranks over loopback, through a subprocess ``mpiexec``.

Every run has a timeout, so a hang fails the test instead of waiting. The MPI
tests need mpi4py and mpiexec (``pip install 'scratchnet[mpi]'``, which
``make test`` does): in CI their absence is a failure, elsewhere a skip.
"""
from __future__ import annotations

import json
import os
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
from scratchnet import cli
from scratchnet.archive import read_archive
from scratchnet.data import write_idx
from scratchnet.distributed import Shard

WORKER = str(Path(__file__).with_name("mpi_worker.py"))
#: Seconds any one run may take before it counts as hung.
TIMEOUT = 90


def _run(cmd, timeout=TIMEOUT, env=None):
    return mpi_helpers.run(cmd, timeout, env=env)


@pytest.fixture(scope="module")
def mpiexec():
    return mpi_helpers.find_mpiexec()


# ----------------------------------------------------------------------------
# Without MPI: a world of one, shards, dropout


def test_importing_scratchnet_never_imports_mpi4py_and_outside_mpiexec_the_world_has_one_rank():
    code = ("import sys, scratchnet as sn, scratchnet.zoo, scratchnet.distributed as d; "
            "assert 'mpi4py' not in sys.modules; w = d.world(); "
            "assert (w.rank, w.size, d.rank(), d.world_size()) == (0, 1, 0, 1), w; "
            "assert 'mpi4py' not in sys.modules; print('ok')")
    for env in (mpi_helpers.launcher_free_env(), mpi_helpers.launcher_free_env(PMI_SIZE="1", PMI_RANK="0")):
        rc, out = _run([sys.executable, "-c", code], env=env)
        assert rc == 0 and out.strip() == "ok", out


def test_launched_by_mpiexec_without_mpi4py_is_an_error_naming_the_extra():
    code = ("import sys; sys.modules['mpi4py'] = None; import scratchnet.distributed as d\n"
            "try:\n    d.world()\nexcept d.DistributedError as e:\n    print(e)")
    rc, out = _run([sys.executable, "-c", code], env=mpi_helpers.launcher_free_env(PMI_SIZE="2", PMI_RANK="0"))
    assert rc == 0 and "2 ranks" in out and "pip install 'scratchnet[mpi]'" in out, out


def test_importing_scratchnet_changes_no_process_state_even_under_a_launcher():
    """No pinning, no signal handler, no environment variable: ``import scratchnet`` is free of side effects."""
    cores = sorted(os.sched_getaffinity(0))
    code = ("import os, signal, sys; before = (dict(os.environ), signal.getsignal(signal.SIGINT), "
            "signal.getsignal(signal.SIGTERM), sys.excepthook); import scratchnet, scratchnet.model, scratchnet.training; "
            "after = (dict(os.environ), signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM), sys.excepthook); "
            "print(sorted(os.sched_getaffinity(0)), before == after, 'mpi4py' in sys.modules)")
    for rank in (0, 1):
        env = mpi_helpers.launcher_free_env(PMI_SIZE="2", PMI_RANK=str(rank), MPI_LOCALNRANKS="2", MPI_LOCALRANKID=str(rank))
        rc, out = _run([sys.executable, "-c", code], env=env)
        assert rc == 0 and out.strip() == f"{cores} True False", out


def test_another_launchers_partial_variables_never_crash_the_import():
    """``MPI_LOCALNRANKS`` without ``MPI_LOCALRANKID`` (another launcher's) was a KeyError at ``import scratchnet``."""
    cores = sorted(os.sched_getaffinity(0))
    code = "import os, scratchnet; print(sorted(os.sched_getaffinity(0)))"
    rc, out = _run([sys.executable, "-c", code], env=mpi_helpers.launcher_free_env(MPI_LOCALNRANKS="2"))
    assert rc == 0 and out.strip() == str(cores), out


def test_under_a_launcher_pin_cores_pins_each_rank_to_its_share_of_the_cores():
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.skip("one core: nothing to share")
    code = ("import os, sys, scratchnet.distributed as d; n = d.pin_cores(); "
            "print(sorted(os.sched_getaffinity(0)), n, 'mpi4py' in sys.modules)")
    for rank in (0, 1):
        env = mpi_helpers.launcher_free_env(PMI_SIZE="2", PMI_RANK=str(rank), MPI_LOCALNRANKS="2", MPI_LOCALRANKID=str(rank))
        rc, out = _run([sys.executable, "-c", code], env=env)
        half = cores[rank * len(cores) // 2:(rank + 1) * len(cores) // 2]
        assert rc == 0 and out.strip() == f"{half} {len(half)} False", out


def test_pin_cores_never_fails_on_incomplete_or_inconsistent_launcher_variables_and_pins_only_on_whole_ones():
    cores = sorted(os.sched_getaffinity(0))
    code = "import os, scratchnet, scratchnet.distributed as d; d.pin_cores(); print(sorted(os.sched_getaffinity(0)))"
    for local in ({"MPI_LOCALNRANKS": "2"}, {"MPI_LOCALRANKID": "1"}, {"MPI_LOCALRANKID": "2", "MPI_LOCALNRANKS": "2"},
                  {"MPI_LOCALRANKID": "x", "MPI_LOCALNRANKS": "2"}, {"MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "\u00b2"},
                  {"MPI_LOCALRANKID": "0", "MPI_LOCALNRANKS": "3"}):  # the last: more local ranks than the world's 2
        rc, out = _run([sys.executable, "-c", code], env=mpi_helpers.launcher_free_env(PMI_SIZE="2", PMI_RANK="1", **local))
        assert rc == 0 and out.strip() == str(cores), (local, out)
    if len(cores) < 2:
        return
    # An incomplete MPICH pair, then Open MPI's complete one: the complete one pins.
    env = mpi_helpers.launcher_free_env(PMI_SIZE="2", PMI_RANK="1", MPI_LOCALNRANKS="2", OMPI_COMM_WORLD_LOCAL_RANK="1",
                             OMPI_COMM_WORLD_LOCAL_SIZE="2")
    rc, out = _run([sys.executable, "-c", code], env=env)
    assert rc == 0 and out.strip() == str(cores[len(cores) // 2:]), out


def test_shards_cover_the_global_batch_once_and_their_weights_sum_to_one():
    for n in range(1, 8):
        for ranks in range(1, 5):
            shards = [Shard.of(n, r, ranks) for r in range(ranks)]
            own = [s for s in shards if s.weight > 0]
            assert [i for s in own for i in range(s.start, s.stop)] == list(range(n))
            assert sum(s.weight for s in shards) == pytest.approx(1.0)
            assert all(s.rows == 1 and s.start == 0 for s in shards if s.weight == 0)  # a borrowed row


def test_outside_mpiexec_allreduce_gradients_changes_nothing():
    model = sn.Sequential([sn.layers.Dense(3)])
    model.build((None, 2))
    for p in model.parameters():
        p.grad = np.ones(p.shape, dtype=p.dtype)
    sn.distributed.allreduce_gradients(model)
    assert all((p.grad == 1).all() for p in model.parameters())


def test_dropout_given_a_shard_keeps_its_rows_of_the_mask_of_the_global_batch():
    layer = sn.layers.Dropout(0.5)
    x = np.ones((7, 5))
    with sn.use_backend("numpy"):
        sn.random.seed(3)
        whole, _ = layer.forward(x, training=True)
        for r in range(3):
            sn.random.seed(3)
            shard = Shard.of(7, r, 3)
            y, backprop = layer.forward(shard.take(x), training=shard)
            np.testing.assert_array_equal(y, shard.take(whole))
            np.testing.assert_array_equal(backprop(np.ones_like(y)), shard.take(whole))


# ----------------------------------------------------------------------------
# 2 ranks through mpiexec


@pytest.mark.parametrize("ranks", [1, 2, 3])
def test_ring_allreduce_equals_mpi_allreduce_for_uneven_buffers(mpiexec, tmp_path, ranks):
    out = tmp_path / "ring.json"
    rc, log = _run([mpiexec, "-n", str(ranks), sys.executable, WORKER, "ring", str(out)])
    assert rc == 0, log
    report = json.loads(out.read_text())
    assert report["ranks"] == ranks
    for r in report["results"]:
        assert r["close"] and r["same_on_every_rank"], r
        assert r["shape"] == [r["n"]]
        if r["dtype"] == "int64" or ranks <= 2:  # a sum of two is the same in any order
            assert r["exact"], r


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fit_on_two_ranks_ends_bit_identical_on_every_rank_and_equal_to_one_process(mpiexec, tmp_path, dtype):
    """Adam's moments, the moving averages, dropout, L2, clipping and a one-row last batch: all as one process."""
    one, two = tmp_path / "one.npz", tmp_path / "two.npz"
    rc, log = _run([sys.executable, WORKER, "fit", dtype, str(one)])
    assert rc == 0, log
    rc, log = _run([mpiexec, "-n", "2", sys.executable, WORKER, "fit", dtype, str(two)])
    assert rc == 0, log
    a, b = np.load(one), np.load(two)
    meta_a, meta_b = json.loads(str(a["history"])), json.loads(str(b["history"]))
    assert meta_b["ranks"] == 2 and meta_b["step"] == meta_a["step"] == 12
    first, second = meta_b["digests"]
    assert first == second, "the ranks' tensors differ"
    rtol = 1e-10 if dtype == "float64" else 1e-5
    names = [k for k in a.files if k != "history"]
    assert names == [k for k in b.files if k != "history"] and any(k.endswith(":m") for k in names)
    for k in names:
        scale = max(float(np.max(np.abs(a[k]))), 1e-30) if a[k].size else 1.0
        np.testing.assert_allclose(b[k], a[k], rtol=0, atol=rtol * scale, err_msg=k)
    for k, values in meta_a["history"].items():
        np.testing.assert_allclose(meta_b["history"][k], values, rtol=rtol, err_msg=k)


def _digits(n, rng):
    y = rng.integers(0, 10, n).astype(np.uint8)
    x = (rng.random((n, 28, 28)) * 50).astype(np.uint8)
    for i, k in enumerate(y):
        x[i, 2 * k + 3:2 * k + 6] = 255
    return x, y


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory):
    d = tmp_path_factory.mktemp("mnist")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 200), ("t10k", 40)):
        x, y = _digits(n, rng)
        write_idx(d / f"{prefix}-images-idx3-ubyte.gz", x)
        write_idx(d / f"{prefix}-labels-idx1-ubyte.gz", y)
    return str(d)


def _train(data, logdir, steps, *extra, dtype="float64"):
    # Batches of 15 split 8 + 7: the shards are uneven.
    return ["train", "lenet", "--data", data, "--validation-size", "20", "--no-download", "--no-progress",
            "--backend", "numpy", "--batch-size", "15", "--steps", str(steps), "--checkpoint-every", "3",
            "--eval-examples", "20", "--dtype", dtype, "--logdir", str(logdir), *extra]


def _on_ranks(mpiexec, ranks, args, **kwargs):
    return _run([mpiexec, "-n", str(ranks), sys.executable, "-m", "scratchnet", *args], **kwargs)


def _assert_same_checkpoint(path, reference, atol=1e-10):
    _, got = read_archive(str(path))
    _, expected = read_archive(str(reference))
    assert sorted(got) == sorted(expected)
    for name in expected:
        if expected[name].dtype.kind == "f":
            np.testing.assert_allclose(got[name], expected[name], rtol=0, atol=atol, err_msg=name)
        else:
            np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


@pytest.fixture(scope="module")
def lenet_runs(mpiexec, tiny_mnist, tmp_path_factory):
    """LeNet (dropout, L2 on the last layer, a moving average) for 6 steps in float64: 1 process, then 2 ranks."""
    one, two = tmp_path_factory.mktemp("one"), tmp_path_factory.mktemp("two")
    assert cli.main(_train(tiny_mnist, one, 6)) == 0
    rc, out = _on_ranks(mpiexec, 2, _train(tiny_mnist, two, 6))
    assert rc == 0, out
    return one, two, out


def test_two_ranks_train_lenet_to_the_weights_of_one_process_and_only_rank_0_writes(lenet_runs):
    one, two, out = lenet_runs
    _assert_same_checkpoint(two / "model-6", one / "model-6")
    lines = [line for line in out.splitlines() if line.startswith("distributed:")]
    assert len(lines) == 1 and "2 ranks" in lines[0] and "global batch 15 = 8, 7 per rank" in lines[0], out
    assert out.count("test accuracy after 6 steps") == 1, out
    assert sorted(os.listdir(two)) == sorted(os.listdir(one))
    assert [len(os.listdir(two / run)) for run in ("train", "test")] == [1, 1]  # one writer of each event file
    with open(one / "metrics.csv") as f1, open(two / "metrics.csv") as f2:
        rows1, rows2 = [r.split(",") for r in f1.read().split()], [r.split(",") for r in f2.read().split()]
    assert [r[:2] for r in rows2] == [r[:2] for r in rows1]  # the global batch's logs, logged once
    for r1, r2 in zip(rows1[1:], rows2[1:]):
        np.testing.assert_allclose([float(v) for v in r2[2:4]], [float(v) for v in r1[2:4]], rtol=1e-10)


def test_a_two_rank_checkpoint_resumes_in_one_process_and_in_two_ranks_to_the_uninterrupted_weights(
        mpiexec, tiny_mnist, lenet_runs, tmp_path):
    one, two, _ = lenet_runs
    resume = ("--resume-from", str(two / "model-3"))
    assert cli.main(_train(tiny_mnist, tmp_path / "one", 6, *resume)) == 0
    _assert_same_checkpoint(tmp_path / "one" / "model-6", one / "model-6")
    rc, out = _on_ranks(mpiexec, 2, _train(tiny_mnist, tmp_path / "two", 6, *resume))
    assert rc == 0 and "continuing from step 3" in out, out
    _assert_same_checkpoint(tmp_path / "two" / "model-6", one / "model-6")


def _pid_of_rank(rank, mark):
    """The pid of the process whose environment holds ``mark`` and ``PMI_RANK=rank`` (None while there is none)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if f"SCRATCHNET_TEST_MARK={mark}".encode() in env and f"PMI_RANK={rank}".encode() in env:
            return int(entry)
    return None


def test_a_rank_killed_mid_run_ends_the_job_non_zero_within_60_s_and_the_last_checkpoint_loads(
        mpiexec, tiny_mnist, tmp_path):
    mark = uuid.uuid4().hex
    args = _train(tiny_mnist, tmp_path, 100000, "--checkpoint-every", "2", dtype="float32")
    proc = subprocess.Popen([mpiexec, "-n", "2", sys.executable, "-m", "scratchnet", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=mpi_helpers.launcher_free_env(SCRATCHNET_TEST_MARK=mark),
                            start_new_session=True)
    try:
        deadline = time.monotonic() + TIMEOUT
        while sn.latest_checkpoint(str(tmp_path)) is None:
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "no checkpoint was written"
            time.sleep(0.2)
        victim = _pid_of_rank(1, mark)
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        rc = proc.wait(timeout=60)
        assert time.monotonic() - killed < 60
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert rc != 0
    newest = sn.latest_checkpoint(str(tmp_path))
    recipe = sn.zoo.build("lenet", batch_size=15, dtype="float32")
    step = recipe.checkpoint().restore(newest)
    assert step >= 2 and newest.endswith(f"model-{step}")


@pytest.mark.gpu
def test_the_cupy_path_averages_through_nccl_or_the_host():
    """Runs where a GPU is lent: one rank, NCCL (or host staging) over a CuPy buffer."""
    from scratchnet.backend import cupy_unavailable_reason

    reason = cupy_unavailable_reason()
    if reason:
        pytest.skip(f"no CuPy backend here ({reason}); the NCCL and host-staging paths need a GPU")
    import cupy

    from scratchnet.distributed.device import HostStaged

    class OneRank(sn.distributed.World):
        def allreduce(self, buf):
            buf *= 2  # stands in for a second rank holding the same values
            return buf

    buf = cupy.arange(10, dtype=cupy.float32)
    HostStaged(OneRank())(buf)
    np.testing.assert_array_equal(cupy.asnumpy(buf), 2 * np.arange(10, dtype=np.float32))


# ----------------------------------------------------------------------------
# Batch normalization: per-rank statistics in the forward, the global batch's in the moving averages

BN_WORKER = str(Path(__file__).with_name("mpi_worker_batch_norm.py"))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_batch_norm_moving_averages_follow_the_global_batch_on_every_rank_and_in_rank_0s_checkpoint(
        mpiexec, tmp_path, dtype):
    one, two = tmp_path / "one.npz", tmp_path / "two.npz"
    rc, log = _run([sys.executable, BN_WORKER, dtype, str(one), str(tmp_path / "ck1")])
    assert rc == 0, log
    rc, log = _run([mpiexec, "-n", "2", sys.executable, BN_WORKER, dtype, str(two), str(tmp_path / "ck2")])
    assert rc == 0, log
    a, b = np.load(one), np.load(two)
    meta = json.loads(str(b["meta"]))
    assert meta["ranks"] == 2
    first, second = meta["digests"]
    assert first == second, "the ranks' tensors differ"  # the moving averages included
    # The first batch norm reads the data: its moving averages are the global batches', as in one process,
    # though each rank normalized its own 6 rows (whose means differ: the rows are sorted).
    rtol = 1e-12 if dtype == "float64" else 2e-6
    for name in ("bn_data/moving_mean", "bn_data/moving_variance"):
        np.testing.assert_allclose(b[name], a[name], rtol=rtol, atol=rtol, err_msg=name)
    # Rank 0's checkpoint carries them (every moving statistic), as every rank holds them.
    _, arrays = read_archive(meta["checkpoint"])
    for name in ("bn_data/moving_mean", "bn_data/moving_variance", "bn_hidden/moving_mean", "bn_hidden/moving_variance"):
        np.testing.assert_array_equal(arrays[name], b[name], err_msg=name)
    # Per-rank statistics in the forward (not a synchronized batch norm): the other weights differ from one process.
    assert not np.allclose(b["dense/kernel"], a["dense/kernel"], rtol=1e-6)


def test_reduce_batch_statistics_gives_the_global_batchs_mean_and_variance():
    """The two allreduces' formula, on a world that sums what its two shards hand it: the whole batch's statistics."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((10, 3)) * [1.0, 4.0, 0.1] + [3.0, -1.0, 100.0]
    shards = [Shard.of(10, r, 2) for r in range(2)]

    class TwoShards(sn.distributed.World):
        """Rank 0 of a two-rank world whose other rank holds the second shard: allreduce adds its share."""

        def __init__(self):
            super().__init__()
            self.size, self.calls = 2, 0

        def allreduce(self, buf, what="allreduce"):
            other = shards[1].take(x)
            m1, v1 = other.mean(axis=0), other.var(axis=0)
            if self.calls == 0:
                share = shards[1].weight * m1
            else:
                share = shards[1].weight * (v1 + (m1 - self.mean) ** 2)
            self.calls += 1
            buf = buf + share
            self.mean = buf
            return buf

    dp = sn.distributed.DataParallel.__new__(sn.distributed.DataParallel)
    dp.world = TwoShards()
    own = shards[0].take(x)
    mean, variance = dp.reduce_batch_statistics(own.mean(axis=0), own.var(axis=0), shards[0].weight)
    np.testing.assert_allclose(mean, x.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(variance, x.var(axis=0), rtol=1e-12)
