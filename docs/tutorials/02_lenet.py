# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 2. LeNet-5
#
# {download}`Download this notebook (.ipynb) </_build/notebooks/02_lenet.ipynb>` ·
# {download}`the jupytext script (.py) <02_lenet.py>`
#
# The TensorFlow original of this lesson, post 003, follows chapter 6.4 of a TensorFlow 1 book: a LeNet-5 style
# network for MNIST, and the two pitfalls its author fell into. The network,
# as the book builds it (not LeCun's original 6- and 16-filter version on
# 32×32 inputs):
#
# | layer | op | output |
# |---|---|---|
# | layer1-conv1 | conv 5×5, 32 filters, stride 1, SAME, ReLU | 28×28×32 |
# | layer2-pool1 | max-pool 2×2, stride 2, SAME | 14×14×32 |
# | layer3-conv2 | conv 5×5, 64 filters, SAME, ReLU | 14×14×64 |
# | layer4-pool2 | max-pool 2×2, stride 2, SAME | 7×7×64 |
# | layer5-fc1 | dense 3136 → 512, ReLU, dropout 0.5 in training | 512 |
# | layer6-fc2 | dense 512 → 10 (the logits) | 10 |
#
# The pitfalls: the book's base learning rate of 0.8 makes the loss explode
# (the author lowered it to 0.01), and with L2 on the first fully connected
# layer the loss stayed high (the author kept L2 on the last layer only).
# scratchnet's zoo model `lenet` has both fixes. The backward passes of its
# ops are derived on the {doc}`conv2d <../derivations/conv2d>` and
# {doc}`max-pool <../derivations/max_pool>` pages.

# %%
import os
import tempfile

import matplotlib.pyplot as plt
import numpy as np

import scratchnet as sn
from scratchnet.plot import read_scalars

sn.random.seed(0)
print("backend:", sn.get_backend().name)
data = sn.zoo.load_data("lenet", test_data=os.environ.get("MNIST_TEST"), download=False, progress=False)
print("data:", data.source)

recipe = sn.zoo.build("lenet", data=data)
recipe.model.summary()
print(f"{recipe.model.count_params():,} parameters; SGD, {recipe.optimizer.learning_rate}")

# %% [markdown]
# ## Pitfall 1: a learning rate of 0.8
#
# A dozen steps with the book's rate, on a copy of the model
# (`learning_rate=0.8` overrides the recipe's hyperparameter):

# %%
sn.random.seed(0)
hot = sn.zoo.build("lenet", data=data, learning_rate=0.8)
batches = hot.batches()
for step in range(1, 13):
    _, x, y = next(batches)
    logs = hot.train_step(x, y)
    if step % 3 == 0:
        print(f"step {step:2d}: loss {logs['loss']:.4g}, accuracy {logs['accuracy']:.2f}")

# %% [markdown]
# The steps overshoot: the loss grows by orders of magnitude (or becomes
# `nan`), and the accuracy is chance. With 0.01 the same network learns.
#
# ## Training, logged to TensorBoard
#
# `sn.callbacks.TensorBoard(logdir, update_freq=N)` writes TensorBoard event
# files, `logdir/train` and `logdir/test`, the layout of post 000;
# `tensorboard --logdir` shows them, and `sn.plot.read_scalars` reads them
# back without TensorBoard. The evaluation every 50 steps uses 500 test
# digits; the final one all of them. 250 steps here (the original: 30,000).

# %%
logdir = tempfile.mkdtemp(prefix="lenet-")
board = sn.callbacks.TensorBoard(logdir, update_freq=10, epoch_logs=False)
x_test, y_test = data.test.images, data.test.labels

sn.training.train(
    recipe.model, recipe.batches(), 250, [board],
    validate=lambda: recipe.evaluate(x_test[:500], y_test[:500], callbacks=[board]),
    validate_every=50, batch_logs="last",
)
final = recipe.evaluate(x_test, y_test, callbacks=[board])
board.close()
print(f"test accuracy after {recipe.step} steps (moving-average weights, {recipe.count_test(y_test)}): "
      f"{final['accuracy']:.4f}  (loss {final['loss']:.4f})")
print("test data:", data.source)

# %%
runs = read_scalars(logdir)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
for ax, tag in zip(axes, ("loss", "accuracy")):
    for run, style in (("train", "-"), ("test", "o-")):
        steps, values = zip(*runs[run][tag])
        ax.plot(steps, values, style, label=run, lw=1)
    ax.set(title=tag, xlabel="step")
    ax.grid(alpha=0.3)
    ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# ## What the first layer learned
#
# The 32 filters of `layer1-conv1`, each 5×5 (weights in TensorFlow's HWIO
# layout, `(5, 5, 1, 32)`). After 250 steps with a small learning rate they
# are still close to their random start (a truncated normal of standard
# deviation 0.1); smooth stroke and edge detectors take thousands of steps.

# %%
w = sn.to_numpy(recipe.model.layers[1].kernel.value)
print(recipe.model.layers[1].kernel.name, w.shape)
fig, axes = plt.subplots(2, 16, figsize=(12, 1.8))
for k, ax in enumerate(axes.flat):
    ax.imshow(w[:, :, 0, k], cmap="gray")
    ax.axis("off")
plt.show()

# %% [markdown]
# ## Mistakes
#
# A few test digits the model gets wrong, with its guess:

# %%
predictions = recipe.model.predict(x_test[:1000]).argmax(axis=1)
wrong = np.flatnonzero(predictions != y_test[:1000])[:8]
fig, axes = plt.subplots(1, len(wrong), figsize=(1.4 * len(wrong), 1.8))
for ax, i in zip(np.atleast_1d(axes), wrong):
    ax.imshow(x_test[i].reshape(28, 28), cmap="gray_r")
    ax.set_title(f"{y_test[i]} → {predictions[i]}", fontsize=9)
    ax.axis("off")
plt.show()

# %% [markdown]
# ## Exercises
#
# 1. Write max-pool's backward pass (the {doc}`max-pool exercise <../exercises/max_pool>`) and train
#    this LeNet on it: `with sn.exercises.use("max_pool", backward=max_pool_backward): ...`. The losses
#    are the built-in's to the last digit: why exactly, when a convolution's would differ in the last bits?
# 2. The same for the convolution: the {doc}`conv2d exercise <../exercises/conv2d>`.
# 3. Find the largest learning rate, between 0.01 and 0.8, at which 12 steps still lower the loss.
