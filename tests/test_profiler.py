"""``sn.profile()``: every op call timed forward and backward, rows that add up, roofs, Chrome traces, ``--profile``."""
from __future__ import annotations

import gc
import json
import re
import time
import tracemalloc
import weakref
from pathlib import Path

import numpy as np
import pytest

import scratchnet as sn
from scratchnet import cli, fused_update, recording, training
from scratchnet.backend import cupy_unavailable_reason
from scratchnet.data import write_idx
from scratchnet.profiler import ProfileSteps, calibration, report

TIMING_PAGE = Path(__file__).resolve().parents[1] / "docs" / "timing.md"
SECTION = "## Profiling"
PEAKS = {"sgemm_gflops": 100.0, "copy_gbs": 10.0}  # balance: 10 FLOPs per byte


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """The calibration is cached in this session's temporary folder, never in the user's ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "xdg-cache"))


@pytest.fixture(autouse=True)
def reference_backend():
    with sn.use_backend("numpy"):
        yield


def normal(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@recording.op("sleepy")
def sleepy(x, seconds):
    """A recorded op that takes ``seconds``, forward and backward."""
    time.sleep(seconds)

    def backprop(dy):
        time.sleep(seconds)
        return dy

    return x, backprop


def check_chrome_trace(path):
    """The Chrome trace format's schema for complete events; returns the "X" events."""
    trace = json.loads(Path(path).read_text())
    assert isinstance(trace, dict) and isinstance(trace["traceEvents"], list)
    complete = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert complete
    for e in trace["traceEvents"]:
        assert e["ph"] in ("X", "M") and isinstance(e["name"], str)
        assert isinstance(e["pid"], int) and isinstance(e["tid"], int)
    for e in complete:
        assert e["cat"] in ("forward", "backward", "region", "layer", "step")
        assert isinstance(e["ts"], (int, float)) and e["ts"] >= 0
        assert isinstance(e["dur"], (int, float)) and e["dur"] >= 0
        assert isinstance(e["args"], dict)
        if e["cat"] in ("forward", "backward"):
            args = e["args"]
            assert set(args) >= {"op", "shapes", "dtype", "flops", "bytes", "layer", "backend"}
            assert all(isinstance(s, list) and all(isinstance(n, int) for n in s) for s in args["shapes"].values())
            assert args["flops"] >= 0 and args["bytes"] >= 0
    # Complete events on one thread must nest: each one starts and ends inside any it overlaps.
    spans = sorted((e["ts"], -e["dur"], e["ts"] + e["dur"]) for e in complete)
    open_ends = []
    for start, _, end in spans:
        while open_ends and open_ends[-1] <= start + 1e-3:
            open_ends.pop()
        assert not open_ends or end <= open_ends[-1] + 1e-3, "overlapping events that do not nest"
        open_ends.append(end)
    return complete


# -- what is recorded -------------------------------------------------------------------------------
def test_each_op_call_is_recorded_forward_and_backward_with_backend_dtype_shapes_and_cost():
    x, w, b, dy = normal(0, 8, 5), normal(1, 5, 3), normal(2, 3), normal(3, 8, 3)
    with sn.profile(peaks=PEAKS) as prof:
        y, backprop = sn.ops.dense(x, w, b)
        backprop(dy)
    rows = {r["name"]: r for r in prof.rows}
    assert set(rows) == {"dense forward", "dense backward", "other"}
    cost = sn.ops.dense.cost(x=x, w=w, b=b)
    fwd, bwd = rows["dense forward"], rows["dense backward"]
    assert fwd["calls"] == bwd["calls"] == 1
    assert (fwd["flops"], fwd["bytes"]) == (cost.flops, cost.bytes)
    assert (bwd["flops"], bwd["bytes"]) == (cost.backward_flops, cost.backward_bytes)
    assert fwd["backend"] == "numpy" and fwd["dtype"] == "float32" and fwd["op"] == "dense"
    assert fwd["shapes"] == [(("x", (8, 5)), ("w", (5, 3)), ("b", (3,)))]


