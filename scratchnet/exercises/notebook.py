"""Each exercise as a Jupyter notebook to work in: the stub to fill in, the grader, and a model to train with it.

:func:`build` makes the notebook (nbformat 4, no outputs) from the
exercise's stub and forward, so that it always matches the package;
:func:`write` saves it, and ``scratchnet exercises NAME`` calls
:func:`write` in the current folder and opens it. The documentation offers
the same notebooks for download: copies kept in
``scratchnet/exercises/notebooks/`` (``python -m
scratchnet.exercises.notebook`` rewrites them; a test checks they are up to
date).

No notebook holds a solution: its one function to fill in is the stub.
"""
from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path

from . import forward, stubs

#: Where the documentation's download copies live.
FOLDER = Path(__file__).resolve().parent / "notebooks"

# What each notebook says and trains: (title, what you write, the forward's name, the stub's name, training).
_TRAIN_LENET = """\
STEPS = 200  # more steps, higher accuracy: the two runs stay equal
data = sn.zoo.load_data("lenet", download=True, progress=False)
print(data.source)


def train_lenet(steps):
    \"\"\"LeNet from the same seed, trained `steps` steps; its test accuracy.\"\"\"
    sn.random.seed(0)
    recipe = sn.zoo.build("lenet", data=data)
    sn.training.train(recipe.model, recipe.batches(), steps)
    return recipe.evaluate(data.test.images, data.test.labels)["accuracy"]


builtin_accuracy = train_lenet(STEPS)
with sn.exercises.use("{name}", backward={stub}):  # refused unless it passes the grader
    your_accuracy = train_lenet(STEPS)
print(f"LeNet, {{STEPS}} steps: test accuracy {{builtin_accuracy:.4f}} with the built-in {name}, "
      f"{{your_accuracy:.4f}} with yours")
"""

_TRAIN_MLP = """\
STEPS = 200
data = sn.zoo.load_data("mlp", download=True, progress=False)
print(data.source)


def train_mlp(steps):
    \"\"\"The 784-500-10 MLP from the same seed, trained `steps` steps; its test accuracy.\"\"\"
    sn.random.seed(0)
    recipe = sn.zoo.build("mlp", data=data)
    sn.training.train(recipe.model, recipe.batches(), steps)
    return recipe.evaluate(data.test.images, data.test.labels)["accuracy"]


builtin_accuracy = train_mlp(STEPS)
with sn.exercises.use("dense", backward=dense_backward):  # refused unless it passes the grader
    your_accuracy = train_mlp(STEPS)
print(f"MLP, {STEPS} steps: test accuracy {builtin_accuracy:.4f} with the built-in dense, "
      f"{your_accuracy:.4f} with yours")
"""

_TRAIN_LSTM = """\
STEPS = 20  # your step runs in NumPy, 28 times per batch: a few steps take a minute
data = sn.zoo.load_data("lstm", download=True, progress=False)
print(data.source)


def train_lstm(steps):
    \"\"\"The row-by-row LSTM classifier from the same seed, trained `steps` steps; its losses.\"\"\"
    sn.random.seed(0)
    recipe = sn.zoo.build("lstm", data=data)
    batches = recipe.batches()
    losses = []
    for _ in range(steps):
        _, x, y = next(batches)
        losses.append(recipe.train_step(x, y)["loss"])
    return losses


builtin_losses = train_lstm(STEPS)
with sn.exercises.use("lstm_step", backward=lstm_step_backward):  # refused unless it passes the grader
    your_losses = train_lstm(STEPS)
for step in range(0, STEPS, 5):
    print(f"step {step + 1:3d}: loss {builtin_losses[step]:.5f} built-in, {your_losses[step]:.5f} yours")
"""

