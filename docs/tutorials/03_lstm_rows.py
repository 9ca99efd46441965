# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 3. An LSTM that reads an image row by row
#
# {download}`Download this notebook (.ipynb) </_build/notebooks/03_lstm_rows.ipynb>` ·
# {download}`the jupytext script (.py) <03_lstm_rows.py>`
#
# The TensorFlow originals, posts 001 and 000, classify MNIST with a recurrent network: each
# 28×28 image is read as a sequence of 28 rows, one row (28 pixels) per time
# step. Post 001's model is three `BasicLSTMCell`s of 256 units, each wrapped
# in `DropoutWrapper(output_keep_prob=0.5)`, the last step's output fed to a
# dense layer of 10, Adam with a rate of 1e-3, batches of 100, 2,000 steps.
# Post 000's point is how to run it: a **training model** and a **testing
# model** built separately (the testing one without dropout and without a
# train op) that **share their weights** through
# `tf.variable_scope(..., reuse=True)`, and TensorBoard summaries of both.
#
# **For the budget of this page the LSTMs have 64 units, not 256, and train
# for 400 steps, not 2,000** (the original's sizes are the zoo's defaults:
# `sn.zoo.build("lstm", data=data)`). The op's backward pass, backpropagation
# through time, is derived on the {doc}`LSTM page <../derivations/lstm>`.

# %%
import os
import tempfile

import matplotlib.pyplot as plt
import numpy as np

import scratchnet as sn
from scratchnet.plot import read_scalars

sn.random.seed(0)
print("backend:", sn.get_backend().name)
data = sn.zoo.load_data("lstm", test_data=os.environ.get("MNIST_TEST"), download=False, progress=False)
print("data:", data.source)

# %% [markdown]
# ## An image as a sequence
#
# The model's first layer reshapes each flat row of 784 pixels to (28, 28):
# 28 time steps of 28 features. The LSTM sees the top row first.

# %%
image = data.train.images[0].reshape(28, 28)
fig, axes = plt.subplots(1, 2, figsize=(8, 2.6), gridspec_kw={"width_ratios": [1, 3]})
axes[0].imshow(image, cmap="gray_r")
axes[0].set_title(f"label {data.train.labels[0]}")
axes[1].imshow(image[8:16], cmap="gray_r", aspect="auto")
axes[1].set(title="time steps 8 to 15: one row each", yticks=range(8), yticklabels=range(8, 16))
for ax in axes:
    ax.set_xticks([])
plt.show()

# %% [markdown]
# ## The training model, in a parameter store
#
# `sn.ParameterStore().scope(name, reuse=...)` follows
# `tf.variable_scope`/`tf.get_variable`: a model built inside
# `store.scope("rnn")` creates its weights in `store` under `rnn/...`, and a
# model built inside `store.scope("rnn", reuse=True)` receives the *same*
# `Parameter` objects (creating a name that exists without `reuse`, or reusing
# one that does not, is an error). The zoo's recipe builds the training model.

# %%
UNITS, STEPS = 64, 400
store = sn.ParameterStore()
with store.scope("rnn"):
    recipe = sn.zoo.build("lstm", data=data, units=UNITS)
train_model = recipe.model
train_model.summary()
print(f"{train_model.count_params():,} parameters, Adam {recipe.hparams['learning_rate']:g}")

# %% [markdown]
# ## The testing model: same weights, no dropout
#
# Built with the same layer names under `reuse=True`. It has no `Dropout`
# layers at all (post 000's testing model has no `DropoutWrapper`); it is
# compiled only for its loss and metric, never trained.

# %%
def rnn(units, dropout):
    stack = [sn.layers.Reshape((28, 28))]
    for i in (1, 2, 3):
        stack.append(sn.layers.LSTM(units, return_sequences=i < 3, name=f"lstm{i}"))
        if dropout:
            stack.append(sn.layers.Dropout(dropout))
    stack.append(sn.layers.Dense(10, name="output"))
    return sn.Sequential(stack, name="lstm")


with store.scope("rnn", reuse=True):
    test_model = rnn(UNITS, dropout=0.0)
    test_model.build((None, 784))
