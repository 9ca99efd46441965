# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 1. An MLP with a decaying learning rate, L2 and a moving average
#
# {download}`Download this notebook (.ipynb) </_build/notebooks/01_mlp.ipynb>` ·
# {download}`the jupytext script (.py) <01_mlp.py>`
#
# The TensorFlow original of this lesson, post 002 (a TensorFlow 1 chapter on MNIST), trains a 784-500-10
# network with three refinements, each of which slows the parameters down in
# its own way:
#
# - an **exponentially decaying learning rate**,
#   `tf.train.exponential_decay(0.8, global_step, num_examples / BATCH_SIZE, 0.99)`:
#   the rate is multiplied by 0.99 once per epoch, smoothly;
# - **L2 regularization** of both weight matrices,
#   `tf.contrib.layers.l2_regularizer(1e-4)`, added to the cross-entropy;
# - a **moving average** of every weight,
#   `tf.train.ExponentialMovingAverage(0.99, global_step)`, which the
#   evaluation uses instead of the weights themselves.
#
# scratchnet's zoo model `mlp` is that recipe. This page trains it for a
# small budget (the original trains 30,000 steps; here 1,500) and looks at each
# refinement.

# %%
import os

import matplotlib.pyplot as plt
import numpy as np

import scratchnet as sn

sn.random.seed(0)
print("backend:", sn.get_backend().name)

# The real 10,000-digit MNIST test set, when the docs build found one (MNIST_TEST);
# download=False: the build never reaches for the network.
data = sn.zoo.load_data("mlp", test_data=os.environ.get("MNIST_TEST"), download=False, progress=False)
print("data:", data.source)

# %% [markdown]
# ## The model and the original's hyperparameters
#
# `sn.zoo.build(name, data=..., **overrides)` returns a *recipe*: the model,
# its loss, optimizer, schedule and moving average, and its batches.

# %%
print(sn.zoo.HPARAMS["mlp"])
recipe = sn.zoo.build("mlp", data=data)
recipe.model.summary()
print(recipe.optimizer.learning_rate, "| steps per epoch:", recipe.steps_per_epoch)

# %% [markdown]
# ## The three refinements, in formulas
#
# **Learning rate.** With $E$ the steps per epoch (training examples / batch size),
#
# $$\eta(t) = 0.8 \cdot 0.99^{\,t / E}.$$
#
# **L2.** The original's `l2_regularizer(λ)` adds $\lambda \sum w^2 / 2$ for each
# weight matrix (TensorFlow's `tf.nn.l2_loss` halves), whose gradient is
# $\lambda w$; scratchnet writes it as Keras's `l2(λ / 2)`. The model adds the
# penalty's gradient to each `p.grad` after the backward pass
# (`model.regularization_backward()`).
#
# **Moving average.** After each update every weight $w$ has a shadow $s$,
#
# $$s \leftarrow d\, s + (1 - d)\, w, \qquad d = \min\Bigl(0.99,\ \frac{1 + t}{10 + t}\Bigr),$$
#
# where the `num_updates` term makes the average fast at the start, when the
# weights move a lot, and settles at 0.99.
#
# ## Training, with a callback that watches
#
# `sn.training.train(model, batches, steps, callbacks)` is the one training
# loop (the one `fit` and `scratchnet train` use). It calls Keras's callback
# hooks; this one records the loss and the learning rate at every step, and
# every 150 steps the test accuracy of the raw weights and of their moving
# averages (on 2,000 test digits, to keep the page fast).

# %%
class Watch(sn.callbacks.Callback):
    def __init__(self, recipe, x, y, every=150):
        super().__init__()
        self.recipe, self.x, self.y, self.every = recipe, x, y, every
        self.steps, self.loss, self.lr, self.evals = [], [], [], []

    def on_train_batch_end(self, batch, logs=None):
        step = self.model.step
        self.steps.append(step)
        self.loss.append(logs["loss"])
        self.lr.append(self.model.optimizer.learning_rate_now)
        if step % self.every == 0:
            raw = self.recipe.evaluate(self.x, self.y, averaged=False)["accuracy"]
            avg = self.recipe.evaluate(self.x, self.y)["accuracy"]
            self.evals.append((step, raw, avg))
            print(f"After {step} training steps: accuracy {raw:.4f} (weights), {avg:.4f} (moving average)")


STEPS = 1500
watch = Watch(recipe, data.test.images[:2000], data.test.labels[:2000])
history = sn.training.train(recipe.model, recipe.batches(), STEPS, [watch], batch_logs="last")

# %% [markdown]
# ## The curves

# %%
steps, raw, avg = zip(*watch.evals)
fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
axes[0].plot(watch.steps, watch.loss, lw=0.7)
axes[0].set(title="training loss (cross-entropy + L2)", xlabel="step", yscale="log")
axes[1].plot(watch.steps, watch.lr)
axes[1].set(title="learning rate: 0.8 * 0.99^(step / epoch)", xlabel="step")
axes[2].plot(steps, raw, "o-", label="weights")
axes[2].plot(steps, avg, "s-", label="moving average")
axes[2].set(title="test accuracy (2,000 digits)", xlabel="step", ylim=(0.85, 1.0))
axes[2].legend()
for ax in axes:
    ax.grid(alpha=0.3)
fig.tight_layout()
plt.show()

# %% [markdown]
# Early on the averaged weights lag behind (they remember the random start);
# once the weights settle, the average is as good or better, and smoother
# from one evaluation to the next. On full MNIST and 30,000 steps, the original
# reports 98.4%.
#
# ## The test accuracy
#
# `recipe.evaluate` evaluates on the moving averages when the recipe keeps
# them (as the original's `average_y` does); `averaged=False` uses the weights.

# %%
x_test, y_test = data.test.images, data.test.labels
final = recipe.evaluate(x_test, y_test)
plain = recipe.evaluate(x_test, y_test, averaged=False)
print(f"test accuracy after {recipe.step} steps ({recipe.count_test(y_test)}): "
      f"{final['accuracy']:.4f} with the moving averages, {plain['accuracy']:.4f} with the weights")
print("test data:", data.source)

# %% [markdown]
# ## What the L2 term does to the weights
#
# The penalty pulls every weight towards zero by $\eta\lambda w$ per step. A
# second run without it (the same seed, the same batches) shows the effect on
# the size of the first layer's weights after the same 1,500 steps.

# %%
sn.random.seed(0)
no_l2 = sn.zoo.build("mlp", data=data, l2=0.0)
sn.training.train(no_l2.model, no_l2.batches(), STEPS)
for name, r in (("with L2", recipe), ("without L2", no_l2)):
    w = sn.to_numpy(r.model.layers[0].kernel.value)
    acc = r.evaluate(x_test, y_test)["accuracy"]
    print(f"{name:11s} |w1| rms {np.sqrt((w ** 2).mean()):.4f}   test accuracy {acc:.4f}")

# %% [markdown]
# ## Exercises
#
# 1. Evaluate the MLP on its raw weights as well as on its moving averages
#    (`recipe.evaluate(x_test, y_test, averaged=False)`): how far apart are
#    the two test accuracies after the same steps, and why does the averaged model start lower?
# 2. Write the dense layer's backward pass yourself: the {doc}`dense exercise <../exercises/dense>`.
#    When it passes, train this MLP on it with `sn.exercises.use("dense", backward=dense_backward)`:
#    the curve is the built-in's.
# 3. Double the learning rate, then halve it. Which of the two curves above changes first, the loss
#    or the test accuracy?