_TRAIN_GRU = """\
STEPS = 20  # your step runs in NumPy, 28 times per batch
data = sn.zoo.load_data("mlp", download=True, progress=False)
print(data.source)
images = data.train.images.reshape(-1, 28, 28)  # each digit a sequence of 28 rows of 28 pixels


def train_gru(steps):
    \"\"\"A GRU(32) over the rows of each digit, then Dense(10), from the same seed, trained `steps` steps; its losses.\"\"\"
    sn.random.seed(0)
    model = sn.Sequential([sn.layers.GRU(32), sn.layers.Dense(10)])
    model.compile(sn.optimizers.Adam(1e-2), loss=sn.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(steps):
        batch = rng.integers(0, len(images), 64)
        losses.append(model.train_on_batch(images[batch], data.train.labels[batch])["loss"])
    return losses


builtin_losses = train_gru(STEPS)
with sn.exercises.use("gru_step", backward=gru_step_backward):  # refused unless it passes the grader
    your_losses = train_gru(STEPS)
for step in range(0, STEPS, 5):
    print(f"step {step + 1:3d}: loss {builtin_losses[step]:.5f} built-in, {your_losses[step]:.5f} yours")
"""

_TRAIN_ATTENTION = """\
STEPS = 10
data = sn.zoo.load_data("transformer_lm", download=True, progress=False)
print(data.source)


def train_transformer(steps):
    \"\"\"The small causal Transformer character model from the same seed, trained `steps` steps; its losses.\"\"\"
    sn.random.seed(0)
    recipe = sn.zoo.build("transformer_lm", data=data)
    batches = recipe.batches()
    losses = []
    for _ in range(steps):
        _, x, y = next(batches)
        losses.append(recipe.train_step(x, y)["loss"])
    return losses


builtin_losses = train_transformer(STEPS)
with sn.exercises.use("attention", backward=attention_backward):  # refused unless it passes the grader
    your_losses = train_transformer(STEPS)  # every MultiHeadAttention layer runs your backward
for step in range(0, STEPS, 2):
    print(f"step {step + 1:3d}: loss {builtin_losses[step]:.5f} built-in, {your_losses[step]:.5f} yours")
"""

_TRAIN_SMALL = """\
STEPS = 20
data = sn.zoo.load_data("mlp", download=True, progress=False)
print(data.source)
images = data.train.images.reshape({shape})


def train(steps):
    \"\"\"{model_doc}, from the same seed, trained `steps` steps; its losses.\"\"\"
    sn.random.seed(0)
    model = sn.Sequential([{layers}])
    model.compile(sn.optimizers.SGD(0.1), loss=sn.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(steps):
        batch = rng.integers(0, len(images), 64)
        losses.append(model.train_on_batch(images[batch], data.train.labels[batch])["loss"])
    return losses


builtin_losses = train(STEPS)
with sn.exercises.use("{name}", backward={name}_backward):  # refused unless it passes the grader
    your_losses = train(STEPS)
for step in range(0, STEPS, 5):
    print(f"step {{step + 1:3d}}: loss {{builtin_losses[step]:.5f}} built-in, {{your_losses[step]:.5f}} yours")
"""

_TRAIN_LAYER = """\
STEPS = 300
data = sn.zoo.load_data("mlp", download=True, progress=False)
print(data.source)

sn.random.seed(0)
model = sn.Sequential([sn.layers.Dense(128, activation="relu"), RMSNormalization(), sn.layers.Dense(10)])
model.compile(sn.optimizers.SGD(0.1), loss=sn.losses.SparseCategoricalCrossentropy(from_logits=True))
rng = np.random.default_rng(0)
for step in range(STEPS):
    batch = rng.integers(0, len(data.train.images), 100)
    logs = model.train_on_batch(data.train.images[batch], data.train.labels[batch])
predictions = model.predict(data.test.images).argmax(axis=1)
print(f"after {STEPS} steps: loss {logs['loss']:.4f}, test accuracy {(predictions == data.test.labels).mean():.4f}")
"""

