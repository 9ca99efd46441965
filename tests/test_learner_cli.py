"""The command line as a teacher uses it: the folder's ``run.json`` names the model, ``sample`` samples.

A teacher trains into a folder, then evaluates, samples and plots it with
``--logdir`` alone. A mistaken value is one line on stderr naming the
argument, exit code 2, and no traceback.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import scratchnet as sn
from scratchnet import cli, plot
from scratchnet.cli.commands import SAMPLE_TEMPERATURE
from scratchnet.data import write_idx


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory):
    d = tmp_path_factory.mktemp("mnist")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 120), ("t10k", 20)):
        write_idx(d / f"{prefix}-images-idx3-ubyte.gz", (rng.random((n, 28, 28)) * 255).astype(np.uint8))
        write_idx(d / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n).astype(np.uint8))
    return str(d)


@pytest.fixture(scope="module")
def mlp_run(tiny_mnist, tmp_path_factory):
    """An mlp trained for 4 steps on ``--data``, which ``run.json`` records (and ``eval`` then reads)."""
    logdir = tmp_path_factory.mktemp("mlp") / "run"
    assert cli.main(["train", "mlp", "--data", tiny_mnist, "--validation-size", "20", "--steps", "4",
                     "--batch-size", "20", "--log-every", "2", "--logdir", str(logdir), "--backend", "numpy",
                     "--no-download", "--no-progress"]) == 0
    return logdir


@pytest.fixture(scope="module")
def charlm_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("charlm")
    rng = np.random.default_rng(0)
    (d / "text.txt").write_text(" ".join(rng.choice("the cat sat on a mat and the dog ran far away".split(), 600)))
    logdir = d / "run"
    assert cli.main(["train", "charlm", "--data", str(d / "text.txt"), "--steps", "3", "--batch-size", "4",
                     "--logdir", str(logdir), "--backend", "numpy", "--no-progress"]) == 0
    return logdir


def _ok(capsys, argv):
    """Run ``argv``; it must succeed. Returns what it printed."""
    capsys.readouterr()
    rc = cli.main(argv)
    captured = capsys.readouterr()
    assert rc == 0, captured
    return captured.out


def _refused(capsys, argv, argument):
    """Run ``argv``; it must exit 2 with one stderr line that names ``argument`` and no traceback."""
    capsys.readouterr()
    rc = cli.main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert rc == 2, captured
    assert len(lines) == 1, captured.err
    assert argument in lines[0] and "Traceback" not in captured.err
    return lines[0]


# -- eval: the model from run.json ---------------------------------------------------------------------------
def test_eval_reads_the_model_and_the_data_from_run_json(mlp_run, capsys):
    out = _ok(capsys, ["eval", "--logdir", str(mlp_run), "--backend", "numpy"])
    assert "After 4 training step(s), validation accuracy = " in out


def test_eval_with_the_model_named_still_works(mlp_run, tiny_mnist, capsys):
    out = _ok(capsys, ["eval", "mlp", "--logdir", str(mlp_run), "--data", tiny_mnist, "--backend", "numpy"])
    assert "After 4 training step(s)" in out


def test_eval_naming_another_model_than_run_json_is_one_line(mlp_run, capsys):
    line = _refused(capsys, ["eval", "lenet", "--logdir", str(mlp_run), "--backend", "numpy"], "argument --logdir")
    assert "holds a 'mlp' run, not 'lenet'" in line


def test_eval_of_a_folder_without_run_json_is_one_line(tmp_path, capsys):
    line = _refused(capsys, ["eval", "--logdir", str(tmp_path / "nothing")], "argument --logdir")
    assert "is not a training folder (no run.json); train into it first" in line


def test_eval_of_a_run_json_naming_no_zoo_model_is_one_line(tmp_path, capsys):
    (tmp_path / "run.json").write_text(json.dumps({"model": "gpt"}))
    line = _refused(capsys, ["eval", "--logdir", str(tmp_path)], "argument --logdir")
    assert "records the model 'gpt', which is not a zoo model (mlp, lenet, lstm, charlm, transformer_lm, resnet)" in line


# -- sample: the model from run.json, at a stated temperature ------------------------------------------------
def test_sample_samples_at_temperature_0_8_by_default(charlm_run, capsys):
    assert SAMPLE_TEMPERATURE == 0.8
    argv = ["sample", "--logdir", str(charlm_run), "--prime", "the ", "--length", "60", "--backend", "numpy"]
    default = _ok(capsys, argv + ["--seed", "3"]).rstrip("\n")
    assert default == _ok(capsys, argv + ["--seed", "3", "--temperature", "0.8"]).rstrip("\n")
    assert default.startswith("the ") and len(default) == 64
    assert len(set(default[4:])) > 3                       # drawn: not one character repeated
    assert default != _ok(capsys, argv + ["--greedy"]).rstrip("\n")


def test_sample_help_states_the_default_temperature_and_greedy(capsys):
    assert cli.main(["sample", "--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "(default 0.8)" in help_text and "--greedy" in help_text


def test_sample_greedy_takes_the_most_likely_character_each_time(charlm_run, capsys):
    argv = ["sample", "--logdir", str(charlm_run), "--prime", "the ", "--length", "40", "--backend", "numpy",
            "--greedy"]
    greedy = _ok(capsys, argv).rstrip("\n")
    assert greedy == _ok(capsys, argv + ["--seed", "7"]).rstrip("\n")   # no randomness at all
    run = json.loads((charlm_run / "run.json").read_text())
    with sn.use_backend("numpy"):
        recipe = sn.zoo.recipe_class("charlm").from_run(run)
        recipe.checkpoint().restore(sn.latest_checkpoint(str(charlm_run)))
        assert greedy == recipe.generate(recipe.corpus_of_run(run), "the ", 40, temperature=None)


def test_sample_of_a_classifier_run_is_one_line(mlp_run, capsys):
    line = _refused(capsys, ["sample", "--logdir", str(mlp_run)], "argument --logdir")
    assert "holds a 'mlp' run, which cannot generate text; sample needs a language model (charlm, transformer_lm)" in line


# -- every bad value: one line, exit 2 ---------------------------------------------------------------------
@pytest.mark.parametrize("argv, argument, words", [
    (["sample", "--temperature", "0"], "argument --temperature", "for the most likely token each time, give --greedy"),
    (["sample", "--temperature", "-1"], "argument --temperature", "must be a positive finite float"),
    (["sample", "--temperature", "inf"], "argument --temperature", "must be a positive finite float"),
    (["sample", "--temperature", "hot"], "argument --temperature", "must be a positive finite float, got 'hot'"),
    (["sample", "--greedy", "--temperature", "1.0"], "argument --temperature", "not allowed with argument --greedy"),
    (["sample", "--length", "0"], "argument --length", "must be a positive int"),
    (["eval", "--watch", "0"], "argument --watch", "must be a positive finite float"),
    (["eval", "cnn"], "argument model", "invalid choice: 'cnn'"),
])
def test_a_bad_value_is_one_line_and_exit_2(tmp_path, capsys, argv, argument, words):
    line = _refused(capsys, [*argv, "--logdir", str(tmp_path)], argument)
    assert words in line


@pytest.mark.parametrize("command", ["eval", "sample", "plot"])
def test_a_logdir_that_is_no_training_folder_is_one_line(command, capsys):
    _refused(capsys, [command, "--logdir", "/proc/forbidden/run"], "argument --logdir")


def test_sample_with_a_prime_outside_the_vocabulary_is_one_line(charlm_run, capsys):
    _refused(capsys, ["sample", "--logdir", str(charlm_run), "--prime", "\u2603", "--backend", "numpy"],
             "argument --prime")


# -- plot: the curves, and why test can beat train -----------------------------------------------------------
def test_plot_says_under_the_curves_why_test_can_beat_train(mlp_run, capsys, monkeypatch):
    texts = []
    import matplotlib.figure

    save = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        lambda fig, *a, **k: (texts.append(fig.texts[-1].get_text()), save(fig, *a, **k))[1])
    out = _ok(capsys, ["plot", "--logdir", str(mlp_run)])
    assert f"wrote {mlp_run / 'curves.png'}" in out
    (note,) = [" ".join(text.split()) for text in texts]         # the last text of the figure, under the curves
    assert note == " ".join(plot.TEST_ABOVE_TRAIN.split())
    assert "dropout on" in note and "moving averages of the weights" in note
