"""What a checkpoint folder promises against a careless or hostile user (issue 22, causes 5, 6, 7 and 10).

- ``fit`` with ``ModelCheckpoint(dir)`` honours the folder's ownership as the CLI does: another run's
  checkpoints are refused before the first step, unless ``overwrite=True``.
- Rotation only ever deletes files the saver wrote, whatever the index says; a damaged index is a
  ``CheckpointError`` for readers and is replaced (never followed) by the saver.
- A checkpoint of NaN or Inf values is refused, so the last finite checkpoint is never rotated away.
- A restore casts every array (weights, optimizer slots, moving averages) to the model's dtype.
- ``remove_stale_temporaries`` removes what a killed save left, and nothing else.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import scratchnet as sn
from scratchnet.archive import read_archive
from scratchnet.checkpoint import CheckpointError, NonFiniteError, remove_stale_temporaries
from scratchnet.data import write_idx
from scratchnet.folder import FolderError, TrainingFolder

L = sn.layers
X = np.random.default_rng(0).standard_normal((24, 5)).astype(np.float32)
Y = np.arange(24) % 3


@pytest.fixture(autouse=True)
def reference_backend():
    """These tests are about files, not kernels: the reference backend, with nothing to compile."""
    with sn.use_backend("numpy"):
        yield


def make_model(seed=0, units=4, dtype=None):
    sn.random.seed(seed)
    model = sn.Sequential([L.Dense(units, activation="relu", name="fc1"), L.Dense(3, name="fc2")], dtype=dtype)
    model.build((None, 5))
    model.compile(sn.optimizers.Adam(0.01), sn.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.ema = sn.ExponentialMovingAverage(0.9)
    return model


def fit(model, directory, callbacks=(), **options):
    """Six steps (batches of 4), a checkpoint after each."""
    options.setdefault("every_n_steps", 1)
    model.fit(X, Y, batch_size=4, epochs=1, verbose=0, shuffle=False,
              callbacks=[*callbacks, sn.callbacks.ModelCheckpoint(str(directory), **options)])


def snapshot(folder):
    """``{relative path: bytes}`` of every file under ``folder`` (links as their target's name)."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            path = os.path.join(root, name)
            key = os.path.relpath(path, folder)
            if os.path.islink(path):
                out[key] = ("link", os.readlink(path))
            else:
                with open(path, "rb") as f:
                    out[key] = f.read()
    return out


def index_of(directory):
    with open(os.path.join(directory, "checkpoint"), encoding="utf-8") as f:
        return json.load(f)


def write_index(directory, index):
    with open(os.path.join(directory, "checkpoint"), "w", encoding="utf-8") as f:
        json.dump(index, f)


def write(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def checkpoint_names(directory):
    return sorted((n for n in os.listdir(directory) if n.startswith("model-")), key=lambda n: int(n[6:]))


# -- 6. fit's ModelCheckpoint owns its folder as the CLI does -----------------------------------------


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory):
    d = tmp_path_factory.mktemp("mnist")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 120), ("t10k", 20)):
        write_idx(d / f"{prefix}-images-idx3-ubyte.gz", (rng.random((n, 28, 28)) * 255).astype(np.uint8))
        write_idx(d / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n).astype(np.uint8))
    return str(d)


def test_fit_refuses_a_folder_holding_a_cli_run_and_changes_nothing(tiny_mnist, tmp_path):
    from scratchnet import cli

    logdir = tmp_path / "run"
    assert cli.main(["train", "mlp", "--data", tiny_mnist, "--validation-size", "20", "--steps", "10",
                     "--batch-size", "10", "--checkpoint-every", "5", "--logdir", str(logdir), "--backend", "numpy",
                     "--no-download", "--no-progress"]) == 0
    before = snapshot(logdir)
    assert "model-10" in before and "run.json" in before
    model = make_model()
    with pytest.raises(FolderError, match=f"{logdir}.*run.json, model 'mlp'.*overwrite=True"):
        fit(model, logdir)
    assert model.step == 0  # refused before the first step
    assert snapshot(logdir) == before
    assert not TrainingFolder(str(logdir)).held  # and the folder is given back