_DEEP_STACK = """\
DEPTH = 30
rng = np.random.default_rng(0)
x0 = rng.normal(size=(16, 8))
blocks = [(rng.normal(size=(8, 8)) / np.sqrt(8), np.zeros(8), rng.normal(size=(8, 8)) / np.sqrt(8), np.zeros(8))
          for _ in range(DEPTH)]


def plain_block(x, w1, b1, w2, b2):
    \"\"\"The same block without its skip, y = relu(h @ w2 + b2), through sn.ops: its output, and dy -> dx.\"\"\"
    h, inner_backprop = sn.ops.dense(x, w1, b1, activation="relu")
    y, outer_backprop = sn.ops.dense(h, w2, b2, activation="relu")
    return y, lambda dy: inner_backprop(outer_backprop(dy)[0])[0]


def input_gradient_norms(with_skip):
    \"\"\"Forward through the stack of blocks, backward from dy = 1 at its top: the norm of dx at each block's input.\"\"\"
    x, backprops = x0, []
    for w1, b1, w2, b2 in blocks:
        if with_skip:
            x, cache = residual_forward(x, w1, b1, w2, b2)
            backprops.append(lambda dy, cache=cache: residual_backward(dy, cache)[0])  # your backward
        else:
            x, backprop = plain_block(x, w1, b1, w2, b2)
            backprops.append(backprop)
    dx, norms = np.ones_like(x), []
    for backprop in reversed(backprops):
        dx = backprop(dx)
        norms.append(float(np.linalg.norm(dx)))
    return norms[::-1]


with_skip, without = input_gradient_norms(True), input_gradient_norms(False)
for depth in (DEPTH - 1, 20, 10, 0):
    print(f"block {depth:2d} of {DEPTH}: |dx| {with_skip[depth]:10.4g} with the skip, {without[depth]:10.4g} without")
"""

# A first look at each forward, on an input small enough to read.
_TRY = {
    "dense": "y, cache = dense_forward(np.arange(6.0).reshape(2, 3), np.ones((3, 4)), np.zeros(4))\nprint(y)",
    "conv2d": "y, cache = conv2d_forward(np.ones((1, 5, 5, 1)), np.ones((3, 3, 1, 1)), np.zeros(1), 1, \"SAME\")\n"
              "print(y[0, :, :, 0])  # 9 inside, fewer at the padded border",
    "max_pool": "x = np.arange(16.0).reshape(1, 4, 4, 1)\ny, cache = max_pool_forward(x, 2, 2)\n"
                "print(x[0, :, :, 0], y[0, :, :, 0], sep=\"\\n\\n\")",
    "avg_pool": "x = np.arange(25.0).reshape(1, 5, 5, 1)\ny, cache = avg_pool_forward(x, 2, 2, \"SAME\")\n"
                "print(x[0, :, :, 0], y[0, :, :, 0], sep=\"\\n\\n\")  # the last row and column: means of 2 cells, and of 1",
    "batch_norm": "x = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 60.0]])  # N=3 examples, C=2 channels\n"
                  "y, cache = batch_norm_forward(x, np.ones(2), np.zeros(2))\nx, xhat, s, gamma = cache\n"
                  "print(y.round(3), s, sep=\"\\n\")  # each column: mean 0, variance 1 (nearly: epsilon)",
    "residual": "x = np.array([[1.0, -2.0], [-1.0, 0.5]])  # N=2 examples, C=2\n"
                "y, cache = residual_forward(x, np.eye(2), np.zeros(2), -np.eye(2), np.full(2, 0.5))\n"
                "x, w1, w2, a, h, s = cache\n"
                "print(a, h, s, y, sep=\"\\n\\n\")  # s = x + z: the skip adds x back before the block's ReLU",
    "lstm_step": "(h, c), cache = lstm_step_forward(np.ones((2, 3)), np.zeros((2, 4)), np.zeros((2, 4)),\n"
                 "                                  np.full((3, 16), 0.1), np.zeros((4, 16)), np.zeros(16))\n"
                 "print(h.shape, c.shape, len(cache))",
    "gru_step": "h, cache = gru_step_forward(np.ones((2, 3)), np.zeros((2, 4)), np.full((3, 12), 0.1),\n"
                "                            np.zeros((4, 12)), np.zeros((2, 12)))\n"
                "x, h_prev, kernel, recurrent_kernel, z, r, g, u_h = cache\n"
                "print(h[0], z[0], g[0], sep=\"\\n\")  # h = z * h_prev + (1 - z) * g, with h_prev = 0 here",
    "attention": "q = np.array([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])  # 3 queries of depth 2\n"
                 "y, cache = attention_forward(q, q, np.eye(3)[None], mask=np.tril(np.ones((3, 3), dtype=bool)))\n"
                 "q, k, v, mask, p = cache\n"
                 "print(p[0].round(3))  # each row sums to 1; 0 above the diagonal (masked: query i sees keys 0..i)",
}

