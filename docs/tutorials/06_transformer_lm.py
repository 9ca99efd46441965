# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 6. A causal Transformer beside the LSTM: the same text, the same budget
#
# {download}`Download this notebook (.ipynb) </_build/notebooks/06_transformer_lm.ipynb>` ·
# {download}`the jupytext script (.py) <06_transformer_lm.py>`
#
# Lesson 4 trained an LSTM to predict the next character. Since 2017 the
# Transformer has replaced the LSTM for this: instead of carrying a state
# from one character to the next, every position looks at all the positions
# before it at once, through **causal self-attention** (derived on the
# {doc}`attention page <../derivations/attention>`), and the network is a
# stack of identical blocks with residual connections and layer normalization
# ({doc}`../derivations/normalization`).
#
# This page trains both on the same text, with the same batches of 100 rows
# of 50 characters, the same optimizer (Adam, gradients clipped to a global
# norm of 4.5, the learning rate of lesson 4's page, 5e-3) and the same number of
# steps, and compares what they learn, how fast, and what they write.
# The zoo names them `charlm` (lesson 4's) and `transformer_lm`; both train
# from the command line too (`scratchnet train transformer_lm`) and
# `scratchnet sample` samples from either.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np

import scratchnet as sn

sn.random.seed(0)
print("backend:", sn.get_backend().name)
data = sn.zoo.load_data("transformer_lm")
print("data:", data.source)

recipes = {name: sn.zoo.build(name, data=data, learning_rate=5e-3) for name in ("charlm", "transformer_lm")}
for name, recipe in recipes.items():
    print(f"{name}: {recipe.model.count_params():,} parameters")
recipes["transformer_lm"].model.summary()

# %% [markdown]
# ## The Transformer, block by block
#
# `transformer_lm` is a `Sequential`:
#
# 1. `TokenAndPositionEmbedding`: each character's learned vector plus a
#    learned vector for its position 0..49 (attention itself does not know
#    the order of its inputs; the position embedding tells it);
# 2. two `TransformerBlock`s, each `h = x + Attention(LayerNorm(x))`, then
#    `y = h + FFN(LayerNorm(h))` (pre-norm, as GPT-2): four heads of depth 16
#    over the 64 channels, a causal mask so that position $t$ sees positions
#    $0..t$ only, and a 256-wide feed-forward network;
# 3. a final `LayerNormalization` and a `Dense` to the vocabulary.
#
# The causal mask is what makes it a language model: the prediction at
# position $t$ (the character $t+1$) may not see that character. Changing
# the last input changes no earlier output:

# %%
model = recipes["transformer_lm"].model
_, x0, _ = next(recipes["transformer_lm"].batches())
probe = x0[:1].copy()
before = sn.to_numpy(model(probe))
probe[0, -1] = (probe[0, -1] + 1) % data.vocab_size
after = sn.to_numpy(model(probe))
print("outputs changed at positions:", np.flatnonzero(np.abs(after - before).max(axis=-1)))

# %% [markdown]
# ## Training both, side by side
#
# Each model takes the same batches in the same order. The LSTM carries its
# state from one batch to the next (its `CarryState` callback); the
# Transformer starts every row afresh and sees at most 49 characters back.

# %%
class LossCurve(sn.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.steps, self.loss = [], []

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append(self.model.step)
        self.loss.append(logs["loss"])


STEPS = 250
curves, seconds = {}, {}
for name, recipe in recipes.items():
    curves[name] = LossCurve()
    start = time.perf_counter()
    sn.training.train(recipe.model, recipe.batches(), STEPS, [curves[name], *recipe.callbacks()], batch_logs="last")
    seconds[name] = time.perf_counter() - start

fig, ax = plt.subplots(figsize=(7, 3.4))
for name, curve in curves.items():
    ax.plot(curve.steps, curve.loss, lw=0.8, label=name)
ax.axhline(np.log(data.vocab_size), color="gray", ls="--", label=f"log V = {np.log(data.vocab_size):.2f} (uniform guess)")
ax.set(title="training loss (mean cross-entropy per character, nats)", xlabel="step")
ax.grid(alpha=0.3)
ax.legend()
plt.show()

# %% [markdown]
# ## Held-out text: accuracy, perplexity, speed
#
# The last 10% of the text, in rows of 50. The LSTM starts each test row
# from a zero state, as the Transformer does, so both predict from at most
# the row's own past.

# %%
print(f"{'model':16s} {'parameters':>10s} {'accuracy':>9s} {'loss':>6s} {'perplexity':>10s} {'steps/s':>8s}")
for name, recipe in recipes.items():
    test = recipe.evaluate(data.test.images, data.test.labels)
    print(f"{name:16s} {recipe.model.count_params():10,d} {test['accuracy']:9.4f} {test['loss']:6.3f} "
          f"{np.exp(test['loss']):10.1f} {STEPS / seconds[name]:8.1f}")

# %% [markdown]
# ## Samples
#
# The same prime, temperature and seed for both. The Transformer's context is
# its last 50 characters: `generate` feeds it the last 50 each time and reads
# the logits at the last position.

# %%
for name, recipe in recipes.items():
    corpus = data.corpus
    text = recipe.generate(corpus, "The ", 200, temperature=0.8, seed=1)
    print(f"--- {name}, temperature 0.8:\n{text}\n")

# %% [markdown]
# ## What the comparison says, and what it does not
#
# The two models have about the same number of weights and see the same
# characters in the same order. What the table above measures is one short
# budget (250 steps, a few passes over a small text) on a CPU: it says which
# model learns faster *here*, not which is better. A Transformer pays for
# every position attending to every earlier one ($T^2$ attention weights per
# head, kept for the backward) and wins when the text is long, the model
# deep and the hardware parallel; the LSTM's cost grows only linearly with
# the length, but its steps run one after the other. The Transformer also
# cannot see past its 50-character window, where the LSTM's carried state
# reaches back across batches.

# %% [markdown]
# ## Exercises
#
# 1. Train `transformer_lm` with `normalize_first=False` in its blocks (the original Transformer's post-norm;
#    build the `Sequential` yourself from `sn.layers.TransformerBlock`): at this learning rate, does it still train?
# 2. Remove the position embedding's effect by training with `seq_len` rows whose characters you shuffle:
#    how much does the test loss rise, and why does the LSTM not need a position embedding at all?
# 3. Check `sn.ops.attention`'s gradients with `sn.gradcheck.check_op` with a causal mask, then plant the
#    mistake of applying the mask *after* the softmax: which check fails, and why?
