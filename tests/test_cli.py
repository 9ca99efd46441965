"""The ``scratchnet`` command: train, resume, eval --watch, sample, plot."""
from __future__ import annotations

import json
import os
import sys
import threading
import time

import numpy as np
import pytest

from scratchnet import cli
from scratchnet.data import write_idx


def _digits(n, rng):
    """A learnable toy MNIST: digit k lights up rows 2k+3 .. 2k+5."""
    y = rng.integers(0, 10, n).astype(np.uint8)
    x = (rng.random((n, 28, 28)) * 50).astype(np.uint8)
    for i, k in enumerate(y):
        x[i, 2 * k + 3:2 * k + 6] = 255
    return x, y


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory):
    """Four IDX files: 300 training digits (50 of them for validation) and 60 test digits."""
    d = tmp_path_factory.mktemp("mnist")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 300), ("t10k", 60)):
        x, y = _digits(n, rng)
        write_idx(d / f"{prefix}-images-idx3-ubyte.gz", x)
        write_idx(d / f"{prefix}-labels-idx1-ubyte.gz", y)
    return str(d)


def _train_args(data, logdir, steps, *extra):
    return ["train", "mlp", "--data", data, "--validation-size", "50", "--steps", str(steps),
            "--checkpoint-every", "5", "--log-every", "5", "--logdir", str(logdir), "--backend", "numpy",
            "--no-download", "--no-progress", "--batch-size", "50", *extra]


def _events(logdir, run):
    return [f for f in os.listdir(os.path.join(logdir, run)) if f.startswith("events.out.tfevents")]


def test_train_writes_checkpoints_tensorboard_runs_and_prints_test_accuracy(tiny_mnist, tmp_path, capsys):
    assert cli.main(_train_args(tiny_mnist, tmp_path, 10)) == 0
    out = capsys.readouterr().out
    assert "data: MNIST from" in out and "train 250, validation 50, test 60" in out
    assert "test accuracy after 10 steps (moving-average weights, 60 test examples)" in out
    assert sorted(f for f in os.listdir(tmp_path) if f.startswith("model-")) == ["model-10", "model-5"]
    assert _events(tmp_path, "train") and _events(tmp_path, "test")
    from scratchnet.plot import read_scalars

    scalars = read_scalars(str(tmp_path))
    assert [s for s, _ in scalars["train"]["loss"]] == [5, 10]
    assert {"loss", "accuracy"} <= set(scalars["test"])
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["model"] == "mlp" and run["hparams"]["learning_rate"] == 0.8
    # The same scalars as CSV and JSON Lines.
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["run"] == "train"]
    assert [r["step"] for r in train] == [5, 10]
    assert [r["loss"] for r in train] == pytest.approx([v for _, v in scalars["train"]["loss"]], rel=1e-6)
    assert records[-1]["run"] == "test" and records[-1]["step"] == 10
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("run,step,") and len(rows) == 1 + len(records)


def test_resume_continues_a_killed_run_from_its_last_checkpoint(tiny_mnist, tmp_path, capsys):
    cli.main(_train_args(tiny_mnist, tmp_path, 5))  # "killed" after step 5
    capsys.readouterr()
    cli.main(_train_args(tiny_mnist, tmp_path, 10, "--resume"))
    out = capsys.readouterr().out
    assert f"restored {os.path.join(str(tmp_path), 'model-5')}; continuing from step 5" in out
    assert "steps 5 -> 10" in out and "test accuracy after 10 steps" in out
    # The resumed run ends where an uninterrupted one does.
    cli.main(_train_args(tiny_mnist, tmp_path / "straight", 10))
    import scratchnet as sn
    from scratchnet.checkpoint import load_variables

    resumed = load_variables(sn.latest_checkpoint(str(tmp_path)))
    straight = load_variables(sn.latest_checkpoint(str(tmp_path / "straight")))
    np.testing.assert_allclose(resumed["layer1/kernel"], straight["layer1/kernel"], rtol=1e-5, atol=1e-6)
    # The metrics files read as one run: each train step once, in order.
    for name in ("metrics.jsonl", "metrics.csv"):
        resumed_rows = _metrics(tmp_path / name)
        assert [s for r, s in resumed_rows if r == "train"] == [5, 10]
        assert resumed_rows == _metrics(tmp_path / "straight" / name)


def _metrics(path):
    """(run, step) of each record of a metrics.jsonl or metrics.csv."""
    if path.suffix == ".jsonl":
        return [(r["run"], r["step"]) for r in map(json.loads, path.read_text().splitlines())]
    rows = path.read_text().splitlines()[1:]
    return [(row.split(",")[0], int(row.split(",")[1])) for row in rows]