NOTEBOOKS = {
    "dense": ("Dense layer", "dense_backward(dy, cache) -> (dx, dw, db)", "dense_forward", _TRAIN_MLP),
    "conv2d": ("2-D convolution", "conv2d_backward(dy, cache) -> (dx, dw, db)", "conv2d_forward",
               _TRAIN_LENET.format(name="conv2d", stub="conv2d_backward")),
    "max_pool": ("Max-pool", "max_pool_backward(dy, cache) -> dx", "max_pool_forward",
                 _TRAIN_LENET.format(name="max_pool", stub="max_pool_backward")),
    "avg_pool": ("Average pool", "avg_pool_backward(dy, cache) -> dx", "avg_pool_forward",
                 _TRAIN_SMALL.format(name="avg_pool", shape="-1, 28, 28, 1", model_doc="A small CNN with average pooling",
                                     layers="sn.layers.Conv2D(8, 3, activation=\"relu\"), sn.layers.AveragePooling2D(2), "
                                            "sn.layers.Flatten(), sn.layers.Dense(10)")),
    "batch_norm": ("Batch normalization", "batch_norm_backward(dy, cache) -> (dx, dgamma, dbeta)",
                   "batch_norm_forward",
                   _TRAIN_SMALL.format(name="batch_norm", shape="-1, 784", model_doc="An MLP with batch normalization",
                                       layers="sn.layers.Dense(128), sn.layers.BatchNormalization(), "
                                              "sn.layers.Activation(\"relu\"), sn.layers.Dense(10)")),
    "residual": ("A residual block", "residual_backward(dy, cache) -> (dx, dw1, db1, dw2, db2)", "residual_forward",
                 _DEEP_STACK),
    "lstm_step": ("One LSTM step", "lstm_step_backward(dh, dc, cache) -> (dx, dh_prev, dc_prev, dkernel, "
                  "drecurrent_kernel, dbias)", "lstm_step_forward", _TRAIN_LSTM),
    "gru_step": ("One GRU step", "gru_step_backward(dh, cache) -> (dx, dh_prev, dkernel, drecurrent_kernel, dbias)",
                 "gru_step_forward", _TRAIN_GRU),
    "attention": ("Scaled dot-product attention", "attention_backward(dy, cache) -> (dq, dk, dv)",
                  "attention_forward", _TRAIN_ATTENTION),
    "rms_norm": ("Write a layer: RMSNormalization", "class RMSNormalization(sn.Layer), its build and call",
                 None, _TRAIN_LAYER),
}
NAMES = tuple(NOTEBOOKS)


def _markdown(text):
    return {"cell_type": "markdown", "metadata": {}, "source": text.strip("\n").splitlines(keepends=True)}


def _code(text):
    return {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
            "source": text.strip("\n").splitlines(keepends=True)}


def _stub_source(name):
    obj = stubs.RMSNormalization if name == "rms_norm" else getattr(stubs, f"{name}_backward")
    return inspect.getsource(obj)