def test_a_backward_run_after_the_block_is_not_recorded():
    with sn.profile(peaks=PEAKS) as prof:
        _, backprop = sn.ops.relu(normal(0, 4, 4))
    backprop(normal(1, 4, 4))
    assert [r["name"] for r in prof.rows] == ["relu forward", "other"]


def test_rows_and_other_add_up_to_the_wall_time_of_the_block():
    with sn.profile(peaks=PEAKS) as prof:
        sleepy(normal(0, 2), 0.01)[1](normal(1, 2))
        time.sleep(0.02)  # not in any op: "other"
    rows = prof.rows
    assert rows[-1]["name"] == "other" and rows[-1]["total_ms"] >= 20
    assert sum(r["total_ms"] for r in rows) == pytest.approx(1e3 * prof.wall_s, rel=1e-9)
    assert sum(r["percent"] for r in rows) == pytest.approx(100.0)


def test_an_op_inside_a_region_is_counted_once_exclusive_of_the_region():
    with sn.profile(peaks=PEAKS) as prof:
        with recording.region("optimizer"):
            time.sleep(0.01)
            sleepy(normal(0, 2), 0.02)
    rows = {r["name"]: r for r in prof.rows}
    region = next(s for s in prof.spans if s.kind == "region")
    inclusive_ms = 1e3 * (region.end - region.begin)
    assert rows["optimizer"]["total_ms"] + rows["sleepy forward"]["total_ms"] == pytest.approx(inclusive_ms)
    assert rows["optimizer"]["total_ms"] < rows["sleepy forward"]["total_ms"]
    assert sum(r["total_ms"] for r in rows.values()) == pytest.approx(1e3 * prof.wall_s)