def test_resume_drops_the_metrics_logged_after_the_last_checkpoint(tiny_mnist, tmp_path, capsys):
    # Killed at step 7 with the last checkpoint at 5: steps 6 and 7 are trained and logged again.
    cli.main(_train_args(tiny_mnist, tmp_path, 7, "--log-every", "1"))
    (tmp_path / "model-7").unlink()
    (tmp_path / "checkpoint").write_text(json.dumps({"latest": "model-5", "all": ["model-5"]}))
    cli.main(_train_args(tiny_mnist, tmp_path, 8, "--resume", "--log-every", "1"))
    assert "continuing from step 5" in capsys.readouterr().out
    train = [s for r, s in _metrics(tmp_path / "metrics.jsonl") if r == "train"]
    assert train == list(range(1, 9))


def test_the_last_step_is_logged_even_off_the_logging_grid(tiny_mnist, tmp_path):
    cli.main(_train_args(tiny_mnist, tmp_path, 7))  # --log-every 5
    assert [s for r, s in _metrics(tmp_path / "metrics.jsonl") if r == "train"] == [5, 7]


def test_eval_watch_picks_up_a_new_checkpoint(tiny_mnist, tmp_path, capsys):
    cli.main(_train_args(tiny_mnist, tmp_path, 5))
    capsys.readouterr()
    result = {}
    watcher = threading.Thread(target=lambda: result.setdefault("rc", cli.main([
        "eval", "mlp", "--logdir", str(tmp_path), "--data", tiny_mnist, "--validation-size", "50",
        "--backend", "numpy", "--no-download", "--watch", "0.1", "--max-evals", "2", "--timeout", "30",
    ])))
    watcher.start()
    seen, deadline = "", time.monotonic() + 20
    while "After 5 training step(s)" not in seen and time.monotonic() < deadline:
        time.sleep(0.05)
        seen += capsys.readouterr().out
    cli.main(_train_args(tiny_mnist, tmp_path, 10, "--resume"))  # a new checkpoint appears
    watcher.join(30)
    seen += capsys.readouterr().out
    assert not watcher.is_alive() and result["rc"] == 0
    assert "After 5 training step(s), validation accuracy = " in seen
    assert "After 10 training step(s), validation accuracy = " in seen


def test_eval_without_checkpoints_says_so(tiny_mnist, tmp_path, capsys):
    (tmp_path / "run.json").write_text(json.dumps({"model": "mlp"}))
    rc = cli.main(["eval", "mlp", "--logdir", str(tmp_path), "--data", tiny_mnist, "--validation-size", "50",
                   "--backend", "numpy", "--no-download"])
    assert rc == 1 and "No checkpoint file found" in capsys.readouterr().out


@pytest.fixture(scope="module")
def trained_charlm(tmp_path_factory):
    d = tmp_path_factory.mktemp("charlm")
    rng = np.random.default_rng(0)
    words = "the cat sat on a mat and the dog ran far away".split()
    (d / "text.txt").write_text(" ".join(rng.choice(words, 600)))
    cli.main(["train", "charlm", "--data", str(d / "text.txt"), "--steps", "3", "--batch-size", "4",
              "--logdir", str(d / "run"), "--backend", "numpy", "--no-progress"])
    return d / "run"


def test_sample_prints_text_from_the_prime(trained_charlm, capsys):
    capsys.readouterr()
    args = ["sample", "--logdir", str(trained_charlm), "--prime", "the c", "--length", "25", "--backend", "numpy"]
    assert cli.main(args) == 0
    first = capsys.readouterr().out.rstrip("\n")
    assert first.startswith("the c") and len(first) == 30
    cli.main(args)
    assert capsys.readouterr().out.rstrip("\n") == first  # drawn with the default --seed 0: the same text again
    cli.main(args + ["--temperature", "1.5", "--seed", "1"])
    hot = capsys.readouterr().out.rstrip("\n")
    assert hot.startswith("the c") and len(hot) == 30


def test_plot_writes_a_png(tiny_mnist, tmp_path, capsys):
    cli.main(_train_args(tiny_mnist, tmp_path, 5))
    assert cli.main(["plot", "--logdir", str(tmp_path)]) == 0
    png = tmp_path / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {png}" in capsys.readouterr().out


def test_plot_without_matplotlib_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    assert cli.main(["plot", "--logdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "needs matplotlib" in err and "pip install 'scratchnet[plot]'" in err
