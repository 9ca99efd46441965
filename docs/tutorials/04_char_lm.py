# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 4. A character-level LSTM language model, and sampling from it
#
# {download}`Download this notebook (.ipynb) </_build/notebooks/04_char_lm.ipynb>` ·
# {download}`the jupytext script (.py) <04_char_lm.py>`
#
# The TensorFlow original of this lesson, post 004, reads section 9.3 of a TensorFlow cookbook: a language model
# that predicts the next character of a text. Its `LSTM_Model` class is built
# twice: once for training (batches of sequences, `training_seq_len` steps),
# and once, with `infer_sample=True`, for generating text one character at a
# time (batch 1, one step), inside `tf.variable_scope(..., reuse=True)` so
# that it uses the trained weights. The model: an embedding of each character,
# one LSTM of 128 units, a dense layer to the vocabulary, the sequence loss
# (cross-entropy at every position), Adam with gradients clipped to a global
# norm of 4.5.
#
# scratchnet's zoo model `charlm` is that model, trained here for 250 steps
# (the original: 10 epochs) on Python's own help text, which ships with Python.
# **For the budget of this page the learning rate is 5e-3, five times the
# original's 1e-3**, so that the model gets further in those few steps
# (`sn.zoo.build("charlm", data=data)` keeps the original's).

# %%
import matplotlib.pyplot as plt
import numpy as np

import scratchnet as sn

sn.random.seed(0)
print("backend:", sn.get_backend().name)
data = sn.zoo.load_data("charlm")
print("data:", data.source)
print("vocabulary:", repr("".join(data.corpus.vocab[:60])), "...")

recipe = sn.zoo.build("charlm", data=data, learning_rate=5e-3)
recipe.model.summary()
print(f"{recipe.model.count_params():,} parameters; {recipe.optimizer.__class__.__name__}, clipnorm {recipe.hparams['clipnorm']}")

# %% [markdown]
# ## Batches that continue each other
#
# Each training batch is 100 rows of 50 characters; the target is the input
# shifted by one. Row $i$ of batch $k+1$ continues row $i$ of batch $k$, so
# the LSTM's state is carried from one batch to the next within an epoch
# (and reset at each epoch, by the recipe's `CarryState` callback). For that
# reason the batches are not shuffled, a fix over the original, which shuffles
# them and carries the state anyway.

# %%
batches = recipe.batches()
_, x0, y0 = next(batches)
_, x1, _ = next(batches)
decode = data.corpus.decode
print("batch 0, row 3, input :", repr(decode(x0[3])))
print("batch 0, row 3, target:", repr(decode(y0[3])))
print("batch 1, row 3, input :", repr(decode(x1[3])))

# %% [markdown]
# ## Before training
#
# `sn.zoo.sample(model, corpus, prime, length, temperature=None, seed=None)`
# feeds the prime one character at a time, then picks each next character:
# the most likely (`temperature=None`) or a draw from
# $\operatorname{softmax}(\text{logits} / T)$.

# %%
print(sn.zoo.sample(recipe.model, data.corpus, "The ", 120, temperature=1.0, seed=0))

# %% [markdown]
# ## Training

# %%
class LossCurve(sn.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.steps, self.loss = [], []

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append(self.model.step)
        self.loss.append(logs["loss"])


STEPS = 250
curve = LossCurve()
sn.training.train(recipe.model, recipe.batches(), STEPS, [curve, *recipe.callbacks()], batch_logs="last")

fig, ax = plt.subplots(figsize=(7, 3.4))
ax.plot(curve.steps, curve.loss, lw=0.8)
ax.axhline(np.log(data.vocab_size), color="gray", ls="--", label=f"log V = {np.log(data.vocab_size):.2f} (uniform guess)")
ax.set(title="training loss (mean cross-entropy per character, nats)", xlabel="step")
ax.grid(alpha=0.3)
ax.legend()
plt.show()

# %% [markdown]
# ## Test: held-out text
#
# The last 10% of the text is held out. The accuracy is that of the next
# character, the perplexity $e^{\text{loss}}$ the number of equally likely
# characters the model is, on average, choosing between.

# %%
test = recipe.evaluate(data.test.images, data.test.labels)
print(f"test after {recipe.step} steps ({recipe.count_test(data.test.labels)}): next-character accuracy "
      f"{test['accuracy']:.4f}, loss {test['loss']:.3f} nats, perplexity {np.exp(test['loss']):.1f} "
      f"(vocabulary {data.vocab_size})")

# %% [markdown]
# ## Sampling with shared weights
#
# `sn.zoo.sampling_model(model)` is the original's `infer_sample=True` model: a
# batch-1, one-step network built in the training model's parameter store with
# `reuse=True`. It holds the same `Parameter` objects (training moves both)
# but its own LSTM state, so sampling never disturbs the training state.

# %%
sampler = sn.zoo.sampling_model(recipe.model)
print("same weights:", all(a is b for a, b in zip(recipe.model.parameters(), sampler.parameters())))
print([p.name for p in sampler.parameters()])

# %%
greedy = sn.zoo.sample(recipe.model, data.corpus, "The ", 60)
print(f"--- temperature None (the most likely character each time):\n{greedy!r}\n")
for temperature in (0.5, 0.8, 1.0):
    text = sn.zoo.sample(recipe.model, data.corpus, "The ", 160, temperature=temperature, seed=1)
    print(f"--- temperature {temperature}:\n{text}\n")

# %% [markdown]
# After 250 steps (three passes over the text) the model has learned which
# characters are frequent, that words are separated by spaces, a few short
# words and the look of the help text's quoted names and long runs of
# indentation, but little else; the original's ten epochs get further. Greedy
# decoding falls into a loop at once (here, of spaces: the text's most common
# character after a word); a low temperature keeps to the likeliest
# characters, a high one invents more.

# %% [markdown]
# ## Exercises
#
# 1. Sample at temperatures 0.2, 0.8 and 1.5 from the same model and prime: which one repeats itself,
#    and which one invents words?
# 2. Train without gradient clipping (`clipnorm=None` in `sn.zoo.build`): does the loss curve change
#    in the first few hundred steps?
# 3. The LSTM here is fused with its embedding (`sn.ops.embedding_lstm`). Check its gradients with
#    `sn.gradcheck.check_op` on a tiny vocabulary, as the {doc}`gradient checks <../api/gradcheck>` do.