def test_fit_refuses_a_run_json_even_of_the_same_model(tmp_path):
    model = make_model()
    sn.Checkpoint(model).save(str(tmp_path), 0)
    write(tmp_path / "run.json", '{"model": "mlp", "command": "train"}')
    before = snapshot(tmp_path)
    with pytest.raises(FolderError, match="holds a run of the scratchnet command line"):
        fit(model, tmp_path)
    assert snapshot(tmp_path) == before


def test_fit_refuses_checkpoints_with_another_prefix(tmp_path):
    sn.Checkpoint(make_model()).save(str(tmp_path), 3, prefix="best")
    before = snapshot(tmp_path)
    with pytest.raises(FolderError, match=r"another run \(best-3; this one's are named model-<step>\)"):
        fit(make_model(), tmp_path)
    assert snapshot(tmp_path) == before


def test_fit_refuses_checkpoints_of_another_model(tmp_path):
    sn.Checkpoint(make_model(units=6)).save(str(tmp_path), 0)
    before = snapshot(tmp_path)
    with pytest.raises(FolderError, match=r"another model \(model-0: shapes differ: fc1/bias \(6,\) in it, "
                                          r"\(4,\) in the model"):
        fit(make_model(units=4), tmp_path)
    assert snapshot(tmp_path) == before


