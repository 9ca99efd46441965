# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 5. Variable sharing, checkpoints, an evaluator that watches, TensorBoard
#
# {download}`Download this notebook (.ipynb) </_build/notebooks/05_sharing_checkpoints.ipynb>` ·
# {download}`the jupytext script (.py) <05_sharing_checkpoints.py>`
#
# The second half of the TensorFlow original of lesson 1, post 002, is about managing a model's variables:
# `tf.get_variable` and `tf.variable_scope` to create and share them by name;
# `tf.train.Saver` to save them, restore them all or some, restore them under
# other names, and restore their moving averages in place of the weights; and
# its "best practice" layout, where `mnist_train.py` keeps writing
# checkpoints while `mnist_eval.py` evaluates the newest one every few
# seconds. This page does each of these with scratchnet's
# {class}`~scratchnet.ParameterStore`, {class}`~scratchnet.Checkpoint` and
# `scratchnet eval --watch`, and ends with the TensorBoard files.

# %%
import os
import subprocess
import sys
import tempfile
import time

import matplotlib.pyplot as plt
import numpy as np

import scratchnet as sn
from scratchnet.plot import read_scalars

sn.random.seed(0)
work = tempfile.mkdtemp(prefix="lesson5-")
print("backend:", sn.get_backend().name, "| working folder: a new temporary folder (`work`); paths below are relative to it")

# %% [markdown]
# ## `get_variable` and `variable_scope`: a parameter store
#
# `store.get(name, shape, dtype, initializer, reuse=...)` is
# `tf.get_variable`; `store.scope(name, reuse=...)` is `tf.variable_scope`, and
# a layer created inside a scope takes its weights from the store, under the
# scope's name. The rules are TensorFlow's: creating a name that exists is an
# error, unless `reuse=True`; reusing a name that does not exist is an error
# too; nested scopes join their names, and `reuse` is inherited.

# %%
store = sn.ParameterStore()
ones = sn.initializers.ones()
v = store.get("foo/v", (1,), "float32", ones)
print(v)
for attempt in ("create foo/v again", "reuse foo/missing"):
    try:
        if attempt.startswith("create"):
            store.get("foo/v", (1,), "float32", ones)
        else:
            store.get("foo/missing", (1,), "float32", ones, reuse=True)
    except ValueError as e:
        print(f"{attempt}: ValueError: {e}")
print("reuse=True returns the same object:", store.get("foo/v", (1,), "float32", ones, reuse=True) is v)

# %% [markdown]
# The original's `inference(input_tensor, reuse)` builds the network's variables
# the first time and reuses them afterwards. With a store, two models built
# under the same scope name share every weight:

# %%
def inference(units=500):
    return sn.Sequential([sn.layers.Dense(units, activation="relu", name="layer1"), sn.layers.Dense(10, name="layer2")],
                         name="mnist")


with store.scope("mnist"):
    model_a = inference()
    model_a.build((None, 784))
with store.scope("mnist", reuse=True):
    model_b = inference()
    model_b.build((None, 784))
print([p.name for p in model_a.parameters()])
print("shared:", all(a is b for a, b in zip(model_a.parameters(), model_b.parameters())))

# %% [markdown]
# ## A trained model to save
#
# The zoo's MLP (lesson 1), for 600 steps.

# %%
data = sn.zoo.load_data("mlp", test_data=os.environ.get("MNIST_TEST"), download=False, progress=False)
print("data:", data.source)
x_test, y_test = data.test.images, data.test.labels
recipe = sn.zoo.build("mlp", data=data)
sn.training.train(recipe.model, recipe.batches(), 600)
print(f"after {recipe.step} steps: test accuracy {recipe.evaluate(x_test, y_test)['accuracy']:.4f} "
      f"(moving averages, {recipe.count_test(y_test)})")

# %% [markdown]
# ## Saving: `tf.train.Saver().save`
#
# A checkpoint is one file, `model-<step>`, with the weights by name, the
# moving averages (named `<weight>/ExponentialMovingAverage`, as TensorFlow
# names them), the optimizer's state, the global step and the random
# generator's state; an index file, `checkpoint`, names the newest. Each file
# is written to a temporary name and renamed, and ends with its SHA-256.