def build(name):
    """The notebook of exercise ``name``, as an nbformat-4 dict (no outputs)."""
    if name not in NOTEBOOKS:
        raise ValueError(f"exercises: unknown exercise {name!r}; choose one of {', '.join(NOTEBOOKS)}")
    title, you_write, forward_name, train = NOTEBOOKS[name]
    stub = "RMSNormalization" if name == "rms_norm" else f"{name}_backward"
    if name == "residual":  # no op to swap in: the last cell runs your backward down a deep stack instead
        read = "Read the given forward pass, then fill in the function below: replace the `raise NotImplementedError` line."
        trains = "sends a gradient down a stack of 30 blocks with your backward, and without the skip"
        train_text = ("Once your code passes, see what the skip connection is for: a gradient sent down a stack of "
                      "30 blocks through your backward reaches the bottom, while through the same blocks without "
                      "their skip it fades away.")
    elif forward_name:
        read = "Read the given forward pass, then fill in the function below: replace the `raise NotImplementedError` line."
        trains = "trains a model with your code in place of scratchnet's"
        train_text = "Once your code passes, a model trains on it; the built-in op gives the same curve."
    else:  # the layer exercise
        read = ("Read how a layer is written, then fill in the class below: replace its two "
                "`raise NotImplementedError` lines.")
        trains = "trains a small MNIST classifier with your layer in it"
        train_text = (f"Once your layer passes, a small MNIST classifier trains with it: a `Dense(128)` layer, "
                      f"your `{stub}`, a `Dense(10)` layer.")
    cells = [_markdown(f"""
# Exercise: {title}

You write `{you_write}`. The exercise's page in the documentation (Exercises, {title}) explains it
and shows what the grader says about wrong answers.

1. {read}
2. Run the grading cell. It says which gradient is wrong, where, and by how much; run it again after each fix.
   Stuck? `hint=1` gives more help, `hint=2` the formula.
3. When it passes, the last cell {trains}.
""")]
    imports = "import numpy as np\n\nimport scratchnet as sn"
    if forward_name:
        imports += f"\nfrom scratchnet.exercises.forward import {forward_name}  # the forward pass, given"
        if name == "conv2d":
            imports += "\nfrom scratchnet.exercises.forward import col2im, im2col  # noqa: F401 (helpers you may use)"
        cells += [_code(imports), _markdown(f"""
## The forward pass (given)

```python
{inspect.getsource(getattr(forward, forward_name)).rstrip()}
```

Try it on a small input, and look at what it keeps in `cache`:
"""), _code(_TRY[name])]
    else:
        imports += "\nfrom scratchnet import Layer"
        cells += [_code(imports), _markdown("""
## How a layer is written

A layer creates its weights in `build` with `self.add_weight(name, shape, initializer)`, and its
`call(x, training)` returns `(y, backprop)`: `backprop(dy)` ADDS each weight's gradient to it
(`self.gamma.accumulate(g)`) and returns `dx`. `help(sn.Layer)` shows a whole small layer.
""")]
    cells += [_markdown("## Your code\n\nFill it in, then run the cell."), _code(_stub_source(name)),
              _markdown("## Grade it"),
              _code(f'report = sn.exercises.grade("{name}", {stub})  # hint=1 for more help, hint=2 for the formula\n'
                    f"print(report)"),
              _markdown(f"## {'Down a deep stack' if name == 'residual' else 'Train with it'}\n\n{train_text}"),
              _code(train)]
    return {"cells": cells, "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                                        "name": "python3"},
                                         "language_info": {"name": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


def dumps(notebook):
    """The notebook's JSON text, as Jupyter writes it (one space indent, a final newline)."""
    for k, cell in enumerate(notebook["cells"]):
        cell.setdefault("id", f"cell-{k}")
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"


def write(name, folder=".", overwrite=False):
    """Save the notebook of exercise ``name`` as ``folder/<name>.ipynb``; never over an existing file.

    Returns
    -------
    (Path, bool)
        The file, and whether it was written now (False: it was there already,
        kept as it was, your work in it).
    """
    path = Path(folder) / f"{name}.ipynb"
    text = dumps(build(name))
    if path.exists() and not overwrite:
        return path, False
    path.write_text(text, encoding="utf-8")
    return path, True


def code_cells(notebook):
    """The source of each code cell, in order."""
    return ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"]


if __name__ == "__main__":  # python -m scratchnet.exercises.notebook: rewrite the documentation's copies
    FOLDER.mkdir(exist_ok=True)
    for exercise in NAMES:
        print(write(exercise, FOLDER, overwrite=True)[0], file=sys.stderr)