def test_fit_refuses_to_mix_a_fresh_model_into_an_earlier_run_of_the_same_model(tmp_path):
    fit(make_model(), tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(FolderError, match=r"up to step 6 \(model-6\) and this model is at step 0.*restore it first"):
        fit(make_model(), tmp_path)
    assert snapshot(tmp_path) == before


def test_a_model_that_continues_the_folder_needs_no_option(tmp_path):
    first = make_model()
    fit(first, tmp_path, max_to_keep=2)
    fit(first, tmp_path, max_to_keep=2)  # the same model, trained on
    resumed = make_model(seed=1)
    sn.Checkpoint(resumed).restore(sn.latest_checkpoint(str(tmp_path)))
    fit(resumed, tmp_path, max_to_keep=2)
    assert checkpoint_names(tmp_path) == ["model-17", "model-18"]
    assert not os.path.exists(tmp_path / "train.pid")


def test_overwrite_lets_a_run_replace_the_old_checkpoints_and_touches_nothing_else(tmp_path):
    old = make_model(units=6)
    for step in (10, 20, 30):
        sn.Checkpoint(old).save(str(tmp_path), step)
    sn.Checkpoint(old).save(str(tmp_path), 7, prefix="best")
    write(tmp_path / "run.json", '{"model": "mlp"}')
    write(tmp_path / "notes.txt", "mine")
    others = {k: v for k, v in snapshot(tmp_path).items() if not k.startswith(("model-", "checkpoint"))}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit(make_model(units=4), tmp_path, max_to_keep=3, overwrite=True)
    assert checkpoint_names(tmp_path) == ["model-4", "model-5", "model-6"]  # the old run's rotated out first
    assert index_of(tmp_path) == {"latest": "model-6", "all": ["best-7", "model-4", "model-5", "model-6"]}
    assert {k: v for k, v in snapshot(tmp_path).items() if k in others} == others


def test_a_folder_the_caller_holds_is_the_callers_to_check(tmp_path):
    """The CLI locks the folder and checks it against --resume/--overwrite before training; the callback trusts it."""
    write(tmp_path / "run.json", '{"model": "mlp"}')
    folder = TrainingFolder(str(tmp_path))
    folder.lock()
    try:
        fit(make_model(), tmp_path)
        assert folder.held  # still the caller's
    finally:
        folder.release()
    assert sn.latest_checkpoint(str(tmp_path)).endswith("model-6")


# -- 7. rotation deletes only what the saver wrote ------------------------------------------------


@pytest.mark.parametrize("foreign", [
    ["notes.txt", "run.json", "metrics.jsonl"],  # the edit: all plain names
    ["notes.txt", "model-01", "model-1.bak", "model-7", "model-8", "best-2", "model-9"],
], ids=["plain-names", "everything-else"])
def test_an_edited_index_never_makes_a_save_delete_anything_it_did_not_write(tmp_path, foreign):
    d = tmp_path / "run"
    os.makedirs(d)
    ckpt = sn.Checkpoint(make_model())
    ckpt.save(str(d), 1)
    outside = ckpt.save(str(tmp_path), 1, prefix="outside")  # a real checkpoint, outside the folder
    for name in ("notes.txt", "run.json", "metrics.jsonl", "model-7"):  # model-7: named as ours, not a checkpoint
        write(d / name, f"the user's {name}")
    ckpt.save(str(tmp_path), 2, prefix="best")
    os.replace(tmp_path / "best-2", d / "best-2")  # another prefix's checkpoint
    os.link(d / "model-1", d / "model-01")  # a checkpoint, but not a name this saver writes
    os.link(d / "model-1", d / "model-1.bak")
    os.symlink(outside, d / "model-8")  # named as ours, a link to a checkpoint elsewhere
    os.makedirs(d / "model-9")  # named as ours, a folder
    write_index(d, {"latest": "model-1", "all": foreign + ["model-1"]})
    before = {k: v for k, v in snapshot(tmp_path).items() if k not in ("run/model-1", "run/checkpoint")}
    with pytest.warns(UserWarning, match="not checkpoints a saver wrote; they are left out of the index and never"):
        ckpt.save(str(d), 2, max_to_keep=1)
    ckpt.save(str(d), 3, max_to_keep=1)
    assert {k: v for k, v in snapshot(tmp_path).items() if k in before} == before
    assert not os.path.exists(d / "model-1") and not os.path.exists(d / "model-2")  # its own are rotated
    kept = ["best-2"] if "best-2" in foreign else []  # another saver's checkpoint: its entry is left as it is
    assert index_of(d) == {"latest": "model-3", "all": kept + ["model-3"]}


DAMAGED_INDEXES = {
    "empty": b"", "garbage": b"garbage", "not utf-8": b"\xff\xfe{\x00", "a list": b"[]", "null": b"null",
    "all a string": b'{"all": "model-1"}', "all numbers": b'{"latest": "model-1", "all": [1, null, ["model-1"]]}',
    "outside": b'{"latest": "../../etc/passwd", "all": ["../../etc/passwd"]}', "latest a number": b'{"latest": 5}',
    "absolute": b'{"latest": "model-1", "all": ["model-1", "/etc/passwd"]}', "hidden": b'{"all": [".model-1"]}',
    "nul": b'{"latest": "model-1\\u0000", "all": []}', "a subfolder": b'{"all": ["sub/model-1", "model-1"]}',
}


@pytest.mark.parametrize("content", DAMAGED_INDEXES.values(), ids=DAMAGED_INDEXES.keys())
def test_a_damaged_index_is_a_checkpoint_error_and_a_save_writes_nothing(tmp_path, content):
    ckpt = sn.Checkpoint(make_model())
    ckpt.save(str(tmp_path), 1)
    with open(tmp_path / "checkpoint", "wb") as f:
        f.write(content)
    before = snapshot(tmp_path)
    with pytest.raises(CheckpointError, match="checkpoint index"):
        sn.latest_checkpoint(str(tmp_path))
    with pytest.raises(CheckpointError, match="checkpoint index"):
        ckpt.save(str(tmp_path), 2, max_to_keep=1)
    assert snapshot(tmp_path) == before
    assert sn.checkpoint.list_checkpoints(str(tmp_path)) == [os.path.join(str(tmp_path), "model-1")]
    with pytest.raises(CheckpointError, match="ModelCheckpoint: checkpoint index .* nothing was trained"):
        fit(make_model(), tmp_path, overwrite=True)
    assert snapshot(tmp_path) == before


def test_an_index_that_is_a_folder_is_a_checkpoint_error(tmp_path):
    os.makedirs(tmp_path / "checkpoint")
    with pytest.raises(CheckpointError, match="checkpoint index .* is unreadable"):
        sn.latest_checkpoint(str(tmp_path))
    with pytest.raises(CheckpointError, match="checkpoint index .* is unreadable"):
        sn.Checkpoint(make_model()).save(str(tmp_path), 1)
    assert os.listdir(tmp_path) == ["checkpoint"]


# -- 5. the newest finite checkpoint is never rotated away ----------------------------------------


@pytest.mark.parametrize("where, name", [
    ("weight", "fc1/kernel"), ("slot", "optimizer/fc2/bias:m"), ("average", "fc1/bias/ExponentialMovingAverage"),
])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_checkpoint_of_nonfinite_values_is_refused_naming_the_first(tmp_path, where, name, bad):
    model = make_model()
    model.train_on_batch(X[:4], Y[:4])
    ckpt = sn.Checkpoint(model)
    ckpt.save(str(tmp_path), 0)
    if where == "weight":
        list(model.parameters())[0].value[0, 0] = bad
    elif where == "slot":
        model.optimizer._slots["fc2/bias"]["m"][1] = bad
    else:
        model.ema._shadows["fc1/bias"][2] = bad
    before = snapshot(tmp_path)
    with pytest.raises(NonFiniteError, match=f"{name} holds NaN or Inf at step 1; the checkpoint was not written"):
        ckpt.save(str(tmp_path), 1)
    assert snapshot(tmp_path) == before


def _poison(model):
    list(model.parameters())[0].value[...] = np.nan


def test_allow_nonfinite_saves_but_rotation_keeps_the_newest_finite_checkpoint(tmp_path):
    model = make_model()
    ckpt = sn.Checkpoint(model)
    d = str(tmp_path)
    ckpt.save(d, 1, max_to_keep=2)
    ckpt.save(d, 2, max_to_keep=2)
    _poison(model)
    for step in (3, 4, 5):
        ckpt.save(d, step, max_to_keep=2, allow_nonfinite=True)
    assert index_of(d)["all"] == ["model-2", "model-4", "model-5"] == checkpoint_names(d)
    sn.Checkpoint(make_model(seed=3)).restore(os.path.join(d, "model-2"))  # intact
    list(model.parameters())[0].value[...] = 0.5
    ckpt.save(d, 6, max_to_keep=2)  # finite again: the rotation is the usual one
    assert index_of(d)["all"] == ["model-5", "model-6"] == checkpoint_names(d)


def test_a_nan_during_fit_stops_at_the_save_with_the_last_finite_checkpoint_newest(tmp_path):
    class PoisonAtStep3(sn.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if self.model.step == 3:
                _poison(self.model)

    model = make_model()
    with pytest.raises(NonFiniteError, match="fc1/kernel holds NaN or Inf at step 3"):
        fit(model, tmp_path, callbacks=[PoisonAtStep3()], max_to_keep=2)
    assert sn.latest_checkpoint(str(tmp_path)) == os.path.join(str(tmp_path), "model-2")
    assert checkpoint_names(tmp_path) == ["model-1", "model-2"]
    assert not TrainingFolder(str(tmp_path)).held


# -- 10. a restore casts everything to the model's dtype ------------------------------------------


def _dtypes(model):
    arrays = {p.name: p.value for p in model.parameters()}
    arrays.update({f"slot {k}": v for k, v in model.optimizer.state_dict().items() if k != "iterations"})
    arrays.update({f"average {k}": v for k, v in model.ema.state_dict().items()})
    return {k: np.dtype(v.dtype).name for k, v in arrays.items()}


def _everything(model):
    return {**{p.name: sn.to_numpy(p.value) for p in model.parameters()},
            **{f"slot {k}": np.asarray(v) for k, v in model.optimizer.state_dict().items()},
            **{f"average {k}": v for k, v in model.ema.state_dict().items()}}


@pytest.mark.parametrize("saved, restored", [("float32", "float64"), ("float64", "float32")])
def test_a_restore_casts_weights_slots_and_averages_to_the_models_dtype(tmp_path, saved, restored):
    source = make_model(dtype=saved)
    for i in range(3):
        source.train_on_batch(X[4 * i:4 * i + 4], Y[4 * i:4 * i + 4])
    path = sn.Checkpoint(source).save(str(tmp_path / "a"))

    model = make_model(seed=1, dtype=restored)
    sn.Checkpoint(model).restore(path)
    assert set(_dtypes(model).values()) == {restored}
    for name, value in _everything(source).items():
        np.testing.assert_array_equal(_everything(model)[name], value.astype(restored) if name != "slot iterations"
                                      else value, err_msg=name)
    for i in range(3):  # it trains on, in its own dtype
        model.train_on_batch(X[4 * i:4 * i + 4], Y[4 * i:4 * i + 4])
    assert set(_dtypes(model).values()) == {restored}

    again = sn.Checkpoint(model).save(str(tmp_path / "b"))
    _, arrays = read_archive(again)
    assert {a.dtype.name for a in arrays.values() if a.dtype.kind == "f"} == {restored}
    copy = make_model(seed=2, dtype=restored)
    sn.Checkpoint(copy).restore(again)
    for name, value in _everything(model).items():
        np.testing.assert_array_equal(_everything(copy)[name], value, err_msg=name)
        assert _everything(copy)[name].dtype == value.dtype, name


# -- stale temporaries ----------------------------------------------------------------------------


def test_remove_stale_temporaries_removes_only_what_a_killed_save_left(tmp_path):
    d = str(tmp_path)
    # A save killed between writing its temporary file and renaming it.
    script = textwrap.dedent(f"""
        import os
        import scratchnet as sn
        sn.random.seed(0)
        with sn.use_backend("numpy"):
            model = sn.Sequential([sn.layers.Dense(3)])
            model.build((None, 2))
            sn.Checkpoint(model).save({d!r}, 1)
            os.replace = lambda *args: os._exit(9)
            sn.Checkpoint(model).save({d!r}, 2)
    """)
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert killed.returncode == 9, killed.stderr
    left = [n for n in os.listdir(d) if n.endswith(".tmp")]
    assert len(left) == 1 and left[0].startswith(".model-2.")
    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()
    index_temporary = f".checkpoint.{dead.pid}-0123abcd.tmp"
    decoys = [".model-2.tmp", f".notes.txt.{dead.pid}-0123abcd.tmp", f".best-2.{dead.pid}-0123abcd.tmp",
              f"model-2.{dead.pid}-0123abcd.tmp", f".model-02.{dead.pid}-0123abcd.tmp",
              f".model-3.{dead.pid}-0123ABCD.tmp", f".model-3.{dead.pid}-0123abcd.tmp.keep",
              f".model-4.{os.getpid()}-0123abcd.tmp"]  # a live writer's: perhaps saving right now
    for name in decoys + [index_temporary]:
        write(os.path.join(d, name), "x")
    os.makedirs(os.path.join(d, f".model-5.{dead.pid}-0123abcd.tmp"))
    os.symlink(os.path.join(d, "model-1"), os.path.join(d, f".model-6.{dead.pid}-0123abcd.tmp"))
    before = snapshot(tmp_path)

    assert remove_stale_temporaries(d, "model") == sorted([index_temporary, left[0]])
    assert snapshot(tmp_path) == {k: v for k, v in before.items() if k not in (index_temporary, left[0])}
    assert os.path.isdir(os.path.join(d, f".model-5.{dead.pid}-0123abcd.tmp"))
    assert remove_stale_temporaries(d, "model") == []


# -- the LSTM state carried between batches (charlm) -----------------------------------------


def _charlm_with_a_carried_state(tmp_path):
    recipe = sn.zoo.build("charlm", vocab_size=20, batch_size=4)
    rng = np.random.default_rng(0)
    recipe.model.train_on_batch(rng.integers(0, 20, (4, 50)), rng.integers(0, 20, (4, 50)))
    return recipe, recipe.checkpoint().save(str(tmp_path / "ck"), step=1)


def test_a_checkpoint_carries_the_lstm_state_and_a_restore_brings_it_back(tmp_path):
    recipe, path = _charlm_with_a_carried_state(tmp_path)
    lstm = recipe.model.layers[1]
    saved = [sn.to_numpy(s).copy() for s in lstm.states]
    lstm.reset_states()
    recipe.checkpoint().restore(path)
    for got, want in zip(lstm.states, saved):
        np.testing.assert_array_equal(sn.to_numpy(got), want)
    assert sorted(read_archive(path)[0]["states"]) == ["charlm/lstm"]


@pytest.mark.parametrize("edit, message", [
    (lambda meta, arrays: arrays.__setitem__("state/charlm/lstm/0", np.zeros((3, 7), np.float32)),
     r"carried state of 'charlm/lstm': shapes"),
    (lambda meta, arrays: arrays.__setitem__("state/charlm/lstm/1", np.zeros((4, 128), np.int32)),
     r"header field 'states.charlm/lstm' names an array that is not floats"),
    (lambda meta, arrays: meta["states"].__setitem__("charlm/other", list(meta["states"]["charlm/lstm"])),
     r"the model has no stateful layer 'charlm/other'"),
    (lambda meta, arrays: meta.__setitem__("states", ["x"]), r"header field 'states' must be"),
    (lambda meta, arrays: meta["states"].__setitem__("charlm/lstm", ["nope", "nope"]),
     r"names 'nope', which is not an array of the file"),
], ids=["shape", "ints", "unknown-layer", "not-a-dict", "missing-array"])
def test_a_crafted_carried_state_is_refused_and_changes_nothing(tmp_path, edit, message):
    from scratchnet.archive import write_archive

    recipe, path = _charlm_with_a_carried_state(tmp_path)
    meta, arrays = read_archive(path)
    edit(meta, arrays)
    write_archive(str(tmp_path / "crafted"), meta, arrays)
    lstm = recipe.model.layers[1]
    before = [sn.to_numpy(s).copy() for s in lstm.states]
    with pytest.raises(CheckpointError, match=message):
        recipe.checkpoint().restore(str(tmp_path / "crafted"))
    for got, want in zip(lstm.states, before):
        np.testing.assert_array_equal(sn.to_numpy(got), want)


# -- a BatchNormalization's moving statistics (issue 26) -----------------------------------------------


def _bn_model_saved(tmp_path):
    sn.random.seed(0)
    model = sn.Sequential([L.Conv2D(3, 3, name="conv"), sn.layers.ResidualBlock(3, name="block"),
                           L.BatchNormalization(name="bn"), L.Flatten(), L.Dense(3, name="fc")])
    model.build((None, 6, 6, 2))
    model.compile(sn.optimizers.SGD(0.1), sn.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    model.train_on_batch(rng.standard_normal((4, 6, 6, 2)).astype(np.float32), np.arange(4) % 3)
    return model, sn.Checkpoint(model).save(str(tmp_path / "ck"), step=1)


BAD_STATISTICS = [
    ("bn/moving_variance", lambda v: np.where(np.arange(v.size) == 1, -0.5, v), r"bn/moving_variance: "
     r"BatchNormalization 'bn' moving_variance holds -0\.5 at channel 1 \(1 of 3 channels bad\): a variance must be "
     r"finite and >= 0"),
    ("bn/moving_variance", lambda v: np.full_like(v, np.nan), r"moving_variance holds nan at channel 0 \(3 of 3"),
    ("bn/moving_variance", lambda v: np.full_like(v, np.inf), r"moving_variance holds inf"),
    ("block/bn2/moving_variance", lambda v: -v, r"block/bn2/moving_variance: BatchNormalization 'bn2'"),
    ("bn/moving_mean", lambda v: np.where(np.arange(v.size) == 2, np.nan, v), r"bn/moving_mean: .* a mean must be "
     r"finite"),
]
BAD_IDS = ["negative", "nan", "inf", "negative-in-a-residual-block", "nan-mean"]


@pytest.mark.parametrize("name, edit, message", BAD_STATISTICS, ids=BAD_IDS)
def test_the_batch_norm_check_names_a_bad_moving_statistic(tmp_path, name, edit, message):
    """What the restore asks (scratchnet.checkpoint.state._check_weight_values) before it changes anything."""
    from scratchnet.checkpoint.state import _check_weight_values

    model, path = _bn_model_saved(tmp_path)
    meta, arrays = read_archive(path)
    plan = {p.name: p for p in model.parameters()}
    assert _check_weight_values(model, plan, arrays) == []
    arrays[name] = edit(arrays[name])
    problems = _check_weight_values(model, plan, arrays)
    assert len(problems) == 1 and problems[0].startswith(f"{name}: "), problems
    import re

    assert re.search(message, problems[0]), problems[0]


@pytest.mark.parametrize("name, edit, message", BAD_STATISTICS, ids=BAD_IDS)
def test_a_crafted_negative_or_nan_moving_variance_is_refused_and_changes_nothing(tmp_path, name, edit, message):
    from scratchnet.archive import write_archive

    model, path = _bn_model_saved(tmp_path)
    meta, arrays = read_archive(path)
    arrays[name] = edit(arrays[name])
    write_archive(str(tmp_path / "crafted"), meta, arrays)
    for p in model.parameters():  # the model moves on after the save: a refused restore must leave it here
        p.value = p.value + 1
    before = {p.name: sn.to_numpy(p.value).copy() for p in model.parameters()}
    with pytest.raises(CheckpointError, match=message):
        sn.Checkpoint(model).restore(str(tmp_path / "crafted"))
    for p in model.parameters():
        np.testing.assert_array_equal(sn.to_numpy(p.value), before[p.name])
    with pytest.raises(CheckpointError, match=message):  # a partial restore of weights is refused too
        sn.Checkpoint(model).restore(str(tmp_path / "crafted"), include=[name])