# %%
ckpt_dir = os.path.join(work, "mlp")
ckpt = sn.Checkpoint(model=recipe.model, optimizer=recipe.optimizer, ema=recipe.ema)
path = ckpt.save(ckpt_dir, step=recipe.step)
print("saved", os.path.relpath(path, work), "| newest:", os.path.relpath(sn.latest_checkpoint(ckpt_dir), work))
print(sorted(os.listdir(ckpt_dir)))
for name, shape in sn.checkpoint.list_variables(path):
    print(f"  {name:40s} {shape}")

# %% [markdown]
# ## Restoring everything
#
# Into a freshly built model: its own random weights are replaced, and it
# predicts what the saved one predicted. A full restore also brings back the
# optimizer's state, the moving averages, the step and the random generator,
# so training resumes exactly where it stopped.

# %%
fresh = sn.zoo.build("mlp", data=data)
before = fresh.evaluate(x_test, y_test)["accuracy"]
step = fresh.checkpoint().restore(path)
after = fresh.evaluate(x_test, y_test)["accuracy"]
same = np.array_equal(fresh.model.predict(x_test[:500]), recipe.model.predict(x_test[:500]))
print(f"restored step {step}: accuracy {before:.4f} -> {after:.4f}; identical predictions: {same}")

# %% [markdown]
# ## Restoring some variables: `tf.train.Saver([v1])`
#
# The original's use case: reuse the trained layers of one network in another and
# retrain only what is new. Here a network with the same first layer and a new
# last layer takes `layer1`'s weights from the checkpoint (`include=`) and
# keeps its own random `layer2`.

# %%
other = sn.zoo.build("mlp", data=data)
layer2_before = sn.to_numpy(other.model.layers[1].kernel.value).copy()
other.checkpoint().restore(path, include=["layer1/kernel", "layer1/bias"])
w1_equal = np.array_equal(sn.to_numpy(other.model.layers[0].kernel.value), sn.to_numpy(recipe.model.layers[0].kernel.value))
w2_kept = np.array_equal(sn.to_numpy(other.model.layers[1].kernel.value), layer2_before)
print(f"layer1 from the checkpoint: {w1_equal}; layer2 untouched: {w2_kept}")

# %% [markdown]
# A restore checks every name and shape before it changes anything, and an
# error names what does not fit:

# %%
small = sn.Sequential([sn.layers.Dense(100, name="layer1"), sn.layers.Dense(10, name="layer2")], name="small")
small.build((None, 784))
try:
    sn.Checkpoint(small).restore(path, include=["layer1/kernel"])
except sn.checkpoint.CheckpointError as e:
    print("CheckpointError:", e)

# %% [markdown]
# ## Restoring under other names: `tf.train.Saver({"v1": other_v1})`
#
# A model whose layers are named differently (`hidden`, `logits`) loads the
# checkpoint through a mapping from the saved names to its parameters.

# %%
renamed = sn.Sequential([sn.layers.Dense(500, activation="relu", name="hidden"), sn.layers.Dense(10, name="logits")],
                        name="renamed")
renamed.build((None, 784))
hidden, logits = renamed.layers
mapping = {"layer1/kernel": hidden.kernel, "layer1/bias": hidden.bias,
           "layer2/kernel": logits.kernel, "layer2/bias": logits.bias}
sn.Checkpoint(renamed).restore(path, mapping=mapping)
print("renamed model predicts like the saved one:",
      np.allclose(renamed.predict(x_test[:500]), recipe.model.predict(x_test[:500])))

# %% [markdown]
# ## Restoring the moving averages: `ema.variables_to_restore()`
#
# The original's evaluator loads each weight's moving average *into the weight*,
# `tf.train.Saver(ema.variables_to_restore())`, so the evaluation graph needs
# no averaging at all. `ema.variables_to_restore(model)` is that mapping;
# `ema_into_weights=True` is the shortcut `scratchnet eval` uses.

# %%
plain_model = sn.zoo.build("mlp", data=data)
print(list(plain_model.ema.variables_to_restore(plain_model.model).items())[:2])
plain_model.checkpoint().restore(path, mapping=plain_model.ema.variables_to_restore(plain_model.model))
by_mapping = plain_model.evaluate(x_test, y_test, averaged=False)["accuracy"]

shortcut = sn.zoo.build("mlp", data=data)
shortcut.checkpoint().restore(path, ema_into_weights=True)
by_flag = shortcut.evaluate(x_test, y_test, averaged=False)["accuracy"]
on_the_fly = recipe.evaluate(x_test, y_test)["accuracy"]      # the trained model, averages swapped in
print(f"averages as weights: {by_mapping:.4f} (mapping), {by_flag:.4f} (ema_into_weights), "
      f"{on_the_fly:.4f} (ema.averaged on the trained model)")