test_model.compile("adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])

shared = all(a is b for a, b in zip(train_model.parameters(), test_model.parameters()))
print("the two models hold the same Parameter objects:", shared)
print([p.name for p in test_model.parameters()])

# %% [markdown]
# ## Training, with both models in TensorBoard
#
# The training model logs to `logdir/train` every 10 steps; every 100 steps
# the testing model is evaluated on 1,000 test digits and logs to
# `logdir/test` (the `TensorBoard` callback writes an evaluation's scalars at
# the training model's global step). Because the weights are shared, the
# testing model always sees the latest weights, with no copying.

# %%
logdir = tempfile.mkdtemp(prefix="lstm-")
board = sn.callbacks.TensorBoard(logdir, update_freq=10, epoch_logs=False)
x_test, y_test = data.test.images, data.test.labels


def test_batches(x, y, size=250):
    return ((x[i:i + size], y[i:i + size]) for i in range(0, len(x), size))


def evaluate_test_model(n=1000, callbacks=(board,)):
    return sn.training.evaluate(test_model, test_batches(x_test[:n], y_test[:n]), callbacks=callbacks)


sn.training.train(train_model, recipe.batches(), STEPS, [board],
                  validate=evaluate_test_model, validate_every=100, batch_logs="last")
final = sn.training.evaluate(test_model, test_batches(x_test, y_test), callbacks=[board])
board.close()
print(f"test accuracy after {train_model.step} steps (the testing model, {len(y_test):,} test examples): "
      f"{final['accuracy']:.4f}  (loss {final['loss']:.4f})")
print("test data:", data.source)

# %%
runs = read_scalars(logdir)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
for ax, tag in zip(axes, ("loss", "accuracy")):
    for run, style in (("train", "-"), ("test", "o-")):
        steps, values = zip(*runs[run][tag])
        ax.plot(steps, values, style, label=f"{run} model", lw=1)
    ax.set(title=tag, xlabel="step")
    ax.grid(alpha=0.3)
    ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# The training curve is noisier and, with dropout on, lower than the testing
# model's: each training batch is scored with half of every LSTM's outputs
# dropped. The zoo does the same with one model object (dropout acts only
# with `training=True`), which is `recipe.evaluate`:

# %%
same = recipe.evaluate(x_test[:1000], y_test[:1000])["accuracy"]
other = evaluate_test_model(callbacks=())["accuracy"]
print(f"on 1,000 test digits: recipe.evaluate {same:.4f}, the testing model {other:.4f}")
assert np.isclose(same, other)

# %% [markdown]
# ## Post 000's bug: weights that are not shared
#
# The original's author first built his weights with `tf.Variable`, which ignores
# `reuse`: each model got weights of its own, the training accuracy rose and
# the testing accuracy stayed where it started, whatever he tuned.
# TensorBoard's graph showed two sets of variables. The same mistake here is
# a testing model built in a store of its own: it is never trained.
# (`sn.zoo.shared_weights.write_lesson(logdir)` writes both graphs, shared and
# unshared, for TensorBoard's GRAPHS tab.)

# %%
with sn.ParameterStore().scope("rnn"):
    lonely = rnn(UNITS, dropout=0.0)
    lonely.build((None, 784))
lonely.compile("adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
print("shares the training model's weights:",
      any(a is b for a, b in zip(train_model.parameters(), lonely.parameters())))
untrained = sn.training.evaluate(lonely, test_batches(x_test[:1000], y_test[:1000]))
print(f"on 1,000 test digits: the unshared testing model {untrained['accuracy']:.4f}, "
      f"the shared one {other:.4f}")

# %% [markdown]
# ## Exercises
#
# 1. Write one LSTM step's backward pass (the {doc}`LSTM exercise <../exercises/lstm_step>`), then train
#    the row-by-row classifier on it with `sn.exercises.use("lstm_step", backward=lstm_step_backward)`:
#    your step runs 28 times per layer and batch, forward and backward.
# 2. Read the images column by column instead (transpose each 28×28 image before training): does the
#    accuracy after the same steps change?
# 3. Write a layer: the {doc}`RMSNormalization exercise <../exercises/rms_norm>`, graded with
#    `check_layer`, and put it between two LSTM layers.