def small_model():
    sn.random.seed(0)
    model = sn.Sequential([sn.layers.Dense(6, activation="relu", name="hidden"), sn.layers.Dense(3, name="logits")],
                          name="net")
    model.compile(sn.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    model.ema = sn.ExponentialMovingAverage(0.9)
    return model


def test_a_training_step_shows_its_ops_layers_and_regions():
    model = small_model()
    x, y = normal(0, 16, 4), np.arange(16) % 3
    with sn.profile(peaks=PEAKS) as prof:
        model.train_on_batch(x, y)
    names = {r["name"] for r in prof.rows}
    # The ReLU is a row of its own, unless the dense op fuses it. check_finite: the step's check that the loss
    # and gradients are finite before they are applied (a NaN stops training).
    assert names - {"relu forward", "relu backward"} == {
        "dense forward", "dense backward", "softmax_cross_entropy forward", "softmax_cross_entropy backward",
        "check_finite", "optimizer", "regularizer", "moving_average", "other"}
    by_layer = {r["name"]: r for r in prof.summary(group_by="layer")}
    assert "dense" in by_layer["hidden forward"]["op"].split(",")
    assert by_layer["logits backward"]["op"] == "dense" and by_layer["logits backward"]["calls"] == 1
    assert "softmax_cross_entropy forward" in by_layer  # outside any layer: by its op
    layers = {s.info.scope for s in prof.spans if s.kind == "forward" and s.info.layer}
    assert layers == {"net/hidden", "net/logits"}


def test_table_has_the_columns_sorts_and_ends_with_other_and_the_total():
    model = small_model()
    with sn.profile(peaks=PEAKS) as prof:
        for _ in range(2):
            model.train_on_batch(normal(0, 16, 4), np.arange(16) % 3)
    text = prof.table()
    header = next(line for line in text.splitlines() if line.startswith("name"))
    assert header.split() == ["name", "calls", "total", "ms", "mean", "ms", "%", "wall", "GFLOP/s", "GB/s", "bound",
                              "%", "peak"]
    lines = text.splitlines()
    last = max(i for i, line in enumerate(lines) if line.startswith("total (wall)"))
    assert f"{1e3 * prof.wall_s:.2f}" in lines[last] and lines[last + 1].startswith("% peak: ")
    assert lines[last - 2].startswith("other")
    totals = [r["total_ms"] for r in prof.summary("total")[:-1]]
    assert totals == sorted(totals, reverse=True)
    names = [r["name"] for r in prof.summary("name")[:-1]]
    assert names == sorted(names)
    calls = [r["calls"] for r in prof.summary("calls")[:-1]]
    assert calls == sorted(calls, reverse=True)
    assert "hidden forward" in prof.table(group_by="layer")
    with pytest.raises(ValueError, match="sort_by must be one of"):
        prof.table(sort_by="fastest")
    with pytest.raises(ValueError, match="group_by must be one of"):
        prof.table(group_by="shape")


def test_the_bound_is_compute_above_the_machine_balance_and_memory_below():
    # 1 ms; balance 10 FLOP/byte.
    assert report.roofline(50e6, 1e6, 1e-3, PEAKS) == pytest.approx((50.0, 1.0, "compute", 50.0))
    assert report.roofline(1e6, 5e6, 1e-3, PEAKS) == pytest.approx((1.0, 5.0, "memory", 50.0))
    assert report.roofline(0, 0, 1e-3, PEAKS) == (None, None, None, None)


def test_a_row_over_100_percent_of_its_roof_is_marked_and_the_legend_says_why():
    def row(name, op, bound, pct):
        return {"name": name, "op": op, "kind": "forward", "calls": 1, "total_ms": 1.0, "mean_ms": 1.0,
                "percent": 25.0, "gflops": 1.0, "gbs": 1.0, "bound": bound, "percent_of_peak": pct}

    rows = [row("conv2d forward", "conv2d", "compute", 238.0), row("relu backward", "relu", "memory", 130.0),
            row("dense forward", "dense", "compute", 120.0), row("dense backward", "dense", "compute", 80.0)]
    text = report.table(rows, 4e-3, PEAKS, "profile")
    assert "238.0*" in text and "130.0*" in text and "120.0*" in text and "80.0*" not in text
    legend = text.splitlines()[-4:]
    assert legend[0].startswith("% peak: a compute-bound row's GFLOP/s against the sgemm roof")
    assert legend[1].startswith("* over 100%: conv2d forward: computed with fewer operations than its cost formula")
    assert "Winograd" in legend[1]
    assert legend[2].startswith("* over 100%: relu backward: its bytes stayed in the caches")
    assert legend[3].startswith("* over 100%: dense forward: ran faster than the sgemm roof, which was measured "
                                "while the machine was busier")
    assert "* over 100%" not in report.table(rows[3:], 4e-3, PEAKS, "profile")


# -- the Chrome trace -------------------------------------------------------------------------------
def test_export_chrome_trace_writes_complete_events_perfetto_opens(tmp_path):
    model = small_model()
    with sn.profile(peaks=PEAKS) as prof:
        model.train_on_batch(normal(0, 16, 4), np.arange(16) % 3)
    events = check_chrome_trace(prof.export_chrome_trace(tmp_path / "trace.json"))
    cats = {e["cat"] for e in events}
    assert cats == {"forward", "backward", "region", "layer", "step"}
    conv = next(e for e in events if e["name"] == "dense backward")
    assert conv["args"]["dtype"] == "float32" and conv["args"]["layer"] in ("hidden", "logits")


# -- calibration ------------------------------------------------------------------------------------
def test_calibrate_caches_per_machine_and_remeasures_when_forced(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    measured = []
    monkeypatch.setattr(calibration, "measure", lambda be: measured.append(be.name) or {"sgemm_gflops": 50.0,
                                                                                       "copy_gbs": 5.0})
    first = sn.profile.calibrate()
    assert measured == ["numpy"] and not first["cached"] and first["balance"] == 10.0
    cached = json.loads((tmp_path / "scratchnet" / "profile-peaks.json").read_text())
    assert list(cached) == [first["key"]] and "numpy" in first["key"]
    calibration._memo.clear()  # a new process: read from the file
    assert sn.profile.calibrate()["cached"] and len(measured) == 1
    monkeypatch.setattr(calibration, "cpu_model", lambda: "Another CPU")
    assert not sn.profile.calibrate()["cached"] and len(measured) == 2
    assert not sn.profile.calibrate(force=True)["cached"] and len(measured) == 3
    assert len(json.loads((tmp_path / "scratchnet" / "profile-peaks.json").read_text())) == 2


def test_calibrate_measures_the_sgemm_and_copy_rates_of_this_machine():
    peaks = calibration.measure(sn.get_backend())
    assert peaks["sgemm_gflops"] > 0.1 and peaks["copy_gbs"] > 0.1


def test_sn_profile_is_the_context_manager_factory_with_calibrate():
    from scratchnet.profiler import profile

    assert sn.profile is profile and callable(sn.profile.calibrate)


# -- profiling off costs nothing ----------------------------------------------------------------------
def test_with_no_profile_active_an_op_records_nothing_and_allocates_nothing_in_recording(monkeypatch):
    calls = []
    real = recording.OpCall
    monkeypatch.setattr(recording, "OpCall", lambda *a, **k: calls.append(a) or real(*a, **k))
    x = normal(0, 4, 4)
    for _ in range(10):
        sn.ops.relu(x)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for _ in range(1000):
            y, backprop = sn.ops.relu(x)
            backprop(y)
        del y, backprop
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    only_recording = [tracemalloc.Filter(True, recording.__file__)]
    growth = sum(d.size_diff for d in after.filter_traces(only_recording).compare_to(
        before.filter_traces(only_recording), "filename"))
    assert growth <= 0, f"recording.py kept {growth} bytes over 1,000 calls with no profile active"
    assert calls == [] and recording.active() == []


def test_a_finished_profile_is_no_longer_active_and_keeps_no_arrays_alive():
    x = normal(0, 64, 64)
    with sn.profile(peaks=PEAKS) as prof:
        y, backprop = sn.ops.relu(x)
        backprop(y)
    assert recording.active() == []
    alive = weakref.ref(y)
    del y, backprop
    gc.collect()
    assert alive() is None and prof.rows[0]["calls"] == 1


# -- on the GPU -------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(cupy_unavailable_reason() is not None, reason=f"cupy backend: {cupy_unavailable_reason()}")
def test_on_cupy_the_times_come_from_cuda_events(tmp_path):
    from scratchnet.profiler import CudaClock

    with sn.use_backend("cupy") as be:
        x, w = be.xp.asarray(normal(0, 1024, 1024)), be.xp.asarray(normal(1, 1024, 1024))
        with sn.profile() as prof:
            for _ in range(3):
                y, backprop = sn.ops.dense(x, w)
                backprop(y)
    assert isinstance(prof.clock, CudaClock) and prof.backend == "cupy"
    rows = {r["name"]: r for r in prof.rows}
    assert rows["dense forward"]["calls"] == 3 and rows["dense forward"]["total_ms"] > 0
    assert rows["dense forward"]["bound"] == "compute"
    assert sum(r["total_ms"] for r in rows.values()) == pytest.approx(1e3 * prof.wall_s)
    check_chrome_trace(prof.export_chrome_trace(tmp_path / "trace.json"))


# -- profiling N steps of a training run ------------------------------------------------------------
def test_profile_steps_records_the_steps_after_the_warm_up_only():
    model = small_model()
    out = []
    cb = ProfileSteps(3, warmup=2, print_fn=out.append)
    batches = ((0, normal(i, 16, 4), np.arange(16) % 3) for i in range(100))
    training.train(model, batches, 8, [cb])
    segments = [s.info for s in cb.profile.spans if s.kind == "step"]
    assert segments == ["step 3", "step 4", "step 5"]
    # After the first step the SGD, L2 and moving-average updates are one fused pass (scratchnet/fused_update.py).
    assert {r["calls"] for r in cb.profile.rows if r["name"] == fused_update.REGION} == {3}
    # The rows cover each step; the callback's own clock also holds the profile's start and stop, some tens of
    # microseconds a step, which for this model's sub-millisecond steps can pass 5%.
    assert sum(r["total_ms"] for r in cb.profile.rows) == pytest.approx(1e3 * sum(cb.step_seconds), rel=0.05, abs=0.3)
    assert out[0].startswith("profile: steps 3-5, 3 steps after 2 warm-up steps")


def test_profile_steps_reports_what_it_got_when_the_run_is_shorter():
    model = small_model()
    out = []
    cb = ProfileSteps(5, warmup=1, print_fn=out.append)
    training.train(model, ((0, normal(i, 8, 4), np.arange(8) % 3) for i in range(10)), 3, [cb])
    assert "2 steps after 1 warm-up steps (the run ended after 2 of the 5 asked for)" in out[0]
    out.clear()
    training.train(small_model(), ((0, normal(i, 8, 4), np.arange(8) % 3) for i in range(10)), 1,
                   [ProfileSteps(5, warmup=1, print_fn=out.append)])
    assert out == ["profile: the run took 1 steps, none after the 1 warm-up steps; nothing was profiled"]


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory):
    d = tmp_path_factory.mktemp("mnist")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 200), ("t10k", 20)):
        write_idx(d / f"{prefix}-images-idx3-ubyte.gz", (rng.random((n, 28, 28)) * 255).astype(np.uint8))
        write_idx(d / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n).astype(np.uint8))
    return str(d)


