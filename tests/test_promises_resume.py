"""A killed run resumes to the uninterrupted weights, bit for bit, for every seed model.

``tests/test_folder_safety.py`` kills the MLP again and again; here each of the
other seed models (LeNet, the row LSTM and the character language model, whose
LSTM state is carried from batch to batch and must come back with the
checkpoint) is killed with SIGKILL at random steps, resumed, and compared with
a run that was never interrupted.
"""
from __future__ import annotations

import json
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

#: Steps of each run, and the checkpoint interval: the row LSTM (3 x 256 units over 28 rows) is the slow one.
STEPS = {"lenet": 40, "lstm": 20, "charlm": 40}
EVERY = {"lenet": 5, "lstm": 4, "charlm": 5}
#: The numpy backend, but for the row LSTM, six times faster on numba (whose runs repeat bit for bit too).
BACKEND = {"lenet": "numpy", "lstm": "numba", "charlm": "numpy"}


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory):
    d = tmp_path_factory.mktemp("mnist")
    rng = np.random.default_rng(1)
    for prefix, n in (("train", 200), ("t10k", 20)):
        images = (rng.random((n, 28, 28)) * 255).astype(np.uint8)
        images[:, :4] = 0  # blank rows, as in real digits
        write_idx(d / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(d / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n).astype(np.uint8))
    return str(d)


@pytest.fixture(scope="module")
def tiny_text(tmp_path_factory):
    from pydoc_data.topics import topics

    path = tmp_path_factory.mktemp("text") / "text.txt"
    text = "".join(topics[k] for k in sorted(topics))[:40_000]
    path.write_text(text, encoding="utf-8")
    return str(path)


def _args(model, data, logdir, *extra):
    data_args = ["--validation-size", "20"] if model != "charlm" else []
    return ["train", model, "--data", data, *data_args, "--steps", str(STEPS[model]), "--batch-size", "8",
            "--checkpoint-every", str(EVERY[model]), "--log-every", "1", "--eval-every", "1000", "--logdir", str(logdir),
            "--backend", BACKEND[model], "--no-download", "--no-progress", "--seed", "3", *extra]


def _train_steps(logdir):
    lines = (logdir / "metrics.jsonl").read_text().splitlines()
    return [r["step"] for r in map(json.loads, lines) if r["run"] == "train"]


def _logged(logdir):
    try:
        return len(_train_steps(logdir))
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def _weights(logdir):
    return load_variables(sn.latest_checkpoint(str(logdir)))


@pytest.mark.parametrize("model", ["lenet", "lstm", "charlm"])
def test_a_seed_model_killed_at_random_steps_resumes_to_the_uninterrupted_weights(model, tiny_mnist, tiny_text,
                                                                                    tmp_path):
    data = tiny_text if model == "charlm" else tiny_mnist
    straight = tmp_path / "straight"
    assert cli.main(_args(model, data, straight)) == 0

    logdir = tmp_path / "killed"
    rng = random.Random(model)
    kills, first = 0, True
    while kills < 2:
        proc = subprocess.Popen([sys.executable, "-m", "scratchnet", *_args(model, data, logdir,
                                                                              *([] if first else ["--resume"]))],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        first = False
        target = _logged(logdir) + rng.randint(EVERY[model] + 1, 3 * EVERY[model] - 1)  # past at least one checkpoint
        while proc.poll() is None and _logged(logdir) < target:
            time.sleep(0.005)
        if proc.poll() is not None:
            assert proc.returncode == 0, proc.stderr.read()
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        kills += 1
    assert kills == 2, "the run ended before it could be killed twice"
    assert cli.main(_args(model, data, logdir, "--resume")) == 0

    want, got = _weights(straight), _weights(logdir)
    assert sorted(got) == sorted(want)
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value, err_msg=f"{model}: {name}")
    assert _train_steps(logdir) == list(range(1, STEPS[model] + 1))