# %% [markdown]
# ## The trainer and the evaluator: `mnist_train.py` and `mnist_eval.py`
#
# The original's best-practice layout runs two programs: the trainer saves a
# checkpoint every 1,000 steps; the evaluator wakes up every 10 seconds,
# loads the newest checkpoint (its moving averages, into the weights) and
# prints its accuracy. Here the trainer is `scratchnet train`, started in the
# background, and the evaluator is the loop `scratchnet eval --watch` runs,
# written out in Python: it polls `sn.latest_checkpoint` (which only ever names
# a completely written file) and evaluates each new one.

# %%
run_dir = os.path.join(work, "run")
# The commands run in `work`, so that the paths they print are relative to it; the test set is
# linked into it as `mnist-test`, so they print that name and not where this machine keeps it.
test_data = None
if os.environ.get("MNIST_TEST"):
    test_data = "mnist-test"
    os.symlink(os.path.abspath(os.environ["MNIST_TEST"]), os.path.join(work, test_data))
common = ["--no-download"] + (["--test-data", test_data] if test_data else [])
trainer = subprocess.Popen(
    [sys.executable, "-m", "scratchnet", "train", "mlp", "--steps", "600", "--checkpoint-every", "200",
     "--logdir", "run", "--no-progress", *common],
    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=work)

evaluator = sn.zoo.build("mlp", data=data)
seen, deadline = None, time.monotonic() + 300
while time.monotonic() < deadline:
    done = trainer.poll() is not None
    newest = sn.latest_checkpoint(run_dir) if os.path.isdir(run_dir) else None
    if newest is not None and newest != seen:
        step = evaluator.checkpoint().restore(newest, ema_into_weights=True)
        accuracy = evaluator.evaluate(x_test, y_test, averaged=False)["accuracy"]
        print(f"After {step} training step(s), test accuracy = {accuracy:.4f}   ({os.path.basename(newest)})")
        seen = newest
    elif done:
        break
    time.sleep(0.2)
print("trainer exit code:", trainer.wait())
print("trainer printed:\n  " + "\n  ".join(trainer.stdout.read().strip().splitlines()))

# %% [markdown]
# The evaluator may see fewer checkpoints than were written (a fast trainer
# saves two between two polls); it always sees the newest, never a half-written
# one. The same from the command line, once training is done (`--watch S`
# keeps polling every S seconds; `--max-evals` and `--timeout` stop it):

# %%
command = ["scratchnet", "eval", "--logdir", "run", "--watch", "1", "--max-evals", "1", *common]
print("$", " ".join(command))
result = subprocess.run([sys.executable, "-m", "scratchnet", *command[1:]], capture_output=True, text=True, cwd=work)
print(result.stdout.strip() or result.stderr.strip())

# %% [markdown]
# ## TensorBoard
#
# The training folder holds TensorBoard event files, `train/` (every 10
# steps) and `test/` (at each checkpoint), beside `metrics.csv` and
# `metrics.jsonl`. `tensorboard --logdir <folder>` shows them;
# `scratchnet plot --logdir <folder>` draws them into a PNG;
# `sn.plot.read_scalars` reads them back:

# %%
print(sorted(os.listdir(run_dir)))
runs = read_scalars(run_dir)
print({run: sorted(tags) for run, tags in runs.items()})
fig, axes = plt.subplots(1, 3, figsize=(14, 3.4))
for ax, tag in zip(axes, ("loss", "accuracy", "learning_rate")):
    for run, style in (("train", "-"), ("test", "o-")):
        if tag in runs.get(run, {}):
            steps, values = zip(*runs[run][tag])
            ax.plot(steps, values, style, label=run, lw=1)
    ax.set(title=tag, xlabel="step")
    ax.grid(alpha=0.3)
    ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Exercises
#
# 1. Save a checkpoint, change one weight by hand, restore it: which call tells you the weights are back?
# 2. Build a third model under `store.scope("mnist", reuse=True)` with 300 hidden units instead of 500:
#    what does the store say, and why must it refuse?
# 3. Evaluate the saved model on its raw weights and on its moving averages: which is better after
#    600 steps, and after 60?