def test_train_profile_prints_a_table_that_adds_up_to_the_measured_step_time(tiny_mnist, tmp_path, capsys):
    rc = cli.main(["train", "lenet", "--steps", "20", "--profile", "5", "--data", tiny_mnist, "--validation-size",
                   "50", "--batch-size", "50", "--logdir", str(tmp_path), "--backend", "numba", "--no-download",
                   "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0, out
    measured = float(re.search(r"profile: steps 3-7, 5 steps after 2 warm-up steps; measured ([\d.]+) ms", out)[1])
    lines = out[out.index("\nname "):].splitlines()[1:]
    rules = [i for i, line in enumerate(lines) if set(line) == {"-"}]
    # Between the rules, one row per line: the name, then calls, then the 7 right-aligned columns.
    rows = [(" ".join(line.split()[:-7]), float(line.split()[-7])) for line in lines[rules[0] + 1:rules[1]]]
    names = [re.sub(r" \d+$", "", name) for name, _ in rows]
    assert "conv2d backward" in names and fused_update.REGION in names and names[-1] == "other"
    total = float(re.search(r"^total \(wall\)\s+\d+\s+([\d.]+)", lines[rules[1] + 1])[1])
    assert sum(ms for _, ms in rows) == pytest.approx(measured, rel=0.05)
    assert total == pytest.approx(measured, rel=0.05)
    check_chrome_trace(tmp_path / "trace.json")
    assert f"profile: wrote {tmp_path / 'trace.json'}" in out


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_train_refuses_a_profile_that_is_not_a_positive_int(value, capsys):
    assert cli.main(["train", "lenet", "--profile", value]) == 2
    assert "argument --profile: must be a positive int" in capsys.readouterr().err


# -- the timing page ----------------------------------------------------------------------------------
def timing_page_cells(upto):
    """The code cells of docs/timing.md, in order, up to the one holding ``upto``, as one program."""
    cells = re.findall(r"^```\{code-cell\} ipython3\n(.*?)^```", TIMING_PAGE.read_text(encoding="utf-8"), re.S | re.M)
    last = next(i for i, cell in enumerate(cells) if upto in cell)
    return "\n".join(cells[:last + 1])


def test_the_timing_pages_profile_uses_one_calibrated_roof_for_every_table(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))   # a fresh cache: the page measures its roofs itself
    namespace = {"__name__": "timing_page"}
    with sn.use_backend("numba"):
        exec(compile(timing_page_cells("export_chrome_trace"), "docs/timing.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert "conv2d backward" in out and "total (wall)" in out and "% peak: " in out
    roofs = set(re.findall(r"sgemm ([\d.]+) GFLOP/s", out))
    assert len(roofs) == 1, f"the page shows {len(roofs)} sgemm roofs: {sorted(roofs)}"
    assert {r["name"] for r in namespace["prof"].rows} >= {"conv2d forward", fused_update.REGION, "other"}
